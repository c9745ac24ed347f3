"""Labels: what each user says each superpixel of a slide is, changed a brush stroke at a time.

A stroke (thousands of superpixels) costs three statements whatever its size: its superpixel ids
travel as one bound parameter (:class:`SuperpixelBatch`); one ``INSERT ... SELECT`` writes a
:class:`LabelEvent` for each superpixel whose label changes, with the value it replaced; one
upsert (or delete) changes the labels (and two small statements count the history against its
quota, :mod:`~slidelabel.services.label_history`). Unchanged superpixels write nothing. The slide's row is
locked for the transaction (SQLite: the write transaction's database lock; PostgreSQL:
``SELECT ... FOR NO KEY UPDATE``), so concurrent strokes on a slide apply one after another and
every event's previous value is the one it replaced.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Integer,
    Select,
    Subquery,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, ParameterError
from slidelabel.services import label_history
from slidelabel.services.slides import get_slide
from slidelabel.store.models import Category, Label, LabelEvent, Review, Slide, User, utcnow

#: The viewer's binary arrays (``labels.bin``, ``predictions.bin``, the gallery's ``overlay.bin``)
#: hold category ids as little-endian uint32: ids are global and never reused, so a long-lived
#: server passes uint16's 65,535 (and then every new category of every project failed to show).
BINARY_ID_DTYPE = np.dtype("<u4")
MAX_BINARY_ID = int(np.iinfo(BINARY_ID_DTYPE).max)
#: ``key = slide_id << SLIDE_SHIFT | superpixel``: one int64 per superpixel of a project.
SLIDE_SHIFT = 32


@dataclass(frozen=True)
class BatchResult:
    """What a batch of labels or reviews did: superpixels whose value changed, and the rest."""

    changed: int
    unchanged: int


def superpixel_keys(slide_ids_M: np.ndarray, superpixels_M: np.ndarray) -> np.ndarray:
    """One int64 key ``(M,)`` per superpixel of a project, sorting by slide then superpixel."""
    return (np.asarray(slide_ids_M, np.int64) << SLIDE_SHIFT) | np.asarray(superpixels_M, np.int64)


def split_keys(keys_M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(slide_ids_M, superpixels_M)`` of :func:`superpixel_keys`."""
    return keys_M >> SLIDE_SHIFT, keys_M & ((1 << SLIDE_SHIFT) - 1)


def integer_rows(session: Session, query: Select) -> np.ndarray:
    """The rows of a query of integer columns as an int64 ``(R, columns)`` array.

    Read value by value: ``np.asarray`` of the rows themselves probes each row object for array
    interfaces first, six failed attribute look-ups a row (134,091 labels: 2.9 s instead of 0.36 s).
    """
    flat = np.fromiter(itertools.chain.from_iterable(session.execute(query)), np.int64)
    return flat.reshape(-1, len(query.selected_columns))


def locked_slide(session: Session, project_id: int, slide_id: int) -> Slide:
    """The project's slide (else :class:`NotFoundError`) with its row locked until the
    transaction ends, so that label and review writes of one slide queue behind each other."""
    slide = get_slide(session, project_id, slide_id)
    session.refresh(slide, with_for_update={"key_share": True})
    return slide


def superpixel_count(slide: Slide) -> int:
    """The slide's number of superpixels; :class:`ConflictError` when they are not computed yet."""
    if not slide.superpixels:
        raise ConflictError(f"slide {slide.name!r} has no superpixels yet: compute them before labelling it")
    return slide.superpixels


def check_superpixels(slide: Slide, superpixels: Sequence[int]) -> np.ndarray:
    """The distinct ids of ``superpixels`` as a sorted int64 array ``(M,)``, after checking that
    each is a superpixel of ``slide`` (1..N)."""
    count = superpixel_count(slide)
    ids_M = np.unique(np.asarray(superpixels, dtype=np.int64))
    if ids_M.size and (ids_M[0] < 1 or ids_M[-1] > count):
        bad = ids_M[0] if ids_M[0] < 1 else ids_M[-1]
        raise ParameterError(f"superpixel {bad} is not in slide {slide.name!r}: its ids are 1..{count}")
    return ids_M


def check_category(session: Session, project_id: int, category_id: int | None) -> None:
    """:class:`ParameterError` unless ``category_id`` is None or a category of the project.
    Excluded categories (glass, artefact) may be labelled: training and suggestions skip them."""
    if category_id is None:
        return
    category = session.get(Category, category_id)
    if category is None or category.project_id != project_id:
        raise ParameterError(f"category {category_id} is not a category of this project (see the project's categories)")


@dataclass(frozen=True)
class SuperpixelBatch:
    """The superpixel ids of a stroke for SQL, sent as one bound parameter whatever their number:
    ``rows`` is a one-column table (``superpixel``), :meth:`holds` a condition on a column."""

    rows: Subquery
    ids: BindParameter
    postgresql: bool

    def holds(self, column: ColumnElement[int]) -> ColumnElement[bool]:
        """``column`` is one of the batch's ids. On PostgreSQL ``= ANY(array)``, an index probe
        per id: a join with the unnested array is planned as a nested loop over the whole batch
        per row while the table's statistics still say it is empty (50 s for 20,000 ids)."""
        if self.postgresql:
            return column == any_(self.ids)
        return column.in_(select(self.rows.c.superpixel))


def superpixel_batch(session: Session, ids_M: np.ndarray) -> SuperpixelBatch:
    """:class:`SuperpixelBatch` of ``ids_M``: an array on PostgreSQL, JSON (``json_each``) on SQLite."""
    ids = [int(i) for i in ids_M]
    if _dialect(session) is postgresql:
        param = bindparam("superpixel_ids", ids, type_=postgresql.ARRAY(Integer))
        return SuperpixelBatch(select(func.unnest(param).column_valued("superpixel")).subquery("batch"), param, True)
    param = bindparam("superpixel_ids", json.dumps(ids))
    each = func.json_each(param).table_valued("value")
    return SuperpixelBatch(select(each.c.value.label("superpixel")).subquery("batch"), param, False)


def _owned(table: Table, owner: dict[str, int]) -> list[ColumnElement[bool]]:
    return [table.c[name] == value for name, value in owner.items()]


def changes(table: Table, owner: dict[str, int], batch: SuperpixelBatch, category_id: int | None) -> Select:
    """``(superpixel, previous category_id)`` of the superpixels of ``batch`` whose row of
    ``table`` owned by ``owner`` (e.g. a user's labels of a slide) does not hold ``category_id``
    (previous None where there is no row)."""
    if category_id is None:  # every existing row changes
        return (select(table.c.superpixel, table.c.category_id.label("previous_category_id"))
                .where(*_owned(table, owner), batch.holds(table.c.superpixel)))
    rows = batch.rows
    current = rows.outerjoin(table, and_(*_owned(table, owner), table.c.superpixel == rows.c.superpixel))
    return (select(rows.c.superpixel, table.c.category_id.label("previous_category_id")).select_from(current)
            .where(table.c.category_id.is_distinct_from(category_id)))


def write_batch(session: Session, table: Table, owner: dict[str, int], batch: SuperpixelBatch, category_id: int | None,
                values: dict[str, object]) -> None:
    """Make the rows of ``table`` owned by ``owner`` hold ``category_id`` (and ``values``) for the
    superpixels of ``batch``, or delete them when ``category_id`` is None.

    One upsert (``ON CONFLICT DO UPDATE``, on ``owner``'s columns and ``superpixel``, which must
    be the table's unique key) that leaves rows already holding ``category_id`` untouched.
    """
    if category_id is None:
        session.execute(table.delete().where(*_owned(table, owner), batch.holds(table.c.superpixel)))
        return
    columns = {**owner, **values, "category_id": category_id}
    superpixel = batch.rows.c.superpixel
    rows = select(*(_constant(table.c[name], value) for name, value in columns.items()), superpixel)
    # SQLite needs a WHERE to tell the SELECT's end from the ON CONFLICT clause.
    statement = _dialect(session).insert(table).from_select([*columns, "superpixel"],
                                                           rows.where(superpixel.is_not(None)))
    session.execute(statement.on_conflict_do_update(
        index_elements=[*owner, "superpixel"],
        set_={name: statement.excluded[name] for name in (*values, "category_id")},
        where=table.c.category_id != statement.excluded.category_id))


def _constant(column: ColumnElement, value: object) -> ColumnElement:
    """``value`` as a SELECT column for ``column``: integers (and NULL) cast, so that PostgreSQL
    does not read a NULL as text."""
    return cast(literal(value), Integer) if isinstance(column.type, Integer) else literal(value, column.type)


def _dialect(session: Session):
    return postgresql if session.get_bind().dialect.name == "postgresql" else sqlite


def set_labels(session: Session, slide: Slide, user_id: int, superpixels: Sequence[int], category_id: int | None,
               *, epoch: int = 0) -> BatchResult:
    """Label ``superpixels`` of ``slide`` as ``category_id`` for ``user_id`` (None removes the
    user's labels of them), recording each change in the label history.

    ``slide`` must come from :func:`locked_slide` in this session; ``epoch`` is the model version
    the user saw.
    """
    check_category(session, slide.project_id, category_id)
    ids_M = check_superpixels(slide, superpixels)
    batch = superpixel_batch(session, ids_M)
    owner = {"user_id": user_id, "slide_id": slide.id}
    now = utcnow()
    # The history first: it reads the values the upsert replaces.
    changed = changes(Label.__table__, owner, batch, category_id).subquery("changed")
    events = LabelEvent.__table__
    constants = {**owner, "project_id": slide.project_id, "category_id": category_id, "epoch": epoch, "at": now}
    history_rows = select(*(_constant(events.c[name], value) for name, value in constants.items()),
                          changed.c.superpixel, changed.c.previous_category_id)
    inserted = session.execute(events.insert().from_select([*constants, "superpixel", "previous_category_id"],
                                                           history_rows))
    write_batch(session, Label.__table__, owner, batch, category_id,
                {"project_id": slide.project_id, "epoch": epoch, "updated_at": now})
    label_history.count_events(session, slide, user_id, inserted.rowcount)
    return BatchResult(changed=inserted.rowcount, unchanged=int(ids_M.size) - inserted.rowcount)


def user_labels(session: Session, slide_id: int, user_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(superpixels_M, category_ids_M)`` (int64) of one user's labels of a slide: the arrays the
    viewer's label array is made of, read as plain integers (no ORM object per label)."""
    rows_M2 = integer_rows(session, select(Label.superpixel, Label.category_id)
                           .where(Label.slide_id == slide_id, Label.user_id == user_id))
    return rows_M2[:, 0], rows_M2[:, 1]


#: Columns of :func:`slide_label_rows`, as :class:`Label` names them.
LABEL_COLUMNS = ("user_id", "superpixel", "category_id", "epoch", "updated_at")


def slide_label_rows(session: Session, slide_id: int, user_id: int | None, *,
                     chunk: int = 16_384) -> Iterator[Sequence[tuple]]:
    """The labels of a slide by ``user_id`` (None: by everyone), by superpixel then user, as plain
    rows of :data:`LABEL_COLUMNS`, ``chunk`` at a time: no ORM object per label (843,580 labels of
    20 users as ORM objects, then response models: 1.9 GB)."""
    query = select(*(getattr(Label, column) for column in LABEL_COLUMNS)).where(Label.slide_id == slide_id)
    if user_id is not None:
        query = query.where(Label.user_id == user_id)
    result = session.execute(query.order_by(Label.superpixel, Label.user_id).execution_options(yield_per=chunk))
    yield from result.partitions()


def label_array(count: int, superpixels_M: np.ndarray, category_ids_M: np.ndarray) -> np.ndarray:
    """A ``(count + 1,)`` little-endian uint32 array (:data:`BINARY_ID_DTYPE`): the category id of
    superpixel ``i`` at index ``i``, 0 where unlabelled (index 0 is never a superpixel);
    :class:`ConflictError` for an id past uint32 (ids are 32-bit on PostgreSQL: none is).

    >>> label_array(3, np.array([1, 3]), np.array([7, 70_001])).tolist()
    [0, 7, 0, 70001]
    """
    if category_ids_M.size and int(category_ids_M.max()) > MAX_BINARY_ID:
        raise ConflictError(f"category id {int(category_ids_M.max())} does not fit the binary arrays "
                            f"(uint32, at most {MAX_BINARY_ID}); use the JSON labels instead")
    array = np.zeros(count + 1, dtype=BINARY_ID_DTYPE)
    array[superpixels_M] = category_ids_M
    return array


def history(session: Session, project_id: int, *, slide_id: int | None = None, user_id: int | None = None,
            limit: int = 100) -> list[LabelEvent]:
    """The project's latest label changes, newest first, optionally of one slide and one user."""
    query = select(LabelEvent).where(LabelEvent.project_id == project_id)
    if slide_id is not None:
        query = query.where(LabelEvent.slide_id == slide_id)
    if user_id is not None:
        query = query.where(LabelEvent.user_id == user_id)
    return list(session.scalars(query.order_by(LabelEvent.id.desc()).limit(limit)))


@dataclass(frozen=True)
class CategoryCount:
    category_id: int
    labels: int
    """Labels by all users (a superpixel labelled by two users counts twice)."""
    reviews: int


@dataclass(frozen=True)
class UserCount:
    user_id: int
    username: str
    labels: int
    by_category: dict[int, int]
    last_labelled_at: datetime | None


def summary(session: Session, project_id: int) -> tuple[list[CategoryCount], list[UserCount]]:
    """Label and review counts per category (every category of the project, in legend order) and
    label counts per user who labelled (by username), for the dashboard."""
    per_pair = session.execute(
        select(Label.user_id, Label.category_id, func.count(), func.max(Label.updated_at))
        .where(Label.project_id == project_id).group_by(Label.user_id, Label.category_id)).all()
    reviews = dict(session.execute(select(Review.category_id, func.count()).where(Review.project_id == project_id)
                                   .group_by(Review.category_id)).all())
    labels: dict[int, int] = {}
    users: dict[int, dict[int, int]] = {}
    last: dict[int, datetime] = {}
    for user_id, category_id, count, latest in per_pair:
        labels[category_id] = labels.get(category_id, 0) + count
        users.setdefault(user_id, {})[category_id] = count
        last[user_id] = max(last.get(user_id, latest), latest)
    categories = [CategoryCount(c, labels.get(c, 0), reviews.get(c, 0)) for c in session.scalars(
        select(Category.id).where(Category.project_id == project_id).order_by(Category.position, Category.id))]
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(list(users)))).all())
    people = sorted((UserCount(u, names[u], sum(counts.values()), counts, last[u]) for u, counts in users.items()),
                    key=lambda count: count.username)
    return categories, people
