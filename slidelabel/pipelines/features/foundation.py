"""Pathology foundation models as dense encoders: UNI, UNI2-h, Phikon and Phikon-v2, from local weights.

:data:`BACKBONES` names each model and where its weights are published; nothing is ever
downloaded. The weights folder is the one passed in, else ``$SLIDELABEL_MODELS/<name>/``, else
``$SLIDELABEL_CACHE/models/<name>/`` (``~/.cache/slidelabel/models/<name>/``), else a Hugging Face
cache snapshot of the published repository. Loading waits for the first encode, so building the
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
the next batch; one network per backbone, weights folder and device is loaded per process.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.dense import DenseEmbedding
from slidelabel.pipelines.features.foundation_runtime import (
    LoadedNetwork,
    Precision,
    autocast_dtype,
    batch_crops_for,
    default_device,
    free_memory_bytes,
    loaded_network,
    prefetched,
)
from slidelabel.pipelines.torch_threads import torch_threads

if TYPE_CHECKING:
    import torch

__all__ = ["BACKBONES", "Backbone", "FoundationEncoder", "TimmBackbone", "TransformersBackbone", "VitArchitecture",
           "foundation_extractor", "foundation_extractors", "get_backbone", "weights_folder"]

logger = logging.getLogger(__name__)

#: The registry name of the extractor; the backbone's name is in its feature names.
EXTRACTOR_NAME = "foundation"
MODELS_ENV = "SLIDELABEL_MODELS"
BACKBONE_ENV = "SLIDELABEL_FOUNDATION_MODEL"
DEFAULT_BACKBONE = "uni"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Torch threads while encoding on the CPU; the process's setting is restored afterwards.
ENCODE_THREADS = min(4, os.cpu_count() or 1)

#: Images in [0, 1] (not yet normalised), ``(B, 3, H, W)``, to final patch tokens ``(B, H / p, W / p, K)``.
TokenNet = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class VitArchitecture:
    """The timm ``VisionTransformer`` keyword arguments that shape a checkpoint (see
    :mod:`slidelabel.pipelines.features.vit`, which builds the network).

    ``mlp_hidden = int(embed_dim * mlp_ratio)`` as in timm; with ``swiglu`` that is the width of
    the packed ``fc1`` (gate and value halves, timm's ``SwiGLUPacked``) and ``fc2`` takes half of
    it. ``init_values`` None means no LayerScale (no ``ls*.gamma`` keys).
    """

    img_px: int = 224
    patch_px: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    swiglu: bool = False
    reg_tokens: int = 0
    no_embed_class: bool = False
    init_values: float | None = None
    norm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        """Patches along each side of an ``img_px`` image: the grid ``pos_embed`` was trained on."""
        return self.img_px // self.patch_px

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def crop_bytes(self, value_bytes: int) -> int:
        """Bytes of activations one ``img_px`` crop holds at the peak of a block in inference:
        ``T (8 D + 2 mlp_hidden)`` values (residual, norm, q, k, v, attention and projection
        outputs, the MLP's two hidden tensors) plus two ``heads x T x T`` attention maps, for the
        attention kernels that build them, ``T`` tokens (patches, class and registers)."""
        tokens = self.grid**2 + 1 + self.reg_tokens
        values = tokens * (8 * self.embed_dim + 2 * self.mlp_hidden) + 2 * self.num_heads * tokens**2
        return values * value_bytes


def _normalised(tokens_of: TokenNet, mean_3: tuple[float, ...], std_3: tuple[float, ...], device: str) -> TokenNet:
    import torch

    mean_1_3_1_1 = torch.tensor(mean_3, device=device).view(1, 3, 1, 1)
    std_1_3_1_1 = torch.tensor(std_3, device=device).view(1, 3, 1, 1)
    return lambda unit_B_3_H_W: tokens_of((unit_B_3_H_W - mean_1_3_1_1) / std_1_3_1_1)


@dataclass(frozen=True)
class TimmBackbone:
    """A timm ViT checkpoint (a state dict in timm's key layout), run by the plain-torch ViT."""

    name: str
    repo_id: str
    vit: VitArchitecture
    gated: bool = False
    weight_files: tuple[str, ...] = ("pytorch_model.bin", "model.safetensors")
    config_files: tuple[str, ...] = ()
    packages: tuple[str, ...] = ("torch",)

    @property
    def channels(self) -> int:
        return self.vit.embed_dim

    @property
    def patch_px(self) -> int:
        return self.vit.patch_px

    @property
    def crop_px(self) -> int:
        return self.vit.img_px

    def crop_bytes(self, value_bytes: int) -> int:
        """Peak activation bytes per crop (:meth:`VitArchitecture.crop_bytes`)."""
        return self.vit.crop_bytes(value_bytes)

    def load(self, folder: Path, device: str) -> TokenNet:
        """The network with the weights of ``folder``; every key must match (strict)."""
        from slidelabel.pipelines.features.vit import VisionTransformer, load_state_dict_file

        import torch

        path = next(folder / f for f in self.weight_files if (folder / f).is_file())
        with torch.device("meta"):  # no random initialisation of weights about to be replaced
            net = VisionTransformer(self.vit)
        state = load_state_dict_file(path)
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        problems = [f"missing {k}" for k in sorted(expected.keys() - found.keys())]
        problems += [f"unexpected {k}" for k in sorted(found.keys() - expected.keys())]
        problems += [f"{k} is {found[k]}, not {expected[k]}" for k in sorted(expected.keys() & found.keys())
                     if found[k] != expected[k]]
        if problems:
            raise ParameterError(f"{path} does not hold {self.name} weights ({self.repo_id}): "
                                 f"{'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}")
        net.load_state_dict(state, strict=True, assign=True)
        return _normalised(net.float().eval().to(device).patch_tokens, IMAGENET_MEAN, IMAGENET_STD, device)


@dataclass(frozen=True)
class TransformersBackbone:
    """A Hugging Face ``transformers`` model folder (``config.json`` and weights).

    ``model_kwargs`` go to ``from_pretrained``, ``forward_kwargs`` to every forward call. The
    normalisation is the folder's ``preprocessor_config.json`` when it has one, else ImageNet's.
    """

    name: str
    repo_id: str
    model_types: tuple[str, ...]
    channels: int
    patch_px: int
    crop_px: int = 224
    gated: bool = False
    model_kwargs: tuple[tuple[str, object], ...] = ()
    forward_kwargs: tuple[tuple[str, object], ...] = ()
    weight_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
    config_files: tuple[str, ...] = ("config.json",)
    packages: tuple[str, ...] = ("torch", "transformers")

    def crop_bytes(self, value_bytes: int) -> int:
        """Peak activation bytes per crop, sized as the plain ViT of this width (heads of 64
        channels, MLP 4 x wide, as ViT-B and ViT-L) with up to 4 register tokens."""
        return VitArchitecture(img_px=self.crop_px, patch_px=self.patch_px, embed_dim=self.channels,
                               num_heads=max(self.channels // 64, 1), reg_tokens=4).crop_bytes(value_bytes)

    def load(self, folder: Path, device: str) -> TokenNet:
        """The model of ``folder``, refused unless its config is this backbone's and every weight
        it needs is in the file (transformers would silently initialise missing ones at random)."""
        import torch
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        shape = (config.model_type, config.hidden_size, config.patch_size)
        if shape[0] not in self.model_types or shape[1:] != (self.channels, self.patch_px):
            raise ParameterError(f"{folder} holds a {shape[0]} model of width {shape[1]} and patch {shape[2]} px, "
                                 f"not {self.name} ({self.repo_id}: {'/'.join(self.model_types)}, "
                                 f"width {self.channels}, patch {self.patch_px} px)")
        model, info = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                                output_loading_info=True, **dict(self.model_kwargs))
        # The mask token only replaces masked patches in pre-training; inference never reads it.
        missing = sorted(set(info["missing_keys"]) - {"embeddings.mask_token"})
        missing += sorted(map(str, info["mismatched_keys"]))
        if missing:
            raise ParameterError(f"{folder} lacks {self.name} weights: {', '.join(missing[:5])}")
        model = model.eval().to(device)
        forward_kwargs = dict(self.forward_kwargs)

        def tokens_of(pixels_B_3_H_W: torch.Tensor) -> torch.Tensor:
            batch, _, height, width = pixels_B_3_H_W.shape
            rows, cols = height // self.patch_px, width // self.patch_px
            hidden_B_T_K = model(pixel_values=pixels_B_3_H_W, **forward_kwargs).last_hidden_state
            # Class and register tokens come first: the last rows * cols tokens are the patches.
            return hidden_B_T_K[:, -rows * cols :].reshape(batch, rows, cols, -1)

        mean_3, std_3 = IMAGENET_MEAN, IMAGENET_STD
        if (folder / "preprocessor_config.json").is_file():
            processor = json.loads((folder / "preprocessor_config.json").read_text())
            mean_3, std_3 = tuple(processor.get("image_mean", mean_3)), tuple(processor.get("image_std", std_3))
        return _normalised(tokens_of, mean_3, std_3, device)


Backbone = TimmBackbone | TransformersBackbone

BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    # timm.create_model("vit_large_patch16_224", img_size=224, patch_size=16, init_values=1e-5,
    # num_classes=0, dynamic_img_size=True): ViT-L/16, 24 blocks, 16 heads, GELU MLP x4.
    TimmBackbone("uni", "MahmoodLab/UNI", VitArchitecture(
        patch_px=16, embed_dim=1024, depth=24, num_heads=16, init_values=1e-5), gated=True),
    # timm.create_model("vit_giant_patch14_224", img_size=224, patch_size=14, depth=24, num_heads=24,
    # init_values=1e-5, embed_dim=1536, mlp_ratio=2.66667 * 2, num_classes=0, no_embed_class=True,
    # mlp_layer=SwiGLUPacked, act_layer=SiLU, reg_tokens=8, dynamic_img_size=True): fc1 1536 -> 8192.
    TimmBackbone("uni2", "MahmoodLab/UNI2-h", VitArchitecture(
        patch_px=14, embed_dim=1536, depth=24, num_heads=24, mlp_ratio=2.66667 * 2, swiglu=True,
        reg_tokens=8, no_embed_class=True, init_values=1e-5), gated=True),
    # ViTModel.from_pretrained("owkin/phikon", add_pooling_layer=False): ViT-B/16, iBOT.
    TransformersBackbone("phikon", "owkin/phikon", ("vit",), channels=768, patch_px=16,
                         model_kwargs=(("add_pooling_layer", False),),
                         forward_kwargs=(("interpolate_pos_encoding", True),)),
    # AutoModel.from_pretrained("owkin/phikon-v2"): a Dinov2Model, ViT-L/16, DINOv2.
    TransformersBackbone("phikon_v2", "owkin/phikon-v2", ("dinov2", "dinov2_with_registers"),
                         channels=1024, patch_px=16),
)}


def get_backbone(name: str) -> Backbone:
    """The backbone registered as ``name``; :class:`ParameterError` listing the others if none."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ParameterError(f"unknown foundation model {name!r}; known: {', '.join(BACKBONES)}") from None


def _has_weights(backbone: Backbone, folder: Path) -> bool:
    return all((folder / f).is_file() for f in backbone.config_files) and any(
        (folder / f).is_file() for f in backbone.weight_files)


def _hf_snapshot(backbone: Backbone) -> Path | None:
    """The Hugging Face cache's snapshot of the backbone's repository, if one holds its weights."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for file in backbone.weight_files:
        cached = try_to_load_from_cache(backbone.repo_id, file)
        if isinstance(cached, str) and _has_weights(backbone, Path(cached).parent):
            return Path(cached).parent
    return None


def _default_folders(name: str) -> list[Path]:
    folders = [Path(os.environ[MODELS_ENV]) / name] if os.environ.get(MODELS_ENV) else []
    cache = Path(os.environ.get("SLIDELABEL_CACHE", Path.home() / ".cache" / "slidelabel"))
    return folders + [cache / "models" / name]


def weights_folder(backbone: Backbone, weights_dir: Path | None = None) -> Path:
    """The folder holding ``backbone``'s weights: ``weights_dir`` if given, else the first of
    ``$SLIDELABEL_MODELS/<name>``, the cache's ``models/<name>`` and a Hugging Face cache snapshot
    that has them. :class:`ParameterError` saying where to put which files if none has."""
    folders = [Path(weights_dir)] if weights_dir is not None else _default_folders(backbone.name)
    for folder in folders:
        if _has_weights(backbone, folder):
            return folder
    snapshot = _hf_snapshot(backbone) if weights_dir is None else None
    if snapshot is not None:
        return snapshot
    files = " and ".join([*backbone.config_files, " or ".join(backbone.weight_files)])
    where = ", ".join(map(str, folders))
    where += "" if weights_dir is not None else f" or the Hugging Face cache of {backbone.repo_id}"
    access = (f"accept its licence at https://huggingface.co/{backbone.repo_id} and log in (`hf auth login`), then "
              if backbone.gated else "")
    raise ParameterError(
        f"no weights for foundation model {backbone.name!r}: expected {files} in {where}. To get them, "
        f"{access}run `hf download {backbone.repo_id} --local-dir {folders[-1]}` (`huggingface-cli download` "
        f"in older huggingface_hub), or set {MODELS_ENV} to a folder holding {backbone.name}/."
    )


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
    """

    def __init__(self, backbone: Backbone, weights_dir: Path | None = None, *, device: str | None = None,
                 batch_crops: int | None = None, n_threads: int = ENCODE_THREADS,
                 precision: Precision = "auto") -> None:
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
        origins = [(top, left) for top in range(0, height, crop) for left in range(0, width, crop)]
        cells = crop // patch
        out_h_w_K = np.empty((math.ceil(height / crop) * cells, math.ceil(width / crop) * cells, self.channels),
                             np.float32)
        loaded = self._loaded()
        size = self.crops_per_batch()
        dtype = autocast_dtype(self.device, self.precision)
        on_gpu = torch.device(self.device).type == "cuda"

        def crops_of(batch: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], torch.Tensor]:
            crops_B_H_W_3 = torch.from_numpy(np.stack([_reflected(rgb_H_W_3[t : t + crop, l : l + crop], crop)
                                                       for t, l in batch]))
            return batch, crops_B_H_W_3.pin_memory() if on_gpu else crops_B_H_W_3

        batches = prefetched(crops_of(origins[first : first + size]) for first in range(0, len(origins), size))
        # One forward pass at a time per network: a batch is sized to the free memory, and the
        # driver's other threads read and decode tiles meanwhile.
        with closing(batches), loaded.lock, torch_threads(self.n_threads), torch.inference_mode(), \
                torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=dtype is not None):
            for batch, crops_B_H_W_3 in batches:
                unit_B_3_H_W = crops_B_H_W_3.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
                tokens_B_c_c_K = loaded.net(unit_B_3_H_W).float().cpu().numpy()
                if tokens_B_c_c_K.shape[1:] != (cells, cells, self.channels):
                    raise ParameterError(f"{self.name} gave tokens {tokens_B_c_c_K.shape[1:]}, "
                                         f"expected {(cells, cells, self.channels)}")
                for (top, left), tokens_c_c_K in zip(batch, tokens_B_c_c_K):
                    out_h_w_K[top // patch : top // patch + cells, left // patch : left // patch + cells] = tokens_c_c_K
        return out_h_w_K[: math.ceil(height / patch), : math.ceil(width / patch)]


def foundation_extractor(backbone: str, weights_dir: Path | None = None) -> DenseEmbedding:
    """The ``foundation`` extractor: per superpixel, the mean of ``backbone``'s patch features over
    its pixels and its context ring (names ``<backbone>_<k>_mean``, so that feature files of
    different backbones never mix). Weights are read on first use."""
    return DenseEmbedding(EXTRACTOR_NAME, FoundationEncoder(get_backbone(backbone), weights_dir))


def foundation_extractors() -> list[DenseEmbedding]:
    """The ``foundation`` extractor of ``$SLIDELABEL_FOUNDATION_MODEL`` (default ``uni``) in a list,
    or an empty list, logged with what is missing, when the name is unknown, its weights are not
    found (see :func:`weights_folder`) or a package it needs is not installed. Imports no torch."""
    name = os.environ.get(BACKBONE_ENV) or DEFAULT_BACKBONE
    try:
        backbone = get_backbone(name)
        weights_folder(backbone)
        missing = [p for p in backbone.packages if importlib.util.find_spec(p) is None]
        if missing:
            raise ParameterError(f"foundation model {name!r} needs the packages {', '.join(missing)}")
    except ParameterError as error:
        # Most installations have no foundation weights: only say so loudly when one was asked for.
        (logger.warning if BACKBONE_ENV in os.environ else logger.info)(
            "feature extractor %r skipped: %s", EXTRACTOR_NAME, error)
        return []
    return [foundation_extractor(name)]
