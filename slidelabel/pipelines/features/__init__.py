"""Per-superpixel feature extractors, found by name.

:data:`FEATURES` maps a name to an extractor (:class:`FeatureExtractor`): the built-in ``color``
and ``filterbank``, ``patch`` (masked RGB patches for the ``cnn`` classifier), ``cnn``
(EfficientNet-Lite0 embeddings) when its packages are installed, ``foundation`` (UNI, UNI2,
Phikon or Phikon-v2, chosen by ``SLIDELABEL_FOUNDATION_MODEL``) when its weights are found, plus
any that installed packages declare under the entry-point group :data:`ENTRY_POINT_GROUP` (a
broken one is logged and skipped).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.base import FeatureExtractor, SuperpixelPools
from slidelabel.pipelines.features.color import ColorFeatures
from slidelabel.pipelines.features.color import CHANNELS as COLOUR_CHANNELS
from slidelabel.pipelines.features.context import TEXTURE_CHANNELS, ContextFeatures
from slidelabel.pipelines.features.efficientnet import cnn_extractors
from slidelabel.pipelines.features.filterbank import FilterbankFeatures
from slidelabel.pipelines.features.foundation import foundation_extractors
from slidelabel.pipelines.features.neighbourhood import NeighbourhoodFeatures
from slidelabel.pipelines.features.patches import PatchExtractor, PatchFeatures

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "slidelabel.features"
#: Pooled extractors give statistics per superpixel; patch extractors give a fixed-size patch.
Extractor = FeatureExtractor | PatchExtractor


def tissue_features() -> NeighbourhoodFeatures:
    """``tissue``: ``context``'s 121 features, then the means of its colour means and standard
    deviations and of its texture means around each superpixel at 2, 4 and 8 superpixel sizes."""
    columns = (*(f"{c}_mean" for c in COLOUR_CHANNELS), *(f"{c}_std" for c in COLOUR_CHANNELS),
               *(f"{c}_mean" for c in TEXTURE_CHANNELS))
    return NeighbourhoodFeatures("tissue", ContextFeatures(), columns)


def _registry() -> dict[str, Extractor]:
    built_in = (ColorFeatures(), ContextFeatures(), tissue_features(), FilterbankFeatures(), PatchFeatures(),
                *cnn_extractors(), *foundation_extractors())
    found: dict[str, Extractor] = {e.name: e for e in built_in}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            extractor = entry.load()()
        except Exception:  # a third-party plugin must not break the built-in ones
            logger.exception("feature extractor %r from %s failed to load", entry.name, entry.value)
            continue
        found.setdefault(entry.name, extractor)
    return found


FEATURES: dict[str, Extractor] = _registry()


def get_extractor(name: str) -> Extractor:
    """The extractor registered as ``name``; :class:`ParameterError` listing the others if none."""
    try:
        return FEATURES[name]
    except KeyError:
        raise ParameterError(f"unknown feature extractor {name!r}; registered: {', '.join(FEATURES)}") from None


__all__ = ["ENTRY_POINT_GROUP", "FEATURES", "Extractor", "FeatureExtractor", "PatchExtractor", "SuperpixelPools", "get_extractor"]
