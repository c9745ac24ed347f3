"""Bodies of the shape routes: a polygon's covered superpixels and grow to similar."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

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
