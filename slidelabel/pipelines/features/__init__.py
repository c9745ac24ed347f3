"""Per-superpixel feature extractors, found by name.

:data:`FEATURES` (a :class:`~slidelabel.registry.Registry`, built on first use) maps a name to an
extractor (:class:`FeatureExtractor`): the built-in ``color``, ``context``, ``tissue`` (the
default) and ``filterbank``, ``patch`` (masked RGB patches for the ``cnn`` classifier), ``cnn``
(EfficientNet-Lite0 embeddings) when its packages are installed, ``foundation`` (UNI, UNI2,
Phikon or Phikon-v2, chosen by ``SLIDELABEL_FOUNDATION_MODEL``) when its weights are found, plus
any that installed packages declare under the entry-point group :data:`ENTRY_POINT_GROUP` (a
broken one is logged and skipped).
"""

from __future__ import annotations

from slidelabel.pipelines.features.base import FeatureExtractor, SuperpixelPools
from slidelabel.pipelines.features.color import ColorFeatures
from slidelabel.pipelines.features.color import CHANNELS as COLOUR_CHANNELS
from slidelabel.pipelines.features.context import TEXTURE_CHANNELS, ContextFeatures
from slidelabel.pipelines.features.efficientnet import cnn_extractors
from slidelabel.pipelines.features.filterbank import FilterbankFeatures
from slidelabel.pipelines.features.foundation import foundation_extractors
from slidelabel.pipelines.features.neighbourhood import NeighbourhoodFeatures
from slidelabel.pipelines.features.patches import PatchExtractor, PatchFeatures
from slidelabel.registry import Registry

ENTRY_POINT_GROUP = "slidelabel.features"
#: The best measured on both development sets (MoNuSeg nuclei and the tissue mosaic) by the area
#: under the learning curve to 300 labels (docs/learning.md, "Defaults by evidence").
DEFAULT_EXTRACTOR = "tissue"
#: Pooled extractors give statistics per superpixel; patch extractors give a fixed-size patch.
Extractor = FeatureExtractor | PatchExtractor


def tissue_features() -> NeighbourhoodFeatures:
    """``tissue``: ``context``'s 121 features, then the means of its colour means and standard
    deviations and of its texture means around each superpixel at 2, 4 and 8 superpixel sizes."""
    columns = (*(f"{c}_mean" for c in COLOUR_CHANNELS), *(f"{c}_std" for c in COLOUR_CHANNELS),
               *(f"{c}_mean" for c in TEXTURE_CHANNELS))
    return NeighbourhoodFeatures("tissue", ContextFeatures(), columns)


#: What each built-in extractor computes, in the words the project page shows.
DESCRIPTIONS = {
    "color": "colour statistics of each superpixel and of a ring around it",
    "context": "colour and texture statistics of each superpixel and its surroundings",
    "tissue": "context, plus its means over the neighbourhood at 2, 4 and 8 superpixel sizes",
    "filterbank": "Gaussian filter-bank responses (smoothing, edges, blobs) at four scales",
    "patch": "masked RGB patches, for the cnn classifier",
    "cnn": "ImageNet EfficientNet-Lite0 embeddings pooled per superpixel",
    "foundation": "pathology foundation-model embeddings (UNI, UNI2-h, Phikon) from local weights",
}


def _built_in(registry: Registry[Extractor]) -> None:
    for extractor in (ColorFeatures(), ContextFeatures(), tissue_features(), FilterbankFeatures(), PatchFeatures(),
                      *cnn_extractors(), *foundation_extractors()):
        registry.add(extractor.name, extractor, description=DESCRIPTIONS.get(extractor.name, ""),
                     default=extractor.name == DEFAULT_EXTRACTOR)


FEATURES: Registry[Extractor] = Registry("feature extractor", ENTRY_POINT_GROUP, load=_built_in)


def get_extractor(name: str) -> Extractor:
    """The extractor registered as ``name``; :class:`ParameterError` listing the others if none."""
    return FEATURES.get(name)


__all__ = ["DEFAULT_EXTRACTOR", "ENTRY_POINT_GROUP", "FEATURES", "Extractor", "FeatureExtractor", "PatchExtractor", "SuperpixelPools", "get_extractor"]
