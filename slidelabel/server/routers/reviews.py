"""Reviews: a reviewer's verdict per superpixel, the listing of labels to review, bulk relabelling
and the agreement between labellers."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from slidelabel.server.deps import ExportTurn, ReadSession, Reviewer, SettingsDep, Viewer, WriteSession
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.labels import (
    Agreement,
    BatchResult,
    PairAgreementPublic,
    Relabel,
    ReviewBatch,
    ReviewItemPublic,
    ReviewPage,
    UserLabels,
)
from slidelabel.services import reviews
from slidelabel.services.agreement import project_agreement
from slidelabel.services.labels import locked_slide
from slidelabel.store.layout import ProjectFiles

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}", tags=["reviews"])


@router.put("/slides/{slide_id}/reviews")
def set_reviews(slide_id: int, body: ReviewBatch, access: Reviewer, session: WriteSession) -> BatchResult:
    """Review superpixels of a slide as one category (null: clear their reviews); a review
    overrides every user's label of the superpixel."""
    slide = locked_slide(session, access.project.id, slide_id)
    return BatchResult.model_validate(reviews.set_reviews(session, slide, access.user.id, body.superpixels,
                                                          body.category_id))


@router.get("/review")
def list_for_review(
    access: Viewer, _turn: ExportTurn, session: ReadSession, settings: SettingsDep, slide_id: int | None = None,
    user_id: int | None = None, category_id: int | None = None,
    mismatch: Annotated[bool | None, Query(description="label differs from the latest prediction")] = None,
    reviewed: bool | None = None, sort: Literal[reviews.SORTS] = "-updated_at",
    offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ReviewPage:
    """Labelled superpixels with their labeller, review and the latest epoch's prediction (in an
    export turn: the count and the order read every label row of the project)."""
    query = reviews.ReviewQuery(slide_id=slide_id, user_id=user_id, category_id=category_id, mismatch=mismatch,
                                reviewed=reviewed, sort=sort, offset=offset, limit=limit)
    total, items = reviews.review_page(session, ProjectFiles(settings.data_dir, access.project.id), query)
    return ReviewPage(total=total, items=[ReviewItemPublic.model_validate(item) for item in items])


@router.post("/review/relabel")
def relabel(body: Relabel, access: Reviewer, session: WriteSession) -> BatchResult:
    """Review many superpixels, of any slides of the project, as one category."""
    by_slide: dict[int, list[int]] = {}
    for item in body.items:
        by_slide.setdefault(item.slide_id, []).append(item.superpixel)
    changed = unchanged = 0
    for slide_id in sorted(by_slide):  # one lock order for every request: no deadlock between two
        slide = locked_slide(session, access.project.id, slide_id)
        result = reviews.set_reviews(session, slide, access.user.id, by_slide[slide_id], body.category_id)
        changed, unchanged = changed + result.changed, unchanged + result.unchanged
    return BatchResult(changed=changed, unchanged=unchanged)


@router.get("/agreement")
def get_agreement(access: Viewer, _turn: ExportTurn, session: ReadSession) -> Agreement:
    """Per pair of labellers: superpixels in common, Cohen's kappa and the confusion table (in an
    export turn: it reads every label row of the project; 4.8 million: 36 s and 950 MB)."""
    categories, users, pairs = project_agreement(session, access.project.id)
    return Agreement(
        categories=categories,
        users=[UserLabels(user_id=u, username=name, labels=count) for u, (name, count) in users.items()],
        pairs=[PairAgreementPublic(first_user_id=p.first_user_id, second_user_id=p.second_user_id, common=p.common,
                                   agreed=p.agreed, kappa=None if math.isnan(p.kappa) else p.kappa,
                                   confusion=p.confusion_K_K.tolist()) for p in pairs])
