"""Bodies of the label, review, review-listing and agreement routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

#: The most superpixels one request may change (a brush stroke is a few thousand).
MAX_BATCH = 100_000


class LabelBatch(BaseModel):
    superpixels: list[int] = Field(max_length=MAX_BATCH, description="superpixel ids of the slide (1..N)")
    category_id: int | None = Field(description="the category to give them; null removes your labels of them")
    epoch: int = Field(0, ge=0, description="the epoch (model version) whose suggestions you saw")


class ReviewBatch(BaseModel):
    superpixels: list[int] = Field(max_length=MAX_BATCH, description="superpixel ids of the slide (1..N)")
    category_id: int | None = Field(description="the reviewed category; null clears their reviews")


class BatchResult(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    changed: int = Field(description="superpixels whose value changed")
    unchanged: int = Field(description="superpixels that already had that value")


class LabelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: int
    superpixel: int
    category_id: int
    epoch: int
    updated_at: datetime


class LabelEventPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    slide_id: int
    user_id: int
    superpixel: int
    category_id: int | None = Field(description="null: the label was removed")
    previous_category_id: int | None = Field(description="null: the superpixel was unlabelled before")
    epoch: int
    at: datetime


class CategoryCount(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    category_id: int
    labels: int = Field(description="labels by all users (a superpixel labelled by two counts twice)")
    reviews: int


class UserCount(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: int
    username: str
    labels: int
    by_category: dict[int, int] = Field(description="labels per category id")
    last_labelled_at: datetime | None


class LabelSummary(BaseModel):
    categories: list[CategoryCount]
    users: list[UserCount]


class ReviewItemPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slide_id: int
    superpixel: int
    user_id: int
    username: str
    category_id: int = Field(description="the labeller's category")
    reviewed_category_id: int | None = Field(description="the review's category; null when not reviewed")
    updated_at: datetime
    predicted_category_id: int | None = Field(description="the latest epoch's prediction; null without one")
    certainty: float | None = Field(description="the latest epoch's probability of its prediction (0..1)")


class ReviewPage(BaseModel):
    total: int = Field(description="labels matching the filters, over all pages")
    items: list[ReviewItemPublic]


class SuperpixelRef(BaseModel):
    slide_id: int
    superpixel: int


class Relabel(BaseModel):
    items: list[SuperpixelRef] = Field(max_length=MAX_BATCH)
    category_id: int | None = Field(description="the reviewed category; null clears their reviews")


class UserLabels(BaseModel):
    user_id: int
    username: str
    labels: int


class PairAgreementPublic(BaseModel):
    first_user_id: int
    second_user_id: int
    common: int = Field(description="superpixels both labelled")
    agreed: int = Field(description="of those, labelled alike")
    kappa: float | None = Field(description="Cohen's kappa; null when undefined (both used one single category)")
    confusion: list[list[int]] = Field(description="rows: the first user's categories, columns: the second's, "
                                                   "in the order of 'categories'")


class Agreement(BaseModel):
    categories: list[int] = Field(description="category ids, the order of the confusion tables")
    users: list[UserLabels]
    pairs: list[PairAgreementPublic]
