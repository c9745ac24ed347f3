"""The label history's quota: one user's history of one slide keeps at least its newest
``N + HISTORY_SLACK`` events (``N``: the slide's superpixels), and is trimmed back to that when it
passes ``TRIM_FACTOR`` times as many. Honest labelling, a few passes over a slide, never reaches
it; a script flipping labels (about 22 GB of history an hour before, the sixth attack of issue 13)
then keeps only its own newest changes, and nobody else's history is touched.

The count lives in :class:`LabelHistorySize`, updated with each stroke (the slide's row is locked
for the stroke's transaction, so strokes on a slide count one after another); a trim deletes about
as many events as were added since the last, so its cost spreads over them.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from slidelabel.store.models import LabelEvent, LabelHistorySize, Slide

__all__ = ["HISTORY_SLACK", "TRIM_FACTOR", "count_events", "history_kept"]

#: Events of one user's history of a slide kept beyond one per superpixel.
HISTORY_SLACK = 10_000
#: A history is trimmed once it holds this many times :func:`history_kept`.
TRIM_FACTOR = 2


def history_kept(superpixels: int) -> int:
    """Events one user's history of a slide of ``superpixels`` superpixels keeps after a trim."""
    return superpixels + HISTORY_SLACK


def count_events(session: Session, slide: Slide, user_id: int, added: int) -> int:
    """Counts ``added`` new events of ``user_id`` on ``slide`` (locked by the caller for the
    transaction) and trims that history when it passes its quota; returns the events deleted."""
    if added <= 0:
        return 0
    size = session.get(LabelHistorySize, (slide.id, user_id))
    if size is None:
        size = LabelHistorySize(slide_id=slide.id, user_id=user_id, events=0)
        session.add(size)
    size.events += added
    keep = history_kept(slide.superpixels or 0)
    if size.events <= TRIM_FACTOR * keep:
        return 0
    owned = (LabelEvent.slide_id == slide.id, LabelEvent.user_id == user_id)
    oldest_kept = session.scalar(select(LabelEvent.id).where(*owned).order_by(LabelEvent.id.desc())
                                 .limit(1).offset(keep - 1))
    if oldest_kept is None:  # fewer events than counted (an older server's, or deleted with a user): recount
        size.events = session.scalar(select(func.count()).select_from(LabelEvent).where(*owned))
        return 0
    deleted = session.execute(delete(LabelEvent).where(*owned, LabelEvent.id < oldest_kept)
                              .execution_options(synchronize_session=False)).rowcount
    size.events -= deleted
    return deleted
