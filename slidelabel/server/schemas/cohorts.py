"""Bodies of the cohort routes: an epoch applied to a server folder of slides."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from slidelabel.server.schemas.jobs import JobPublic


class CohortCreate(BaseModel):
    folder: str = Field(min_length=1, max_length=4096,
                        description="absolute path of a server slide folder (or one inside it) the caller may read; "
                                    "its slide files are predicted, subfolders included")
    formats: list[Literal["geojson", "annotation"]] = Field(
        default_factory=list, max_length=2,
        description="exports besides the mask TIFF and predictions table: QuPath GeoJSON, DSA annotation")


class CohortSlidePublic(BaseModel):
    name: str = Field(description="the slide's result folder: its file stem (plus a hash when stems collide)")
    slide: str = Field(description="the slide file, as inside the cohort's folder")
    job: JobPublic = Field(description="the slide's job: state, progress, message (why it failed)")
    counts: dict[str, int] = Field(description="superpixels per predicted category, once predicted")
    downloads: dict[str, str] = Field(description="URL per file there is to download (mask, table, geojson, "
                                                  "annotation); add ?token=... in a browser")


class CohortSummary(BaseModel):
    job: JobPublic = Field(description="the cohort's job; progress = share of its slides that ended")
    epoch: int
    folder: str
    formats: list[str]


class CohortPublic(CohortSummary):
    slides: list[CohortSlidePublic]
