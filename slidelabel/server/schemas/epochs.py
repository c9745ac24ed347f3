"""Bodies of the epoch, queue and prediction routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class EpochPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    labels: int = Field(description="labelled superpixels the model was trained on")
    metrics: dict = Field(description="label counts per category, cross-validated balanced accuracy and macro F1 "
                                      "(null until every category has 2 labels), model chosen, seconds per step")
    created_at: datetime


class QueueItem(BaseModel):
    slide_id: int
    superpixel: int
    bbox_level0: tuple[int, int, int, int] = Field(description="x_min, y_min, x_max, y_max in level-0 px")
    centroid_level0: tuple[float, float] = Field(description="x, y in level-0 px")
    predicted: int | None = Field(description="predicted category id; null before the first epoch")
    certainty: float | None = Field(description="probability of the predicted category (0-1)")
    score: float | None = Field(description="the strategy's score, higher = sooner; null before the first epoch")
    thumbnail_url: str


class QueuePublic(BaseModel):
    epoch: int | None = Field(description="the epoch whose ranking this is; null: cold start before any epoch")
    items: list[QueueItem]
