"""Foundation-model encoders: tiny random models of each backbone's architecture (``tiny`` in
conftest.py), saved the way the real ones are published, loaded and run through the real code on a
MoNuSeg image (``rgb``)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features.dense import DenseEmbedding
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.features.foundation import (
    BACKBONES,
    EXTRACTOR_NAME,
    Backbone,
    FoundationEncoder,
    foundation_extractor,
    foundation_extractors,
    weights_folder,
)
from slidelabel.pipelines.features.vit import VisionTransformer, resample_pos_embed
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array

NAMES = tuple(BACKBONES)  # uni, uni2, phikon, phikon_v2: the tiny models of conftest.py


def _timm_keys(depth: int, registers: bool) -> set[str]:
    """The state-dict keys of timm's VisionTransformer(num_classes=0, init_values=...), as published."""
    block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
             "mlp.fc2.bias", "ls2.gamma"]
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    keys |= {f"blocks.{i}.{k}" for i in range(depth) for k in block}
    return keys | ({"reg_token"} if registers else set())


@pytest.fixture(scope="module")
def encoders(tiny: dict[str, tuple[Backbone, Path]]) -> dict[str, FoundationEncoder]:
    # No token cache: windows that share crops must agree because the network computes the same.
    return {name: FoundationEncoder(backbone, folder, device="cpu", n_threads=1, cache_mb=0)
            for name, (backbone, folder) in tiny.items()}


@pytest.fixture(scope="module")
def whole(encoders: dict[str, FoundationEncoder], rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Each tiny encoder's map of the whole 1000 x 1000 image."""
    return {name: encoder.encode(rgb) for name, encoder in encoders.items()}


def test_published_architectures() -> None:
    uni, uni2 = BACKBONES["uni"], BACKBONES["uni2"]
    with torch.device("meta"):
        sizes = {name: sum(p.numel() for p in VisionTransformer(b.vit).parameters()) for name, b in
                 (("uni", uni), ("uni2", uni2))}
    assert round(sizes["uni"] / 1e6, 1) == 303.4 and round(sizes["uni2"] / 1e6) == 681  # as published
    assert uni2.vit.mlp_hidden == 8192 and (uni2.channels, uni2.patch_px) == (1536, 14)
    assert [(BACKBONES[n].channels, BACKBONES[n].patch_px) for n in NAMES] == [(1024, 16), (1536, 14), (768, 16), (1024, 16)]


@pytest.mark.parametrize("name", NAMES)
def test_encode_shapes_and_determinism(name: str, encoders: dict[str, FoundationEncoder],
                                       whole: dict[str, np.ndarray], rgb: np.ndarray) -> None:
    encoder = encoders[name]
    p, k = encoder.stride_px, encoder.channels
    assert whole[name].shape == (math.ceil(1000 / p), math.ceil(1000 / p), k) and whole[name].dtype == np.float32
    assert np.isfinite(whole[name]).all() and whole[name].std() > 0.1
    for height, width in ((250, 300), (37, 100), (1, 1)):
        assert encoder.encode(rgb[:height, :width]).shape == (math.ceil(height / p), math.ceil(width / p), k)
    window = rgb[:250, :300]
    np.testing.assert_array_equal(encoder.encode(window), encoder.encode(window))
    one_by_one = FoundationEncoder(encoder.backbone, encoder.weights_dir, device="cpu", batch_crops=1, n_threads=1)
    np.testing.assert_allclose(one_by_one.encode(window), encoder.encode(window), atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_cells_are_anchored_to_the_image(name: str, encoders: dict[str, FoundationEncoder],
                                         whole: dict[str, np.ndarray], rgb: np.ndarray) -> None:
    """The DenseEncoder contract: windows with corners on grid_px agree on cells margin_px inside both."""
    encoder = encoders[name]
    p, grid, margin = encoder.stride_px, encoder.grid_px, encoder.margin_px
    assert grid % p == 0 and (grid, margin) == (224, 224)
    window = encoder.encode(rgb[grid:, grid:])
    inside = slice((grid + margin) // p, (1000 - margin) // p)  # image cells margin_px inside both
    shifted = slice(inside.start - grid // p, inside.stop - grid // p)
    assert inside.stop - inside.start >= 20
    np.testing.assert_allclose(window[shifted, shifted], whole[name][inside, inside], atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_crops_land_where_they_were_cut(name: str, encoders: dict[str, FoundationEncoder],
                                        whole: dict[str, np.ndarray], rgb: np.ndarray) -> None:
    encoder = encoders[name]
    p, cells = encoder.stride_px, 224 // encoder.stride_px
    # Two regular crops, cut out alone: the same cells as in the whole image.
    inner = encoder.encode(rgb[224:448, 224:672])
    np.testing.assert_allclose(inner, whole[name][cells : 2 * cells, cells : 3 * cells], atol=1e-4)
    # The 1000 px rows end in a crop cut short, padded with its own pixels only: alone, the same.
    short = encoder.encode(rgb[224:448, 896:])
    np.testing.assert_allclose(short, whole[name][cells : 2 * cells, 896 // p :], atol=1e-4)
    assert short.shape[1] == math.ceil(104 / p)


@pytest.mark.parametrize("name", ("uni", "uni2"))
def test_position_embeddings_follow_the_grid(name: str, tiny: dict[str, tuple[Backbone, Path]]) -> None:
    backbone, _ = tiny[name]
    net = VisionTransformer(backbone.vit).eval()
    n_prefix = 0 if backbone.vit.no_embed_class else 1 + backbone.vit.reg_tokens
    grid = backbone.vit.grid
    assert resample_pos_embed(net.pos_embed, (grid, grid), (grid, grid), n_prefix) is net.pos_embed
    flat = torch.cat([torch.randn(1, n_prefix, 48), torch.full((1, grid * grid, 48), 0.25)], dim=1)
    resampled = resample_pos_embed(flat, (5, 9), (grid, grid), n_prefix)
    assert resampled.shape == (1, n_prefix + 45, 48)
    torch.testing.assert_close(resampled[:, :n_prefix], flat[:, :n_prefix])
    torch.testing.assert_close(resampled[:, n_prefix:], torch.full((1, 45, 48), 0.25))
    p = backbone.patch_px
    with torch.inference_mode():
        assert net.patch_tokens(torch.randn(2, 3, 10 * p, 12 * p)).shape == (2, 10, 12, 48)
        with pytest.raises(ValueError, match="multiples"):
            net.patch_tokens(torch.randn(1, 3, 10 * p + 1, 12 * p))


@pytest.mark.parametrize("name", ("uni", "uni2"))
def test_timm_checkpoints_have_timm_keys(name: str, tiny: dict[str, tuple[Backbone, Path]]) -> None:
    backbone, folder = tiny[name]
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert set(state) == _timm_keys(2, registers=name == "uni2")
    grid = backbone.vit.grid
    assert state["pos_embed"].shape == ((1, grid**2, 48) if name == "uni2" else (1, 1 + grid**2, 48))
    assert name == "uni" or (state["reg_token"].shape, state["blocks.0.mlp.fc1.weight"].shape) == ((1, 8, 48), (256, 48))
    VisionTransformer(backbone.vit).load_state_dict(state, strict=True)


def _as_transformers_dinov2(state: dict[str, torch.Tensor], depth: int, no_embed_class: bool) -> dict[str, torch.Tensor]:
    """A timm-layout ViT state dict in the key layout of transformers' Dinov2WithRegistersModel
    (the same network: cls, registers, pre-norm LayerScale blocks, final norm); a class token
    without position embedding gets a zero one."""
    pos = state["pos_embed"]
    if no_embed_class:
        pos = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
    dim = pos.shape[-1]
    out = {"embeddings.cls_token": state["cls_token"], "embeddings.mask_token": torch.zeros(1, dim),
           "embeddings.position_embeddings": pos, "embeddings.register_tokens": state.get("reg_token", torch.zeros(1, 0, dim)),
           "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}
    for kind in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{kind}"] = state[f"patch_embed.proj.{kind}"]
        for i in range(depth):
            ours, theirs = f"blocks.{i}.", f"encoder.layer.{i}."
            q, k, v = state[ours + f"attn.qkv.{kind}"].chunk(3)
            fc1 = state[ours + f"mlp.fc1.{kind}"]
            gate, up = fc1.chunk(2)
            out |= {theirs + f"attention.q_proj.{kind}": q, theirs + f"attention.k_proj.{kind}": k,
                    theirs + f"attention.v_proj.{kind}": v, theirs + f"attention.o_proj.{kind}": state[ours + f"attn.proj.{kind}"],
                    theirs + f"norm1.{kind}": state[ours + f"norm1.{kind}"], theirs + f"norm2.{kind}": state[ours + f"norm2.{kind}"]}
            if no_embed_class:  # UNI2-h: SwiGLU, gate half first
                out |= {theirs + f"mlp.gate_proj.{kind}": gate, theirs + f"mlp.up_proj.{kind}": up,
                        theirs + f"mlp.down_proj.{kind}": state[ours + f"mlp.fc2.{kind}"]}
            else:
                out |= {theirs + f"mlp.fc1.{kind}": fc1, theirs + f"mlp.fc2.{kind}": state[ours + f"mlp.fc2.{kind}"]}
    for i in range(depth):
        for n in (1, 2):
            out[f"encoder.layer.{i}.layer_scale{n}.lambda1"] = state[f"blocks.{i}.ls{n}.gamma"]
    return out


@pytest.mark.parametrize("name", ("uni", "uni2"))
def test_timm_layout_computes_what_transformers_dinov2_computes(name: str, tiny: dict[str, tuple[Backbone, Path]],
                                                                rgb: np.ndarray) -> None:
    """An independent implementation of the same network: checks the qkv split, the SwiGLU gate
    half, the token order (class, registers, patches) and LayerScale, not only the key names."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    backbone, folder = tiny[name]
    arch = backbone.vit
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    # UNI's MLP is 4 x wide; transformers sizes a SwiGLU as 2/3 of hidden_size * mlp_ratio, so 4
    # also gives UNI2's 2 x 128 halves here.
    config = Dinov2WithRegistersConfig(
        hidden_size=arch.embed_dim, num_hidden_layers=arch.depth, num_attention_heads=arch.num_heads,
        image_size=arch.img_px, patch_size=arch.patch_px, num_register_tokens=arch.reg_tokens,
        use_swiglu_ffn=arch.swiglu, mlp_ratio=4, layer_norm_eps=arch.norm_eps)
    reference = Dinov2WithRegistersModel(config).eval()
    reference.load_state_dict(_as_transformers_dinov2(state, arch.depth, arch.no_embed_class), strict=True)
    net = VisionTransformer(arch).eval()
    net.load_state_dict(state, strict=True)
    image = torch.from_numpy(rgb[:224, :448].copy()).permute(2, 0, 1).float().div(255).unflatten(2, (2, 224))
    pixels_2_3_224_224 = image.permute(2, 0, 1, 3)  # the window's two crops side by side -> a batch of 2
    with torch.inference_mode():
        ours = net.patch_tokens(pixels_2_3_224_224)
        theirs = reference(pixel_values=pixels_2_3_224_224).last_hidden_state[:, 1 + arch.reg_tokens :]
    torch.testing.assert_close(ours.flatten(1, 2), theirs, atol=1e-4, rtol=1e-4)


def test_half_precision_safetensors_run_in_float32(tiny: dict[str, tuple[Backbone, Path]], tmp_path: Path,
                                                   whole: dict[str, np.ndarray], rgb: np.ndarray) -> None:
    from safetensors.torch import save_file

    uni, folder = tiny["uni"]
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    (tmp_path / "half").mkdir()
    save_file({k: v.half() for k, v in state.items()}, tmp_path / "half" / "model.safetensors")
    cells = FoundationEncoder(uni, tmp_path / "half", device="cpu", n_threads=1).encode(rgb[:224, :224])
    assert cells.dtype == np.float32
    np.testing.assert_allclose(cells, whole["uni"][:14, :14], atol=0.05)


def test_timm_files_must_match_the_layout(tiny: dict[str, tuple[Backbone, Path]], rgb: np.ndarray) -> None:
    uni, uni_folder = tiny["uni"]
    uni2, _ = tiny["uni2"]
    wrong = FoundationEncoder(dataclasses.replace(uni2, vit=dataclasses.replace(uni2.vit, patch_px=16)), uni_folder)
    with pytest.raises(ParameterError, match="missing reg_token") as error:
        wrong.encode(rgb[:32, :32])
    assert "mlp.fc1.weight" in str(error.value) and "MahmoodLab/UNI2-h" in str(error.value)


def test_transformers_folders_must_hold_the_model(tiny: dict[str, tuple[Backbone, Path]], rgb: np.ndarray) -> None:
    phikon_v2, _ = tiny["phikon_v2"]
    _, phikon_folder = tiny["phikon"]
    with pytest.raises(ParameterError, match="holds a vit model"):
        FoundationEncoder(phikon_v2, phikon_folder).encode(rgb[:32, :32])


def test_transformers_weights_must_all_be_there(tiny: dict[str, tuple[Backbone, Path]], tmp_path: Path,
                                                rgb: np.ndarray) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    phikon_v2, folder = tiny["phikon_v2"]
    shutil.copytree(folder, tmp_path / "partial")
    state = load_file(tmp_path / "partial" / "model.safetensors")
    del state["encoder.layer.1.mlp.fc2.weight"]
    save_file(state, tmp_path / "partial" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ParameterError, match="lacks phikon_v2 weights: encoder.layer.1.mlp.fc2.weight"):
        FoundationEncoder(phikon_v2, tmp_path / "partial").encode(rgb[:32, :32])


@pytest.fixture()
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment whose model folders and Hugging Face cache are all empty; returns its root."""
    import huggingface_hub.constants

    monkeypatch.setenv("SLIDELABEL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("SLIDELABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_missing_weights_say_what_to_get_and_where(no_weights: Path, rgb: np.ndarray) -> None:
    encoder = FoundationEncoder(BACKBONES["uni"])  # building costs nothing: no weights needed yet
    with pytest.raises(ParameterError) as error:
        encoder.encode(rgb[:32, :32])
    message = str(error.value)
    for part in ("pytorch_model.bin", str(no_weights / "models" / "uni"), str(no_weights / "cache" / "models" / "uni"),
                 "https://huggingface.co/MahmoodLab/UNI", "hf download MahmoodLab/UNI --local-dir"):
        assert part in message
    with pytest.raises(ParameterError, match="config.json and model.safetensors or") as error:
        weights_folder(BACKBONES["phikon_v2"], no_weights / "elsewhere")
    assert str(no_weights / "elsewhere") in str(error.value) and "licence" not in str(error.value)


def test_weights_are_found_in_the_models_folder_and_the_hf_cache(
        no_weights: Path, tiny: dict[str, tuple[Backbone, Path]]) -> None:
    import shutil

    uni, uni_folder = tiny["uni"]
    shutil.copytree(uni_folder, no_weights / "models" / "uni")
    assert weights_folder(uni) == no_weights / "models" / "uni"
    phikon, phikon_folder = tiny["phikon"]
    repo = no_weights / "hf" / "models--owkin--phikon"
    shutil.copytree(phikon_folder, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert weights_folder(phikon) == repo / "snapshots" / "0123abcd"
    assert FoundationEncoder(phikon, device="cpu").encode(np.zeros((20, 20, 3), np.uint8)).shape == (2, 2, 32)


def test_superpixel_features_do_not_depend_on_the_tiling(tiny: dict[str, tuple[Backbone, Path]], rgb: np.ndarray,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    backbone, folder = tiny["uni2"]  # patch 14: cells straddle 224 px tiles and their 128 px blocks
    extractor = DenseEmbedding(EXTRACTOR_NAME, FoundationEncoder(backbone, folder, device="cpu", n_threads=1))
    monkeypatch.setitem(FEATURES, EXTRACTOR_NAME, extractor)
    window = np.ascontiguousarray(rgb[:300, :400])
    labels = superpixel_array(window, SuperpixelParams(step=24))
    feats_N_D = features_of_array(window, labels, extractor=EXTRACTOR_NAME)
    assert extractor.channel_names()[0] == "uni2_000_mean" and feats_N_D.shape[1] == len(extractor.channel_names())
    assert np.isfinite(feats_N_D).all()
    np.testing.assert_allclose(features_of_array(window, labels, extractor=EXTRACTOR_NAME, tile_size=128), feats_N_D,
                               atol=1e-4)


def test_the_registered_extractor_follows_the_environment(no_weights: Path, tiny: dict[str, tuple[Backbone, Path]],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    assert foundation_extractors() == []  # no uni weights anywhere: not registered
    monkeypatch.setenv("SLIDELABEL_FOUNDATION_MODEL", "nope")
    assert foundation_extractors() == [] and "unknown foundation model 'nope'; known: uni, uni2, phikon, phikon_v2" in caplog.text
    with pytest.raises(ParameterError, match="unknown foundation model 'nope'"):
        foundation_extractor("nope")
    monkeypatch.setenv("SLIDELABEL_FOUNDATION_MODEL", "phikon")
    shutil.copytree(tiny["phikon"][1], no_weights / "models" / "phikon")
    [extractor] = foundation_extractors()
    assert (extractor.name, extractor.encoder.name) == ("foundation", "phikon")
    assert extractor.channel_names()[:2] == ["phikon_000_mean", "phikon_001_mean"]
