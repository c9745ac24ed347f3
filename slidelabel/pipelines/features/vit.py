"""A plain-torch Vision Transformer whose ``state_dict`` has timm's ``VisionTransformer`` keys.

Published timm checkpoints (UNI, UNI2-h) load into :class:`VisionTransformer` with
``load_state_dict(strict=True)`` without timm installed. Only what inference needs is here: no
dropout, no drop path, no classifier head (the checkpoints are saved with ``num_classes=0``, so
they hold none). Modules that timm keeps as ``nn.Identity`` (``norm_pre``, ``fc_norm``, the q/k
norms, the MLP's inner norm) have no parameters and are left out; the keys are::

    cls_token (1, 1, D)            reg_token (1, R, D), only with registers
    pos_embed (1, N [+ 1 + R], D)  the prefix rows only without ``no_embed_class``
    patch_embed.proj.{weight, bias}
    blocks.{i}.norm1.*  blocks.{i}.attn.qkv.*  blocks.{i}.attn.proj.*  blocks.{i}.ls1.gamma
    blocks.{i}.norm2.*  blocks.{i}.mlp.fc1.*   blocks.{i}.mlp.fc2.*    blocks.{i}.ls2.gamma
    norm.{weight, bias}

The shape comes from a :class:`~slidelabel.pipelines.features.foundation_backbones.VitArchitecture`. A new
network's parameters are placeholders (torch's default initialisation, zero tokens and position
embeddings): the weights come from a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from slidelabel.pipelines.features.foundation_backbones import VitArchitecture

__all__ = ["VisionTransformer", "load_state_dict_file", "resample_pos_embed"]


class _PatchEmbed(nn.Module):
    def __init__(self, arch: VitArchitecture) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, arch.embed_dim, kernel_size=arch.patch_px, stride=arch.patch_px)


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x_B_T_D: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x_B_T_D.shape
        qkv_B_T_3D = self.qkv(x_B_T_D)
        # timm's packing: q, k, v along the output, heads within each.
        qkv_B_T_3_H_d = qkv_B_T_3D.reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        qkv_3_B_H_T_d = qkv_B_T_3_H_d.permute(2, 0, 3, 1, 4)
        out_B_H_T_d = F.scaled_dot_product_attention(*qkv_3_B_H_T_d.unbind(0))
        return self.proj(out_B_H_T_d.transpose(1, 2).reshape(batch, tokens, dim))


class _LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Mlp(nn.Module):
    """timm's ``Mlp`` (GELU) or, with ``swiglu``, its ``SwiGLUPacked``: ``silu(a) * b`` for the
    two halves ``a, b`` of ``fc1``'s output, gate first."""

    def __init__(self, dim: int, hidden: int, swiglu: bool) -> None:
        super().__init__()
        self.swiglu = swiglu
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden // 2 if swiglu else hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.swiglu:
            gate, value = x.chunk(2, dim=-1)
            x = F.silu(gate) * value
        else:
            x = F.gelu(x)
        return self.fc2(x)


class _Block(nn.Module):
    """Pre-norm block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, arch: VitArchitecture) -> None:
        super().__init__()
        dim = arch.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=arch.norm_eps)
        self.attn = _Attention(dim, arch.num_heads)
        self.ls1 = _LayerScale(dim, arch.init_values) if arch.init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=arch.norm_eps)
        self.mlp = _Mlp(dim, arch.mlp_hidden, arch.swiglu)
        self.ls2 = _LayerScale(dim, arch.init_values) if arch.init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def resample_pos_embed(pos_1_N_D: torch.Tensor, new_hw: tuple[int, int], old_hw: tuple[int, int],
                       n_prefix: int) -> torch.Tensor:
    """Position embeddings of an ``old_hw`` patch grid (after ``n_prefix`` rows that are kept as
    they are) resampled to a ``new_hw`` grid: ``(1, n_prefix + h * w, D)``.

    Bicubic with antialiasing, as timm's ``resample_abs_pos_embed`` (what ``dynamic_img_size``
    uses), so that features at other grid sizes match timm's; the same grid returns the input.
    """
    if tuple(new_hw) == tuple(old_hw):
        return pos_1_N_D
    prefix_1_P_D, grid_1_N_D = pos_1_N_D[:, :n_prefix], pos_1_N_D[:, n_prefix:]
    dim = grid_1_N_D.shape[-1]
    grid_1_D_h_w = grid_1_N_D.float().reshape(1, *old_hw, dim).permute(0, 3, 1, 2)
    grid_1_D_h_w = F.interpolate(grid_1_D_h_w, size=new_hw, mode="bicubic", antialias=True)
    grid_1_N_D = grid_1_D_h_w.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_1_N_D.dtype)
    return torch.cat([prefix_1_P_D, grid_1_N_D], dim=1)


class VisionTransformer(nn.Module):
    """timm's ``VisionTransformer`` with ``class_token=True``, ``global_pool='token'``,
    ``dynamic_img_size=True`` and ``num_classes=0``, reduced to :meth:`patch_tokens`."""

    def __init__(self, arch: VitArchitecture) -> None:
        super().__init__()
        if arch.img_px % arch.patch_px or arch.embed_dim % arch.num_heads:
            raise ValueError(f"img_px must be a multiple of patch_px and embed_dim of num_heads: {arch}")
        self.arch = arch
        dim = arch.embed_dim
        self.n_prefix = 1 + arch.reg_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, arch.reg_tokens, dim)) if arch.reg_tokens else None
        embedded = arch.grid**2 + (0 if arch.no_embed_class else self.n_prefix)
        self.pos_embed = nn.Parameter(torch.zeros(1, embedded, dim))
        self.patch_embed = _PatchEmbed(arch)
        self.blocks = nn.Sequential(*(_Block(arch) for _ in range(arch.depth)))
        self.norm = nn.LayerNorm(dim, eps=arch.norm_eps)

    def _tokens(self, patches_B_h_w_D: torch.Tensor) -> torch.Tensor:
        """Prefix tokens (class, registers) and position-embedded patch tokens, as timm's ``_pos_embed``."""
        batch, height, width, dim = patches_B_h_w_D.shape
        n_embedded_prefix = 0 if self.arch.no_embed_class else self.n_prefix
        pos_1_N_D = resample_pos_embed(self.pos_embed, (height, width), (self.arch.grid, self.arch.grid),
                                       n_embedded_prefix)
        prefix = [self.cls_token] + ([self.reg_token] if self.reg_token is not None else [])
        prefix_B_P_D = torch.cat([p.expand(batch, -1, -1) for p in prefix], dim=1)
        x_B_N_D = patches_B_h_w_D.reshape(batch, height * width, dim)
        if self.arch.no_embed_class:
            return torch.cat([prefix_B_P_D, x_B_N_D + pos_1_N_D], dim=1)
        return torch.cat([prefix_B_P_D, x_B_N_D], dim=1) + pos_1_N_D

    def patch_tokens(self, pixels_B_3_H_W: torch.Tensor) -> torch.Tensor:
        """Final-norm patch tokens ``(B, H / p, W / p, D)`` of normalised images whose sides are
        multiples of the patch size ``p``; class and register tokens are dropped."""
        if pixels_B_3_H_W.shape[-1] % self.arch.patch_px or pixels_B_3_H_W.shape[-2] % self.arch.patch_px:
            raise ValueError(f"image sides must be multiples of {self.arch.patch_px} px, "
                             f"got {tuple(pixels_B_3_H_W.shape)}")
        patches_B_h_w_D = self.patch_embed.proj(pixels_B_3_H_W).permute(0, 2, 3, 1)
        tokens_B_T_D = self.norm(self.blocks(self._tokens(patches_B_h_w_D)))
        return tokens_B_T_D[:, self.n_prefix :].reshape(patches_B_h_w_D.shape)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or of a torch pickle (``pytorch_model.bin``), on the CPU.

    Pickles load with ``weights_only=True``: a downloaded file cannot run code.
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)

