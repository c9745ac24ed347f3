"""Fixtures of the foundation-model tests: tiny random models of each backbone's architecture,
saved the way the real ones are published, and a MoNuSeg image to run them on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slidelabel.pipelines.features.foundation import BACKBONES, Backbone
from slidelabel.pipelines.features.vit import VisionTransformer

NAMES = tuple(BACKBONES)  # uni, uni2, phikon, phikon_v2


def _tiny_timm(name: str, folder: Path) -> Backbone:
    """A depth-2 model of the backbone's layout (its patch, registers, MLP kind), saved as
    timm's ``pytorch_model.bin``; LayerScale set well away from 1e-5 so that blocks count, and
    tokens and position embeddings random so that they count too."""
    real = BACKBONES[name]
    tiny = dataclasses.replace(real, vit=dataclasses.replace(real.vit, embed_dim=48, depth=2, num_heads=2))
    torch.manual_seed(0)
    net = VisionTransformer(tiny.vit)
    with torch.no_grad():
        for key, param in net.named_parameters():
            if key.endswith("gamma"):
                param.uniform_(0.5, 1.5)
            elif key in ("cls_token", "reg_token", "pos_embed"):
                param.normal_(std=0.5)
    folder.mkdir(parents=True)
    torch.save(net.state_dict(), folder / "pytorch_model.bin")
    return tiny


def _tiny_transformers(name: str, folder: Path) -> Backbone:
    """A depth-2, width-32 model of the backbone's transformers class, ``save_pretrained``."""
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

    torch.manual_seed(0)
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=224, patch_size=16)
    if name == "phikon":
        model = ViTModel(ViTConfig(intermediate_size=64, **shape))
    else:
        model = Dinov2Model(Dinov2Config(layerscale_value=0.7, **shape))
    model.save_pretrained(folder)
    return dataclasses.replace(BACKBONES[name], channels=32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Backbone, Path]]:
    """Per backbone name: (its tiny twin, the folder of its weights)."""
    root = tmp_path_factory.mktemp("models")
    made = {}
    for name in NAMES:
        folder = root / name
        make = _tiny_timm if name.startswith("uni") else _tiny_transformers
        made[name] = (make(name, folder), folder)
    return made


@pytest.fixture(scope="module")
def rgb(monuseg_dir: Path) -> np.ndarray:
    path = sorted((monuseg_dir / "images").glob("*.png"))[0]
    return np.asarray(Image.open(path).convert("RGB"))  # 1000 x 1000
