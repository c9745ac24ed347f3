"""Foundation models at speed: batches and prefetching give the features of one crop at a time,
bfloat16 stays near float32, one network is loaded per process, and batches follow free memory.
The tiny models (``tiny``) and the MoNuSeg image (``rgb``) are conftest.py's."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features import foundation as foundation_module
from slidelabel.pipelines.features.dense import DenseEmbedding
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.features.foundation import BACKBONES, EXTRACTOR_NAME, Backbone, FoundationEncoder, TimmBackbone
from slidelabel.pipelines.features.foundation_runtime import (
    MAX_BATCH_CROPS,
    autocast_dtype,
    batch_crops_for,
    clear_networks,
    prefetched,
)
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array

Tiny = dict[str, tuple[Backbone, Path]]


@pytest.mark.parametrize("name", ["uni", "uni2", "phikon_v2"])
@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_batches_and_prefetching_give_the_features_of_one_crop_at_a_time(name: str, precision: str, tiny: Tiny,
                                                                          rgb: np.ndarray) -> None:
    backbone, folder = tiny[name]
    window = rgb[:900, :1000]  # 5 x 5 crops, the last row and column cut short: batches of 3 end with one
    batched = FoundationEncoder(backbone, folder, device="cpu", n_threads=1, batch_crops=3, precision=precision)
    alone = FoundationEncoder(backbone, folder, device="cpu", n_threads=1, batch_crops=1, precision=precision)
    cells_h_w_K = batched.encode(window)
    np.testing.assert_allclose(cells_h_w_K, alone.encode(window), atol=1e-4)
    if precision == "float32" and isinstance(backbone, TimmBackbone):
        # Today's float32 path, written out: crop (1, 2) through the network by hand.
        from slidelabel.pipelines.features.foundation_backbones import IMAGENET_MEAN, IMAGENET_STD
        from slidelabel.pipelines.features.vit import VisionTransformer, load_state_dict_file

        net = VisionTransformer(backbone.vit).eval()
        net.load_state_dict(load_state_dict_file(folder / "pytorch_model.bin"))
        crop = torch.from_numpy(window[224:448, 448:672].copy()).permute(2, 0, 1)[None].float() / 255
        crop = (crop - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            tokens_c_c_K = net.patch_tokens(crop)[0].numpy()
        cells = 224 // backbone.patch_px
        np.testing.assert_allclose(cells_h_w_K[cells : 2 * cells, 2 * cells : 3 * cells], tokens_c_c_K, atol=1e-4)


@pytest.mark.parametrize("name", ["uni", "uni2"])
def test_bfloat16_features_stay_near_float32(name: str, tiny: Tiny, rgb: np.ndarray) -> None:
    backbone, folder = tiny[name]
    window = rgb[:448, :448]
    full = FoundationEncoder(backbone, folder, device="cpu", n_threads=1, precision="float32").encode(window)
    half = FoundationEncoder(backbone, folder, device="cpu", n_threads=1, precision="bfloat16").encode(window)
    assert half.dtype == np.float32 and not np.array_equal(half, full)  # bfloat16 did run
    assert np.abs(half - full).max() < 0.1 * full.std() and np.abs(half - full).mean() < 0.01 * full.std()
    cosine = (half * full).sum(-1) / np.linalg.norm(half, axis=-1) / np.linalg.norm(full, axis=-1)
    assert cosine.min() > 0.999


def test_precision_names_the_dtype() -> None:
    assert autocast_dtype("cpu", "float32") is None and autocast_dtype("cpu", "bfloat16") is torch.bfloat16
    assert autocast_dtype("cpu", "auto") in (None, torch.bfloat16)
    with pytest.raises(ParameterError, match="unknown precision 'half'; known: auto, float32, bfloat16, float16"):
        autocast_dtype("cpu", "half")


@pytest.fixture()
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders networks are loaded from, in order, from an empty per-process cache."""
    seen: list[Path] = []
    real_load = TimmBackbone.load

    def counting_load(self: TimmBackbone, folder: Path, device: str):  # noqa: ANN202
        seen.append(folder)
        return real_load(self, folder, device)

    clear_networks()
    monkeypatch.setattr(TimmBackbone, "load", counting_load)
    yield seen
    clear_networks()


def test_one_network_per_process_for_every_encoder_and_slide(tiny: Tiny, rgb: np.ndarray, loads: list[Path],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               monuseg_pair, tmp_path: Path) -> None:
    backbone, folder = tiny["uni"]
    extractor = DenseEmbedding(EXTRACTOR_NAME, FoundationEncoder(backbone, folder, device="cpu", n_threads=1))
    monkeypatch.setitem(FEATURES, EXTRACTOR_NAME, extractor)
    for index in (0, 1):  # two slides through the feature driver, several windows each
        image = np.ascontiguousarray(monuseg_pair(index)[0][:300, :400])
        labels = superpixel_array(image, SuperpixelParams(step=40))
        assert np.isfinite(features_of_array(image, labels, extractor=EXTRACTOR_NAME, tile_size=128)).all()
    second = FoundationEncoder(backbone, folder, device="cpu", n_threads=1)  # another job's encoder
    np.testing.assert_array_equal(second.encode(rgb[:224, :224]), extractor.encoder.encode(rgb[:224, :224]))
    assert loads == [folder]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    FoundationEncoder(backbone, copy, device="cpu", n_threads=1).encode(rgb[:16, :16])
    stat = (copy / "pytorch_model.bin").stat()
    os.utime(copy / "pytorch_model.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # new weights
    FoundationEncoder(backbone, copy, device="cpu", n_threads=1).encode(rgb[:16, :16])
    assert loads == [folder, copy, copy]


def test_threads_share_one_network(tiny: Tiny, rgb: np.ndarray, loads: list[Path]) -> None:
    backbone, folder = tiny["uni2"]
    encoder = FoundationEncoder(backbone, folder, device="cpu", n_threads=1)
    results: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: results.append(encoder.encode(rgb[:448, :448]))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [folder] and len(results) == 3
    np.testing.assert_array_equal(results[0], results[2])


def test_batch_size_follows_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    gib = 2**30
    uni, uni2 = BACKBONES["uni"], BACKBONES["uni2"]
    # ViT-L/16 in bfloat16: about 9 MB of activations per crop.
    assert 8e6 < uni.crop_bytes(2) < 10e6 and uni.crop_bytes(4) == 2 * uni.crop_bytes(2)
    assert uni2.crop_bytes(2) > uni.crop_bytes(2) > BACKBONES["phikon"].crop_bytes(2)
    sizes = [batch_crops_for(uni.crop_bytes(2), free * gib, "cuda") for free in (0, 0.01, 1, 4, 16, 78)]
    assert sizes == sorted(sizes) and sizes[0] == sizes[1] == 1 and sizes[-1] == MAX_BATCH_CROPS["cuda"]
    assert 100 < batch_crops_for(uni.crop_bytes(2), 4 * gib, "cuda") < 300  # half of 4 GiB / 9 MB
    assert batch_crops_for(uni2.crop_bytes(2), 4 * gib, "cuda") < batch_crops_for(uni.crop_bytes(2), 4 * gib, "cuda")
    # A CPU: a quarter of the available RAM, and never more than a few crops.
    assert batch_crops_for(uni.crop_bytes(4), 64 * gib, "cpu") == MAX_BATCH_CROPS["cpu"]
    assert batch_crops_for(uni.crop_bytes(4), gib // 4, "cpu") == 3
    with pytest.raises(ValueError, match="crop_bytes must be > 0"):
        batch_crops_for(0, gib, "cpu")
    monkeypatch.setattr(foundation_module, "free_memory_bytes", lambda device: gib // 4)
    encoder = FoundationEncoder(uni, device="cpu", precision="float32")  # no weights needed to size batches
    assert encoder.crops_per_batch() == 3
    assert FoundationEncoder(uni, device="cpu", batch_crops=5).crops_per_batch() == 5


def test_prefetching_keeps_order_and_errors() -> None:
    makers: set[str] = set()

    def made(n: int):  # noqa: ANN202
        for i in range(n):
            makers.add(threading.current_thread().name)
            yield i

    assert list(prefetched(made(7), ahead=2)) == list(range(7))
    assert makers and threading.current_thread().name not in makers

    def broken():  # noqa: ANN202
        yield 1
        raise RuntimeError("unreadable tile")

    with pytest.raises(RuntimeError, match="unreadable tile"):
        list(prefetched(broken()))


def test_crops_seen_before_are_not_run_again(tiny: Tiny, rgb: np.ndarray) -> None:
    backbone, folder = tiny["uni"]
    cached = FoundationEncoder(backbone, folder, device="cpu", n_threads=1, precision="float32", batch_crops=4)
    fresh = FoundationEncoder(backbone, folder, device="cpu", n_threads=1, precision="float32", cache_mb=0)
    first = cached.encode(rgb[:448, :672])
    assert cached.crops_encoded == 6
    np.testing.assert_array_equal(cached.encode(rgb[:448, :672]), first)
    assert cached.crops_encoded == 6
    # Shifted by one crop down and right: 2 x 3 crops, of which the first row's first two are known.
    shifted = cached.encode(rgb[224:672, 224:896])
    assert cached.crops_encoded == 6 + 4
    np.testing.assert_allclose(shifted, fresh.encode(rgb[224:672, 224:896]), atol=1e-4)
    # Glass: nine equal crops run once, within one window.
    glass = cached.encode(np.full((672, 672, 3), 238, np.uint8))
    crops_9_c_c_K = glass.reshape(3, 14, 3, 14, -1).swapaxes(1, 2).reshape(9, 14, 14, -1)
    assert cached.crops_encoded == 11 and (crops_9_c_c_K == crops_9_c_c_K[:1]).all()


def test_the_feature_driver_runs_fewer_crops_with_the_cache_and_gets_the_same_features(
        tiny: Tiny, rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone, folder = tiny["uni2"]
    window = np.ascontiguousarray(rgb[:700, :900])
    labels = superpixel_array(window, SuperpixelParams(step=30))
    feats, crops = [], []
    for cache_mb in (0, 64):
        encoder = FoundationEncoder(backbone, folder, device="cpu", n_threads=1, precision="float32", cache_mb=cache_mb)
        monkeypatch.setitem(FEATURES, EXTRACTOR_NAME, DenseEmbedding(EXTRACTOR_NAME, encoder))
        feats.append(features_of_array(window, labels, extractor=EXTRACTOR_NAME, tile_size=512))
        crops.append(encoder.crops_encoded)
    np.testing.assert_allclose(feats[1], feats[0], atol=1e-4)
    # 700 x 900 px hold 4 x 5 crops; blocks with a crop of margin each way cut many of them again
    # (42 here), while the cache runs each once, and those cut short by a window's edge (24 here).
    assert 20 <= crops[1] < 0.6 * crops[0]
