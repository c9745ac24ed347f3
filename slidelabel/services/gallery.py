"""Gallery links: read-only views of a project, or of some of its slides, that open without an
account.

An owner publishes a link (:func:`publish`) and is shown its token once; only the token's SHA-256
is stored. Whoever holds the token sees, through :func:`resolve`, the project's name, its
categories, the chosen slides with the labels or the latest predictions over them, and the
learning figures of its epochs, and nothing else: no other project, no slide file, no user. An
unknown token and a revoked one get the same answer, so a link's past existence does not leak.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from slidelabel.errors import NotFoundError, ParameterError, PermissionDeniedError
from slidelabel.services import epochs, labels, tiles
from slidelabel.services.access import ProjectAccess
from slidelabel.services.reviews import effective_labels
from slidelabel.services.slides import slides_of
from slidelabel.services.turns import Turns
from slidelabel.store.models import Epoch, GalleryLink, GalleryOverlay, Membership, Project, Role, Slide, User, utcnow

#: The answer to every token that opens nothing (never issued, revoked, or its project deleted).
UNKNOWN = "this gallery link was revoked or never existed"
#: Metrics of an epoch that the gallery's figures draw: scores, calibration, learning signals and
#: label counts per category; the rest (timings, strategy picks, options) stays with members.
FIGURE_METRICS = ("model_chosen", "cv_balanced_accuracy", "cv_macro_f1", "cv_note", "estimated_accuracy",
                  "calibration", "changed_fraction", "stopping", "label_counts")
#: Most slides a link may name (a project's slides are listed on one page).
MAX_SLIDES = 1000
#: Overlays of gallery links built at once in an API process; the links of each maker are a holder
#: of their own line (:func:`link_line`; one turn, 16 waiting requests, the rest busy at once),
#: never their maker's export line.
#: Before, a link's requests stood in its maker's line: 40 anonymous loops on one link's
#: ``overlay.bin`` left the maker's own exports 503 (4 of 11 answered, the twentieth attack). The
#: overlay then builds in an export turn held for every link together (:data:`GALLERIES`), so
#: links hold at most one of the server's export turns and memory stays bounded by them.
OVERLAY_BUILDERS = 1
#: Seconds an overlay waits for its link's turn before it is answered busy (503).
OVERLAY_WAIT_S = 10.0
#: The holder of the export turn an overlay builds in, and of the render turns links render in:
#: all gallery links together.
GALLERIES = ("gallery", "links")
#: Gallery renders waiting for the links' render turn, the links of each maker in a line of their
#: own (:func:`link_line`; 16 waiting, the rest busy at once), the lines served in turn: one link's visitors
#: filled the one line all links stood in, and another link's got 503 on 46 of 62 requests (the
#: twenty-third attack).
_LINK_RENDERS = Turns(tiles.RENDERS_PER_HOLDER, per_holder=1)
_OVERLAY_TURNS = Turns(OVERLAY_BUILDERS, per_holder=1)
#: Gallery pages built at once per API process, the links of each maker waiting in a line of their
#: own (:func:`link_line`): a page lists every slide the link shows (5,004: 0.1-0.3 s), and ten
#: anonymous requests a second on one link kept a user's requests waiting 8-9 s (the twenty-third
#: attack).
PAGE_BUILDERS = 1
#: Seconds a page waits for its turn before it is answered busy (503).
PAGE_WAIT_S = 10.0
#: Requests of one maker's links that wait for a page turn at once: a link handed to a class opens
#: at once in as many browsers (80 at once, a few milliseconds each for a project of tens of slides).
PAGE_WAITING = 128
_PAGE_TURNS = Turns(PAGE_BUILDERS, per_holder=1, waiting_per_holder=PAGE_WAITING)
_RENDERS_BUSY = (f"the gallery's images are busy (this link's, or other links') for over {tiles.RENDER_WAIT_S:.0f} "
                 "s; try again in a minute")
_OVERLAY_BUSY = (f"the gallery's overlays are busy (this link's earlier one, or another link's) for over "
                 f"{OVERLAY_WAIT_S:.0f} s; try again in a minute")
#: Brings a link maker's account and roles up to date where another system keeps them (the Girder
#: plugin's): called with the maker's user id and the link's project id before the maker is
#: checked, False where that system no longer knows the maker (the link stops).
MakerCheck = Callable[[int, int], bool]


def overlay_turn_waiting(holder: Hashable) -> AbstractAsyncContextManager[None]:
    """Holds one of the :data:`OVERLAY_BUILDERS` turns while a link's overlay is built (with an
    export turn for :data:`GALLERIES`, ``slidelabel/server/deps.py``), waited for on the event
    loop; ``holder`` (a link) holds one at once. :class:`~slidelabel.errors.BusyError` after
    :data:`OVERLAY_WAIT_S` seconds, or at once when 16 of the holder's requests wait already."""
    return _OVERLAY_TURNS.waiting(OVERLAY_WAIT_S, _OVERLAY_BUSY, holder=holder)


@asynccontextmanager
async def render_turn_waiting(link: Hashable, gone: Callable[[], Awaitable[bool]] | None = None
                              ) -> AsyncIterator[None]:
    """Holds the render turn of all links together (:data:`GALLERIES`,
    :func:`~slidelabel.services.tiles.render_turn_waiting`), waited for in the line of ``link``:
    links take the turn in turn, whatever the number of requests each has waiting. A request
    whose client has hung up (``gone``) renders nothing."""
    async with _LINK_RENDERS.waiting(tiles.RENDER_WAIT_S, _RENDERS_BUSY, holder=link, gone=gone), \
            tiles.render_turn_waiting(GALLERIES, gone=gone):
        yield


def link_line(maker_id: int) -> Hashable:
    """The line a gallery link's requests wait in for pages, overlays and renders: one for all the
    links of its maker, the lines served in turn. A line a link let one owner's 60 links, and a
    line a project one owner's 60 projects, keep other projects' pages 10 s or 503 (the
    twenty-fourth and twenty-fifth attacks); a maker is an account the admin made."""
    return ("gallery", "maker", maker_id)


def page_turn_waiting(link: Hashable) -> AbstractAsyncContextManager[None]:
    """Holds one of the :data:`PAGE_BUILDERS` turns while a link's page is built, waited for on
    the event loop in the line of ``link``; :class:`~slidelabel.errors.BusyError` after
    :data:`PAGE_WAIT_S` seconds, or at once when 16 of the link's requests wait already."""
    return _PAGE_TURNS.waiting(PAGE_WAIT_S, f"gallery pages are busy for over {PAGE_WAIT_S:.0f} s; try again in a "
                                            "minute", holder=link)


def token_digest(token: str) -> str:
    """The hex SHA-256 of a link's token: what the database holds."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Published:
    """A new link and its token, which is shown this once and never stored."""

    link: GalleryLink
    token: str


@dataclass(frozen=True)
class GalleryView:
    """What one token opens: a project, the slides shown (by name) and the overlay drawn."""

    link: GalleryLink
    project: Project
    slides: list[Slide]

    @property
    def overlay(self) -> GalleryOverlay:
        return self.link.overlay

    def slide(self, slide_id: int) -> Slide:
        """The shown slide ``slide_id``; :class:`NotFoundError` for any other, whatever project
        it is in."""
        for slide in self.slides:
            if slide.id == slide_id:
                return slide
        raise NotFoundError(f"no slide {slide_id} in this gallery")


def _chosen_slides(session: Session, project_id: int, slide_ids: Sequence[int]) -> list[int]:
    """``slide_ids`` sorted without repeats, each checked to be a slide of the project."""
    chosen = sorted(set(slide_ids))
    if len(chosen) > MAX_SLIDES:
        raise ParameterError(f"a gallery link names at most {MAX_SLIDES} slides ({len(chosen)} given); "
                             "leave the list empty to show every slide")
    known = set(session.scalars(select(Slide.id).where(Slide.project_id == project_id, Slide.id.in_(chosen))))
    missing = [slide_id for slide_id in chosen if slide_id not in known]
    if missing:
        raise NotFoundError(f"no slide {', '.join(map(str, missing[:10]))} in this project: choose among its slides")
    return chosen


def publish(session: Session, access: ProjectAccess, *, overlay: GalleryOverlay,
            slide_ids: Sequence[int] = ()) -> Published:
    """A new link to the project's slides ``slide_ids`` (empty: all, those added later too) with
    ``overlay`` drawn over them. Only an owner publishes (:class:`PermissionDeniedError`)."""
    if access.role != Role.owner:
        raise PermissionDeniedError(f"only an owner publishes gallery links; you are {access.role.value}")
    token = secrets.token_urlsafe(32)
    link = GalleryLink(project_id=access.project.id, token_sha256=token_digest(token), overlay=GalleryOverlay(overlay),
                       slide_ids=_chosen_slides(session, access.project.id, slide_ids), created_by=access.user.id)
    session.add(link)
    session.flush()
    return Published(link, token)


def links_of(session: Session, project_id: int) -> list[GalleryLink]:
    """The project's links, revoked ones included, newest first."""
    return list(session.scalars(select(GalleryLink).where(GalleryLink.project_id == project_id)
                                .order_by(GalleryLink.id.desc())))


def revoke(session: Session, *, project_id: int, link_id: int) -> GalleryLink:
    """Stop link ``link_id`` of the project from opening anything (again: a no-op)."""
    link = session.get(GalleryLink, link_id)
    if link is None or link.project_id != project_id:
        raise NotFoundError(f"no gallery link {link_id} in this project")
    if link.revoked_at is None:
        link.revoked_at = utcnow()
    return link


def _may_still_publish(session: Session, link: GalleryLink) -> bool:
    """Whether the link's creator may still publish it: an enabled account, and the admin or an
    owner of the project. A link stops when its owner leaves, is demoted, disabled or deleted."""
    creator = session.get(User, link.created_by) if link.created_by is not None else None
    if creator is None or creator.disabled:
        return False
    return creator.is_admin or session.scalar(select(Membership.role).where(
        Membership.project_id == link.project_id, Membership.user_id == creator.id)) == Role.owner


def resolve(session: Session, token: str, *, maker_check: MakerCheck | None = None,
            slide_id: int | None = None) -> GalleryView:
    """What ``token`` opens; :class:`NotFoundError` with :data:`UNKNOWN` when it opens nothing
    (unknown, revoked, or its creator may no longer publish it: as ``maker_check`` says now where
    another system keeps the accounts, under Girder; None on slidelabel's own server, whose rows
    are the accounts themselves). With ``slide_id`` (a request about one slide) the view's slides
    are that one slide where the link shows it, else none: the project's slides are not all read
    for each anonymous tile (a link to 5,004 slides kept a user's requests waiting 8-9 s under
    ten such requests a second, the twenty-third attack)."""
    digest = token_digest(token)
    link = session.scalar(select(GalleryLink).where(GalleryLink.token_sha256 == digest))
    # The row is found by the digest; comparing it again in constant time costs nothing and keeps
    # the check independent of how the database compares strings.
    if link is None or link.revoked_at is not None or not hmac.compare_digest(link.token_sha256, digest):
        raise NotFoundError(UNKNOWN)
    if maker_check is not None and link.created_by is not None:
        maker, project_id = link.created_by, link.project_id
        # The check reads and writes in sessions of its own: this read transaction ends first (its
        # connection goes back to the pool), so what is read next is what the check left.
        session.commit()
        if not maker_check(maker, project_id):
            raise NotFoundError(UNKNOWN)
    project = session.get(Project, link.project_id)
    if project is None or not _may_still_publish(session, link):
        raise NotFoundError(UNKNOWN)
    shown = set(link.slide_ids)
    if slide_id is None:
        slides = [slide for slide in slides_of(session, project.id) if not shown or slide.id in shown]
    else:
        slide = session.get(Slide, slide_id) if not shown or slide_id in shown else None
        slides = [slide] if slide is not None and slide.project_id == project.id else []
    return GalleryView(link, project, slides)


def figure_epochs(session: Session, project_id: int) -> list[tuple[Epoch, dict]]:
    """Every epoch of the project, oldest first, with the part of its metrics the figures draw."""
    return [(epoch, {key: epoch.metrics[key] for key in FIGURE_METRICS if key in epoch.metrics})
            for epoch in epochs.list_epochs(session, project_id)]


@dataclass(frozen=True)
class Overlay:
    """The category drawn on each superpixel of a slide: little-endian uint32 category ids
    (:data:`~slidelabel.services.labels.BINARY_ID_DTYPE`), index = superpixel id (0 = none),
    ``N + 1`` values; ``epoch`` is the predictions' epoch number."""

    content: bytes
    epoch: int | None


def slide_overlay(session: Session, data_dir: Path, view: GalleryView, slide_id: int) -> Overlay:
    """The link's overlay of a shown slide: its effective labels (review, else the users'
    majority) or the latest epoch's predicted categories."""
    slide = view.slide(slide_id)
    if view.overlay == GalleryOverlay.predictions:
        number, predictions = epochs.slide_predictions(session, data_dir, view.project.id, slide.id)
        return Overlay(epochs.predicted_bytes(predictions), number)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    superpixels_M, categories_M = effective_labels(session, view.project.id, slide_id=slide.id).get(slide.id, empty)
    return Overlay(labels.label_array(labels.superpixel_count(slide), superpixels_M, categories_M).tobytes(), None)

