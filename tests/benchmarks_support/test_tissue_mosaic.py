"""The tissue-mosaic benchmark of benchmarks/: slides that open at 40x, aligned masks in which every
class is present, regions made of their own organ's (normalised) source, no source shared."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import tifffile

from slidelabel.errors import ParameterError
from slidelabel.pipelines.slides import Slide

_MODULE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "tissue_mosaic.py"
_spec = importlib.util.spec_from_file_location("tissue_mosaic", _MODULE_PATH)
tissue_mosaic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tissue_mosaic)

ORGANS = ("breast", "prostate")
SIZE = 2048
PATCH = 64


@pytest.fixture(scope="module")
def mosaic(monuseg_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("mosaic")
    return tissue_mosaic.make(out, slides=2, size=SIZE, organs=ORGANS, seed=3, monuseg=monuseg_dir)


def _level0(path: str) -> np.ndarray:
    return tifffile.imread(path, level=0)


def test_slides_open_at_40x_with_a_pyramid_whose_tiles_read_back(mosaic: dict) -> None:
    for entry in mosaic["slides"]:
        stored = _level0(entry["slide"])
        with Slide(entry["slide"]) as slide:
            assert slide.info.width == slide.info.height == SIZE
            assert slide.info.mpp == pytest.approx(tissue_mosaic.MPP, abs=1e-4)
            assert slide.info.levels == 4  # 2048, 1024, 512, 256
            np.testing.assert_array_equal(slide.read_region(700, 300, 600, 900), stored[300:1200, 700:1300])
            halved = slide.read_region(0, 0, SIZE // 2, SIZE // 2, downsample=2).astype(float)
        means = stored.reshape(SIZE // 2, 2, SIZE // 2, 2, 3).mean(axis=(1, 3))
        assert np.abs(halved - means).mean() < 3  # the level below is level 0 halved (JPEG aside)


def test_masks_are_aligned_and_hold_every_class_on_every_slide(mosaic: dict) -> None:
    assert json.loads((Path(mosaic["out"]) / "classes.json").read_text()) == {"0": "glass", "1": "breast",
                                                                                "2": "prostate"}
    for entry in mosaic["slides"]:
        labels = _level0(entry["mask"])
        rgb = _level0(entry["slide"])
        assert labels.shape == rgb.shape[:2] and labels.dtype == np.uint8
        fractions = np.bincount(labels.ravel(), minlength=4) / labels.size
        assert fractions[3] == 0 and (fractions[:3] > 0.1).all(), fractions
        assert 0.15 < fractions[0] < 0.4
        assert list(entry["class_fractions"].values()) == pytest.approx(fractions[:3].tolist(), abs=1e-4)
        glass = rgb[labels == 0].astype(float)
        np.testing.assert_allclose(glass.mean(axis=0), tissue_mosaic.GLASS_RGB, atol=2)
        assert rgb[labels > 0].mean() < 200  # tissue is stained where the mask says so


class _Finder:
    """Where a small grey patch best matches a grey image: normalised cross-correlation over every
    placement, by FFT (skimage's match_template recomputes the image's transforms for each patch,
    40 times slower here)."""

    def __init__(self, image_H_W: np.ndarray, patch: int) -> None:
        self.patch, self.shape = patch, image_H_W.shape
        self.spectrum = scipy.fft.rfft2(image_H_W.astype(np.float32))
        sums = [np.pad(np.cumsum(np.cumsum(v, 0), 1), ((1, 0), (1, 0))) for v in (image_H_W, image_H_W**2)]
        window = [s[patch:, patch:] - s[:-patch, patch:] - s[patch:, :-patch] + s[:-patch, :-patch] for s in sums]
        self.norms = np.sqrt(np.maximum(window[1] - window[0] ** 2 / patch**2, 1e-6))

    def best(self, patch_h_w: np.ndarray) -> float:
        """Highest correlation of the patch, turned and mirrored every way (1: found exactly)."""
        scores = []
        for variant in [np.rot90(f, turns) for f in (patch_h_w, patch_h_w[:, ::-1]) for turns in range(4)]:
            unit = (variant - variant.mean()) / np.linalg.norm(variant - variant.mean())
            # Correlation is convolution with the patch reversed; keep the placements wholly inside.
            full = scipy.fft.irfft2(self.spectrum * scipy.fft.rfft2(unit[::-1, ::-1].astype(np.float32), self.shape),
                                    self.shape)
            scores.append((full[self.patch - 1:, self.patch - 1:] / self.norms).max())
        return float(max(scores))


def test_each_region_is_made_of_its_own_organs_normalised_source(mosaic: dict, monuseg_dir: Path) -> None:
    rng = np.random.default_rng(0)
    for index, entry in enumerate(mosaic["slides"]):
        rgb, labels = _level0(entry["slide"]), _level0(entry["mask"])
        sources = {organ: tissue_mosaic.normalised_image(monuseg_dir / "images" / f"{name}.png")
                   for organ, name in entry["sources"].items()}
        finders = {organ: _Finder(image.mean(axis=2), PATCH) for organ, image in sources.items()}
        for value, organ in enumerate(ORGANS, start=1):
            region = rgb[labels == value].astype(float)
            np.testing.assert_allclose(region.mean(axis=0), sources[organ].reshape(-1, 3).mean(axis=0), atol=8)
            if index:
                continue  # patches on one slide are enough, and they take most of the time
            # Patches wholly inside the region: most lie within one crop (crops are 500-1000 px)
            # and are found in the organ's own source, none in the other organ's.
            inside = labels[: SIZE - PATCH, : SIZE - PATCH] == value
            corners = np.argwhere(inside)[rng.choice(inside.sum(), 40, replace=False)]
            corners = [(y, x) for y, x in corners if (labels[y:y + PATCH, x:x + PATCH] == value).all()][:4]
            scores = {other: [finder.best(rgb[y:y + PATCH, x:x + PATCH].mean(axis=2)) for y, x in corners]
                      for other, finder in finders.items()}
            assert sum(score > 0.95 for score in scores[organ]) >= 3, scores
            assert all(max(scores[other]) < 0.85 for other in ORGANS if other != organ), scores


def test_no_two_slides_share_a_source_image(mosaic: dict) -> None:
    recorded = json.loads((Path(mosaic["out"]) / "sources.json").read_text())["slides"]
    used = [set(names.values()) for names in recorded.values()]
    assert len(used) == 2 and all(len(names) == len(ORGANS) for names in used)
    assert not used[0] & used[1]


def test_the_same_seed_writes_the_same_files(monuseg_dir: Path, tmp_path: Path) -> None:
    made = [tissue_mosaic.make(tmp_path / name, slides=1, size=1024, organs=ORGANS, seed=7, monuseg=monuseg_dir)
            for name in ("a", "b")]
    for key in ("slide", "mask"):
        paths = [Path(run["slides"][0][key]) for run in made]
        assert paths[0].read_bytes() == paths[1].read_bytes()
    assert not list((tmp_path / "a").glob(".scratch-*"))  # the scratch memory maps are gone


@pytest.mark.parametrize(("options", "message"), [
    ({"size": 1000}, "multiple of 1024"),
    ({"slides": 3, "organs": ("colon",)}, "'colon' has 2 images"),
    ({"organs": ("breast", "breast")}, "distinct"),
])
def test_bad_options_are_parameter_errors(monuseg_dir: Path, tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        tissue_mosaic.make(tmp_path, monuseg=monuseg_dir, **{"slides": 1, "size": 1024, **options})
