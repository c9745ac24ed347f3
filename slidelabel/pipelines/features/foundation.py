"""Pathology foundation models as dense encoders: UNI, UNI2-h, Phikon and Phikon-v2, from local weights.

:data:`BACKBONES` (:mod:`~slidelabel.pipelines.features.foundation_backbones`) names each model,
how it loads and where its weights are published; nothing is ever downloaded. The weights folder
is the one passed in, else ``$SLIDELABEL_MODELS/<name>/``, else ``$SLIDELABEL_CACHE/models/<name>/``
(``~/.cache/slidelabel/models/<name>/``), else a Hugging Face cache snapshot of the published
repository. Loading waits for the first encode, so building the
feature registry only looks for the files, importing no torch.

Encoding (:class:`FoundationEncoder`) cuts the window into crops of the models' training size
(224 px) from its top-left corner; each crop's patch tokens, class and register tokens dropped,
form a ``(224 / p) x (224 / p)`` grid of cells. The crops of the last row and column, cut short by
the window's edge, are padded by reflecting their own pixels (never their neighbours', so that a
crop at the slide's edge is the same in every window that holds it).

Cells are anchored to the image, as a dense encoder's must be: ``grid_px`` is one crop, so every
window whose corner the driver puts on that grid cuts its crops from the same image pixels. A ViT
token sees its whole crop, so only the cells of a crop cut short by the window's far edge differ
between windows; they lie within one crop of that edge, hence ``margin_px`` is one crop (224 px).

Speed (:mod:`~slidelabel.pipelines.features.foundation_runtime`): crops run in batches sized to the
free memory, under bfloat16 autocast on a GPU (and on a CPU with AMX), while a helper thread cuts
the next batch; one network per backbone, weights folder and device is loaded per process; crops
already encoded (the driver's windows overlap) are looked up by a digest of their pixels.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.dense import DenseEmbedding
from slidelabel.pipelines.features.foundation_backbones import (
    BACKBONES,
    Backbone,
    TimmBackbone,
    TokenNet,
    TransformersBackbone,
    VitArchitecture,
    get_backbone,
)
from slidelabel.pipelines.features.foundation_runtime import (
    LoadedNetwork,
    Precision,
    TokenCache,
    autocast_dtype,
    batch_crops_for,
    default_device,
    free_memory_bytes,
    loaded_network,
    prefetched,
)
from slidelabel.pipelines.torch_threads import torch_threads
from slidelabel.pipelines.weights import find_weights
from slidelabel.settings import Settings

if TYPE_CHECKING:
    import torch

__all__ = ["BACKBONES", "Backbone", "FoundationEncoder", "TimmBackbone", "TransformersBackbone", "VitArchitecture",
           "foundation_extractor", "foundation_extractors", "get_backbone", "weights_folder"]

logger = logging.getLogger(__name__)

#: The registry name of the extractor; the backbone's name is in its feature names.
EXTRACTOR_NAME = "foundation"
#: Torch threads while encoding on the CPU; the process's setting is restored afterwards.
ENCODE_THREADS = min(4, os.cpu_count() or 1)
#: Memory for the tokens of crops already encoded (MiB): 320 crops of ViT-L/16, 170 of UNI2-h.
TOKEN_CACHE_MB = 256


def weights_folder(backbone: Backbone, weights_dir: Path | None = None) -> Path:
    """The folder holding ``backbone``'s weights: ``weights_dir`` if given, else the first of
    ``$SLIDELABEL_MODELS/<name>``, the cache's ``models/<name>`` and a Hugging Face cache snapshot
    that has them (:func:`slidelabel.pipelines.weights.find_weights`). :class:`ParameterError`
    saying where to put which files if none has."""
    return find_weights(backbone, weights_dir, kind="foundation model")


def _reflected(rgb_h_w_3: np.ndarray, side_px: int) -> np.ndarray:
    """A ``side_px`` square: the image, padded at its bottom and right by reflecting its own pixels."""
    height, width = rgb_h_w_3.shape[:2]
    return np.pad(rgb_h_w_3, ((0, side_px - height), (0, side_px - width), (0, 0)), mode="reflect")


class FoundationEncoder:
    """A :class:`~slidelabel.pipelines.features.dense.DenseEncoder` over a foundation backbone.

    Parameters
    ----------
    backbone : Backbone
        Which model (an entry of :data:`BACKBONES`, or one built like them).
    weights_dir : Path, optional
        Folder of its weights; None looks where :func:`weights_folder` says. Read on first encode,
        once per process (:func:`~slidelabel.pipelines.features.foundation_runtime.loaded_network`).
    device : str, optional
        Torch device; None is ``cuda`` when available, else ``cpu``.
    batch_crops : int, optional
        Crops per forward pass; None sizes batches to the device's free memory on first encode
        (:func:`~slidelabel.pipelines.features.foundation_runtime.batch_crops_for`).
    n_threads : int, optional
        Torch threads on the CPU.
    precision : {"auto", "float32", "bfloat16", "float16"}
        Autocast dtype (:func:`~slidelabel.pipelines.features.foundation_runtime.autocast_dtype`);
        the features are float32 whatever it is.
    cache_mb : int
        Memory for the tokens of crops already encoded (MiB; 0 keeps none): the driver's windows
        overlap by a crop on each side, so about three in four crops of a tile come again.
    """

    def __init__(self, backbone: Backbone, weights_dir: Path | None = None, *, device: str | None = None,
                 batch_crops: int | None = None, n_threads: int = ENCODE_THREADS,
                 precision: Precision = "auto", cache_mb: int = TOKEN_CACHE_MB) -> None:
        if backbone.crop_px % backbone.patch_px:
            raise ValueError(f"{backbone.name}: crop {backbone.crop_px} px is not a multiple of "
                             f"patch {backbone.patch_px} px")
        if (batch_crops is not None and batch_crops < 1) or n_threads < 1:
            raise ParameterError(f"batch_crops and n_threads must be >= 1, got {batch_crops} and {n_threads}")
        self.backbone = backbone
        self.name = backbone.name
        self.channels = backbone.channels
        self.stride_px = backbone.patch_px
        self.grid_px = self.margin_px = backbone.crop_px
        self.weights_dir = weights_dir
        self.batch_crops = batch_crops
        self.n_threads = n_threads
        self.precision = precision
        self._device = device
        self.tokens = TokenCache(cache_mb * 2**20)
        self._tokens_of: LoadedNetwork | None = None
        #: Crops run through the network so far (those found in :attr:`tokens` are not).
        self.crops_encoded = 0

    def __repr__(self) -> str:
        return f"FoundationEncoder({self.name!r}, weights_dir={self.weights_dir!r})"

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = default_device()
        return self._device

    def network(self) -> TokenNet:
        """The network, loaded on first use in this process (shared by every encoder of the same
        backbone, weights folder and device)."""
        return self._loaded().net

    def _loaded(self) -> LoadedNetwork:
        folder = weights_folder(self.backbone, self.weights_dir)

        def load() -> TokenNet:
            logger.info("loading foundation model %s from %s onto %s", self.name, folder, self.device)
            return self.backbone.load(folder, self.device)

        return loaded_network(self.backbone, folder, self.device, load)

    def crops_per_batch(self) -> int:
        """``batch_crops``; if None, the batch that the device's free memory held on first call."""
        if self.batch_crops is None:
            import torch

            dtype = autocast_dtype(self.device, self.precision)
            value_bytes = 4 if dtype is None else dtype.itemsize
            self.batch_crops = batch_crops_for(self.backbone.crop_bytes(value_bytes), free_memory_bytes(self.device),
                                               torch.device(self.device).type)
        return self.batch_crops

    def encode(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        """float32 ``(ceil(H / p), ceil(W / p), K)`` patch features of a uint8 ``(H, W, 3)`` window,
        ``p`` = :attr:`stride_px`: cell ``(i, j)`` covers pixels ``[i p, (i + 1) p) x [j p, (j + 1) p)``."""
        if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8 or 0 in rgb_H_W_3.shape:
            raise ValueError(f"expected a non-empty (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
        import torch

        patch, crop = self.stride_px, self.backbone.crop_px
        height, width = rgb_H_W_3.shape[:2]
        cells = crop // patch
        out_h_w_K = np.empty((math.ceil(height / crop) * cells, math.ceil(width / crop) * cells, self.channels),
                             np.float32)
        loaded = self._loaded()
        if self._tokens_of is not loaded:  # new weights: the crops' tokens change
            self.tokens.clear()
            self._tokens_of = loaded
        dtype = autocast_dtype(self.device, self.precision)
        on_gpu = torch.device(self.device).type == "cuda"
        # From a GPU, tokens come back in the autocast dtype: half the bytes to copy, rounded no
        # coarser than every block's output already was.
        wire = dtype if on_gpu and dtype is not None else torch.float32

        def place(top: int, left: int, tokens_c_c_K: np.ndarray) -> None:
            out_h_w_K[top // patch : top // patch + cells, left // patch : left // patch + cells] = tokens_c_c_K

        repeats: list[tuple[int, int, bytes]] = []  # crops equal to one already in a batch of this window
        batches = prefetched(self._new_crops(rgb_H_W_3, place, repeats, pin=on_gpu))
        computed: dict[bytes, np.ndarray] = {}
        # One forward pass at a time per network: a batch is sized to the free memory, and the
        # driver's other threads read and decode tiles meanwhile.
        with closing(batches), loaded.lock, torch_threads(self.n_threads), torch.inference_mode(), \
                torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=dtype is not None):
            for batch, crops_B_H_W_3 in batches:
                unit_B_3_H_W = crops_B_H_W_3.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
                tokens_B_c_c_K = loaded.net(unit_B_3_H_W).to(wire).cpu().float().numpy()
                if tokens_B_c_c_K.shape[1:] != (cells, cells, self.channels):
                    raise ParameterError(f"{self.name} gave tokens {tokens_B_c_c_K.shape[1:]}, "
                                         f"expected {(cells, cells, self.channels)}")
                self.crops_encoded += len(batch)
                for (top, left, key), tokens_c_c_K in zip(batch, tokens_B_c_c_K):
                    place(top, left, tokens_c_c_K)
                    if key is not None:
                        computed[key] = tokens_c_c_K.copy()  # a copy: the batch's array is not kept whole
                        self.tokens.put(key, computed[key])
        for top, left, key in repeats:
            place(top, left, computed[key])
        return out_h_w_K[: math.ceil(height / patch), : math.ceil(width / patch)]

    def _new_crops(self, rgb_H_W_3: np.ndarray, place: Callable[[int, int, np.ndarray], None],
                   repeats: list[tuple[int, int, bytes]], *, pin: bool) -> Iterator[tuple[list, torch.Tensor]]:
        """Batches ``([(top, left, key)...], uint8 crops (B, H, W, 3))`` of the window's crops that
        :attr:`tokens` lacks (every crop, with None keys, when it keeps nothing), in raster order;
        a crop it has is placed at once, and one equal to a crop already batched is added to
        ``repeats``. Runs in the prefetch thread."""
        import torch

        crop, size = self.backbone.crop_px, self.crops_per_batch()
        height, width = rgb_H_W_3.shape[:2]

        def stacked(batch: list[tuple[int, int, bytes, np.ndarray]]) -> tuple[list, torch.Tensor]:
            crops_B_H_W_3 = torch.from_numpy(np.stack([c for *_, c in batch]))
            return [b[:3] for b in batch], crops_B_H_W_3.pin_memory() if pin else crops_B_H_W_3

        batched: set[bytes | None] = set()
        batch: list[tuple[int, int, bytes, np.ndarray]] = []
        for top, left in itertools.product(range(0, height, crop), range(0, width, crop)):
            crop_h_w_3 = _reflected(rgb_H_W_3[top : top + crop, left : left + crop], crop)
            key = TokenCache.key(crop_h_w_3) if self.tokens.max_bytes else None  # no cache: no digests
            known = None if key is None else self.tokens.get(key)
            if known is not None:
                place(top, left, known)
            elif key is not None and key in batched:
                repeats.append((top, left, key))
            else:
                batched.add(key)
                batch.append((top, left, key, crop_h_w_3))
                if len(batch) == size:
                    yield stacked(batch)
                    batch = []
        if batch:
            yield stacked(batch)


def foundation_extractor(backbone: str, weights_dir: Path | None = None) -> DenseEmbedding:
    """The ``foundation`` extractor: per superpixel, the mean of ``backbone``'s patch features over
    its pixels and its context ring (names ``<backbone>_<k>_mean``, so that feature files of
    different backbones never mix). Weights are read on first use."""
    return DenseEmbedding(EXTRACTOR_NAME, FoundationEncoder(get_backbone(backbone), weights_dir))


def foundation_extractors() -> list[DenseEmbedding]:
    """The ``foundation`` extractor of :class:`~slidelabel.settings.Settings` ``foundation_model``
    (``$SLIDELABEL_FOUNDATION_MODEL``, default ``uni``) in a list, or an empty list, logged with
    what is missing, when the name is unknown, its weights are not found (see
    :func:`weights_folder`) or a package it needs is not installed. Imports no torch."""
    settings = Settings()
    name = settings.foundation_model
    try:
        backbone = get_backbone(name)
        weights_folder(backbone)
        missing = [p for p in backbone.packages if importlib.util.find_spec(p) is None]
        if missing:
            raise ParameterError(f"foundation model {name!r} needs the packages {', '.join(missing)}")
    except ParameterError as error:
        # Most installations have no foundation weights: only say so loudly when one was asked for.
        (logger.warning if "foundation_model" in settings.model_fields_set else logger.info)(
            "feature extractor %r skipped: %s", EXTRACTOR_NAME, error)
        return []
    return [foundation_extractor(name)]
