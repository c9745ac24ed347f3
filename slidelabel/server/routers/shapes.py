"""Shapes drawn in the viewer, as superpixels: which ones a polygon or lasso covers, the region
grown from a superpixel to similar ones, and the smart tool's Segment Anything suggestions.
Read-only: the client labels what it accepts."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query

from slidelabel.server.deps import ReadSession, SettingsDep, SmartTurn, Viewer
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.shapes import (
    GrowthPublic,
    SamEmbedPublic,
    SamPoint,
    SamRegion,
    ShapeCover,
    ShapeCoverPublic,
    SuggestionPublic,
    SuggestionsPublic,
)
from slidelabel.services import region_growing, smart
from slidelabel.services import shapes as service
from slidelabel.services.slides import get_slide
from slidelabel.store.layout import ProjectFiles

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}/slides/{slide_id}/shapes", tags=["shapes"])


@router.post("/cover")
def cover(slide_id: int, body: ShapeCover, access: Viewer, session: ReadSession, settings: SettingsDep) -> ShapeCoverPublic:
    """The superpixels the polygon covers by at least half of their pixels, counted at the
    resolution the viewer shows (``downsample``)."""
    slide = get_slide(session, access.project.id, slide_id)
    found = service.slide_cover(ProjectFiles(settings.data_dir, slide.project_id).superpixels(slide.id),
                                np.asarray(body.polygon_level0), downsample=body.downsample)
    return ShapeCoverPublic(superpixels=found.superpixels.tolist(), level=found.level)


@router.get("/grow")
def grow(slide_id: int, access: Viewer, _turn: SmartTurn, session: ReadSession, settings: SettingsDep,
         superpixel: Annotated[int, Query(ge=1, description="the seed superpixel id")],
         threshold: Annotated[float, Query(ge=0, lt=1, description="least certainty of the seed's predicted "
                                           "category; by features: 1 - the share of the slide taken as similar")] = 0.8,
         steps: Annotated[int, Query(ge=0, le=1000, description="most neighbour steps from the seed")] = 50,
         ) -> GrowthPublic:
    """The connected region of superpixels like ``superpixel`` (see services.region_growing.grow_to_similar)."""
    slide = get_slide(session, access.project.id, slide_id)
    found = region_growing.grow_to_similar(session, settings.data_dir, access.project, slide, seed=superpixel,
                                           threshold=threshold, max_steps=steps)
    return _public(found)


@router.get("/scales")
def scales(slide_id: int, access: Viewer, _turn: SmartTurn, session: ReadSession, settings: SettingsDep,
           superpixel: Annotated[int, Query(ge=1, description="the superpixel under the cursor")]) -> list[GrowthPublic]:
    """The smart tool's proposals without a model: the regions grown from ``superpixel`` at the
    three scales of services.region_growing.SCALES (threshold, steps), strict and near to loose and
    far."""
    slide = get_slide(session, access.project.id, slide_id)
    grown = region_growing.grow_at_scales(session, settings.data_dir, access.project, slide, seed=superpixel)
    return [_public(found) for found in grown]


@router.post("/sam/embed")
def sam_embed(slide_id: int, body: SamRegion, access: Viewer, _turn: SmartTurn, session: ReadSession,
              settings: SettingsDep) -> SamEmbedPublic:
    """Computes (or finds cached) the Segment Anything embedding of the region in view, so that the
    suggestions that follow cost only the prompt decoder; ``basis`` says whether there is a model."""
    slide = get_slide(session, access.project.id, slide_id)
    embedding, cached, note = smart.embed_region(settings, slide, body.region_level0)
    if embedding is None:
        return SamEmbedPublic(basis="classical", cached=False, region_level0=None, downsample=None, seconds=None,
                              note=smart.note_for(note, admin=access.user.is_admin))
    return SamEmbedPublic(basis="sam", cached=cached, region_level0=embedding.region_level0,
                          downsample=embedding.downsample, seconds=embedding.seconds)


@router.post("/sam/suggest")
def sam_suggest(slide_id: int, body: SamPoint, access: Viewer, _turn: SmartTurn, session: ReadSession,
                settings: SettingsDep) -> SuggestionsPublic:
    """The smart tool's three scales at the cursor: Segment Anything's masks (outline and the
    superpixels it covers by at least half) over the region's embedding, or without a model the
    regions grown from the superpixel there (as ``/scales``)."""
    slide = get_slide(session, access.project.id, slide_id)
    found = smart.suggest(session, settings, access.project, slide, x_level0=body.x_level0, y_level0=body.y_level0,
                          region_level0=body.region_level0, downsample=body.downsample)
    return SuggestionsPublic(basis=found.basis, note=smart.note_for(found.note, admin=access.user.is_admin),
                             scales=[SuggestionPublic(superpixels=s.superpixels.tolist(), outline_level0=[
                                 (round(x, 1), round(y, 1)) for x, y in s.outline_level0.tolist()], score=s.score)
                                     for s in found.scales])


def _public(found: region_growing.Growth) -> GrowthPublic:
    return GrowthPublic(superpixels=found.superpixels.tolist(), steps=found.steps.tolist(), basis=found.basis,
                        epoch=found.epoch, category_id=found.category_id)
