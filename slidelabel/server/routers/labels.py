"""Labels of slides: a brush stroke at a time, as JSON or as the viewer's binary array, with the
history for undo and counts for the dashboard."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query, Response
from pydantic import TypeAdapter

from slidelabel.errors import ParameterError
from slidelabel.server.deps import Annotator, ExportTurn, ReadSession, Viewer, WriteSession, export_turn_when
from slidelabel.server.request_checks import MAX_ID
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.labels import (
    BatchResult,
    CategoryCount,
    LabelBatch,
    LabelEventPublic,
    LabelPublic,
    LabelSummary,
    UserCount,
)
from slidelabel.services import labels
from slidelabel.services.access import ProjectAccess
from slidelabel.services.reviews import effective_labels
from slidelabel.services.slides import get_slide

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}", tags=["labels"])

UserChoice = Annotated[str, Query(description="'me', 'all' or a user id")]
_LABEL_LIST = TypeAdapter(list[LabelPublic])


def _user_id(user: str, access: ProjectAccess) -> int | None:
    """The user id a ``user`` query parameter names; None for all users."""
    if user == "me":
        return access.user.id
    if user == "all":
        return None
    # ASCII digits only: "¹" is a digit to str.isdigit but no number to int(), and ids are 32-bit.
    if user.isascii() and user.isdigit() and len(user) <= 10 and int(user) <= MAX_ID:
        return int(user)
    raise ParameterError(f"user={user!r}: give 'me', 'all' or a user id (digits 0-9, at most {MAX_ID})")


@router.put("/slides/{slide_id}/labels")
def set_labels(slide_id: int, body: LabelBatch, access: Annotator, session: WriteSession) -> BatchResult:
    """Label superpixels of a slide as one category (null: remove your labels of them)."""
    slide = labels.locked_slide(session, access.project.id, slide_id)
    result = labels.set_labels(session, slide, access.user.id, body.superpixels, body.category_id, epoch=body.epoch)
    return BatchResult.model_validate(result)


@router.get("/slides/{slide_id}/labels", response_model=list[LabelPublic])
def get_labels(slide_id: int, access: Viewer, _turn: ExportTurn, session: ReadSession,
               user: UserChoice = "me") -> Response:
    """A slide's labels (yours unless ``user`` says otherwise); built as exports are, two at a
    time, 503 when busy for 10 s, a chunk of rows at a time (843,580 labels: 86 MB of JSON)."""
    slide = get_slide(session, access.project.id, slide_id)
    body = bytearray(b"[")
    for rows in labels.slide_label_rows(session, slide.id, _user_id(user, access)):
        chunk = _LABEL_LIST.dump_json([LabelPublic(**dict(zip(labels.LABEL_COLUMNS, row, strict=True))) for row in rows])
        body += (b"," if len(body) > 1 else b"") + chunk[1:-1]
    return Response(bytes(body + b"]"), media_type="application/json")


LabelView = Literal["mine", "effective"]


def _effective(view: LabelView = "mine") -> bool:
    """Whether the effective view is asked for: it reads every label row of the slide (in an
    export turn); the caller's own labels need none."""
    return view == "effective"


EffectiveTurn = Annotated[None, export_turn_when(_effective)]


@router.get("/slides/{slide_id}/labels.bin", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "little-endian uint32 category id per superpixel id (0: none), "
                                            "N + 1 values"}})
def get_label_array(slide_id: int, access: Viewer, _turn: EffectiveTurn, session: ReadSession,
                    view: LabelView = "mine") -> Response:
    """Your labels of a slide, or its effective labels (review, else the users' majority, built
    in an export turn), as ``N + 1`` little-endian uint32: the category id at the index of each
    superpixel id."""
    slide = get_slide(session, access.project.id, slide_id)
    count = labels.superpixel_count(slide)
    if view == "effective":
        superpixels_M, categories_M = effective_labels(session, access.project.id, slide_id=slide.id).get(
            slide.id, (np.empty(0, np.int64), np.empty(0, np.int64)))
    else:
        superpixels_M, categories_M = labels.user_labels(session, slide.id, access.user.id)
    array = labels.label_array(count, superpixels_M, categories_M)
    return Response(array.tobytes(), media_type="application/octet-stream")


#: Label changes a history request reads without an export turn (an undo's look back).
LIGHT_HISTORY = 500
HistoryLimit = Annotated[int, Query(ge=1, le=10_000)]


def _long_history(limit: HistoryLimit = 100) -> bool:
    """Whether the history asked for is long: 10,000 events of everyone are 1.5 MB of JSON and
    0.4 s of a request thread (one viewer's 90 at once kept others waiting 13 s: twelfth attack)."""
    return limit > LIGHT_HISTORY


@router.get("/labels/history")
def get_history(access: Viewer, _turn: Annotated[None, export_turn_when(_long_history)], session: ReadSession,
                slide_id: int | None = None, user: UserChoice = "me", limit: HistoryLimit = 100
                ) -> list[LabelEventPublic]:
    """The latest label changes, newest first (yours unless ``user`` says otherwise), for undo;
    more than :data:`LIGHT_HISTORY` in an export turn."""
    events = labels.history(session, access.project.id, slide_id=slide_id, user_id=_user_id(user, access), limit=limit)
    return [LabelEventPublic.model_validate(event) for event in events]


@router.get("/labels/summary")
def get_summary(access: Viewer, _turn: ExportTurn, session: ReadSession) -> LabelSummary:
    """Label and review counts per category and label counts per user (in an export turn: the
    counts read every label row of the project)."""
    categories, users = labels.summary(session, access.project.id)
    return LabelSummary(categories=[CategoryCount.model_validate(c) for c in categories],
                        users=[UserCount.model_validate(u) for u in users])
