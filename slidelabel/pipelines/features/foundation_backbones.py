"""The pathology foundation models slidelabel runs (UNI, UNI2-h, Phikon, Phikon-v2): their
architectures, how each loads from a local weights folder, and :data:`BACKBONES` by name.

UNI and UNI2-h are timm checkpoints run by the plain-torch ViT of
:mod:`~slidelabel.pipelines.features.vit`; Phikon and Phikon-v2 are ``transformers`` model folders.
A loaded backbone is a :data:`TokenNet`: images in [0, 1] to final patch tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slidelabel.errors import ParameterError

if TYPE_CHECKING:
    import torch

__all__ = ["BACKBONES", "IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "TimmBackbone", "TokenNet", "TransformersBackbone",
           "VitArchitecture", "get_backbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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
