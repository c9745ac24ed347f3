"""``GET /registry``: what the server can compute with and read."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ChoicePublic(BaseModel):
    name: str
    description: str
    default: bool = Field(description="the choice a new project gets when it names none")
    dimensions: int | None = Field(None, description="feature extractors: the length of their vectors")


class RegistryPublic(BaseModel):
    features: list[ChoicePublic] = Field(description="feature extractors (imported-<name> features come on top)")
    models: list[ChoicePublic]
    strategies: list[ChoicePublic] = Field(description="certainty strategies that rank the guided queue")
    normalisations: list[ChoicePublic]
    slide_readers: list[ChoicePublic] = Field(description="large_image tile sources; descriptions list extensions")
    segment_formats: list[ChoicePublic] = Field(description="what segments can be imported from")
    feature_formats: list[ChoicePublic] = Field(description="what features can be imported from")
