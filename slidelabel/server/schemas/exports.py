"""Bodies of the export and import routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ImportReport(BaseModel):
    """What an import did."""

    model_config = ConfigDict(from_attributes=True)

    format: str = Field(description="geojson or annotation (Digital Slide Archive)")
    shapes: int = Field(description="classified polygons read")
    empty_shapes: int = Field(description="polygons that held no superpixel centroid")
    labelled: dict[str, int] = Field(description="superpixels labelled per category name")
    changed: int = Field(description="labels that changed (the rest already had that category)")
    unchanged: int
    created_categories: list[str]
    skipped: dict[str, int] = Field(description="features or elements left out, by reason")
