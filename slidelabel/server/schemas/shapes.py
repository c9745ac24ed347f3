"""Bodies of the shape routes: a polygon's covered superpixels, grow to similar and the smart tool's
Segment Anything suggestions."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from slidelabel.services.shapes import MAX_VERTICES


class ShapeCover(BaseModel):
    polygon_level0: list[tuple[float, float]] = Field(
        min_length=3, max_length=MAX_VERTICES, description="vertices x, y in level-0 px (closed or not)")
    downsample: float = Field(1.0, gt=0, description="level-0 px per screen pixel of the view: coverage is counted at "
                                                      "the label-map level the viewer shows")


class ShapeCoverPublic(BaseModel):
    superpixels: list[int] = Field(description="ids covered by at least half of their pixels, ascending")
    level: int = Field(description="label-map level the pixels were counted at (0 = the working level)")


class GrowthPublic(BaseModel):
    superpixels: list[int] = Field(description="ids of the region, the seed first, in the order reached")
    steps: list[int] = Field(description="neighbour steps of each from the seed (0 for the seed)")
    basis: Literal["predictions", "features"] = Field(description="what made superpixels alike: the latest epoch's "
                                                                  "predictions, or features before any epoch")
    epoch: int | None
    category_id: int | None = Field(description="the seed's predicted category; null when grown by features")


#: Largest side of a smart-tool region (level-0 px): a whole slide of a million px across.
MAX_REGION_PX = 2**21


class SamRegion(BaseModel):
    region_level0: tuple[float, float, float, float] = Field(
        description="left, top, right, bottom of the region in view, level-0 px (right and bottom exclusive)")

    @model_validator(mode="after")
    def _ordered(self) -> SamRegion:
        left, top, right, bottom = self.region_level0
        if not all(math.isfinite(v) and -MAX_REGION_PX <= v <= MAX_REGION_PX for v in self.region_level0):
            raise ValueError(f"region_level0 values must be finite, within ±{MAX_REGION_PX} level-0 px")
        if not (right > left and bottom > top):
            raise ValueError("region_level0 needs right > left and bottom > top")
        return self


class SamEmbedPublic(BaseModel):
    basis: Literal["sam", "classical"] = Field(description="sam: suggestions come from Segment Anything; classical: "
                                                           "no SAM weights, regions grow to similar superpixels")
    cached: bool = Field(description="the region's embedding was computed before")
    region_level0: tuple[int, int, int, int] | None = Field(description="the region embedded, clipped to the slide")
    downsample: float | None = Field(description="level-0 px per pixel of the image the model saw")
    seconds: float | None = Field(description="how long computing the embedding took (s)")
    note: str = Field("", description="why the basis is classical")


class SamPoint(SamRegion):
    x_level0: float = Field(ge=0, le=MAX_REGION_PX, description="the cursor, level-0 px")
    y_level0: float = Field(ge=0, le=MAX_REGION_PX)
    downsample: float = Field(1.0, gt=0, le=2**16, description="level-0 px per screen pixel of the view: coverage is "
                                                               "counted at the label-map level the viewer shows")


class SuggestionPublic(BaseModel):
    superpixels: list[int] = Field(description="ids the outline covers by at least half of their pixels, ascending")
    outline_level0: list[tuple[float, float]] = Field(description="the mask's outline, x, y in level-0 px; "
                                                                  "empty for classical regions")
    score: float | None = Field(description="the model's predicted IoU of the mask; null for classical regions")


class SuggestionsPublic(BaseModel):
    basis: Literal["sam", "classical"]
    scales: list[SuggestionPublic] = Field(description="three scales, small to large; none off the superpixels")
    note: str = Field("", description="why the basis is classical")
