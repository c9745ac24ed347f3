"""What this server can compute with and read, listed for clients: every registry's entries.

The CLI, the API (``GET /registry``) and the web client offer these names and take their defaults
from here, rather than copying them.
"""

from __future__ import annotations

from dataclasses import dataclass

from slidelabel.registry import Registry


@dataclass(frozen=True)
class Choice:
    """One registered item: its ``name``, a one-line ``description``, whether it is the
    ``default``, and for feature extractors the ``dimensions`` of their vectors."""

    name: str
    description: str
    default: bool
    dimensions: int | None = None


def _registries() -> dict[str, Registry]:
    from slidelabel.pipelines.features import FEATURES
    from slidelabel.pipelines.importers import FEATURE_FORMATS, SEGMENT_FORMATS
    from slidelabel.pipelines.models import MODELS
    from slidelabel.pipelines.normalisation import NORMALISATIONS
    from slidelabel.pipelines.slide_readers import SLIDE_READERS
    from slidelabel.pipelines.strategies import STRATEGIES

    return {"features": FEATURES, "models": MODELS, "strategies": STRATEGIES, "normalisations": NORMALISATIONS,
            "slide_readers": SLIDE_READERS, "segment_formats": SEGMENT_FORMATS, "feature_formats": FEATURE_FORMATS}


def registries() -> dict[str, list[Choice]]:
    """Each registry's entries in registration order, by what clients call the registry."""
    listed = {}
    for kind, registry in _registries().items():
        listed[kind] = [Choice(entry.name, entry.description, entry.default,
                               len(registry[entry.name].channel_names()) if kind == "features" else None)
                        for entry in registry.entries()]
    return listed


def registry_of(kind: str) -> Registry:
    """The registry clients call ``kind`` ("features", "models", ...)."""
    return _registries()[kind]
