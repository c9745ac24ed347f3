"""The smart tool's Segment Anything suggestions on the CMU sample's real superpixels, with a tiny
random SamModel: each scale's outline in level-0 px, the superpixels it covers by at least half
(checked against matplotlib at the label-map level shown), and the region embeddings' cache."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from slidelabel.errors import ParameterError
from slidelabel.services import smart
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.settings import Settings
from slidelabel.store.label_map import read_labels
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Slide
from slidelabel.store.superpixel_files import LABELS_FILE

TINY = runpy.run_path(str(Path(__file__).parents[1] / "web" / "tiny_sam.py"))
#: The region in view (level-0 px): most of the CMU sample's tissue. Outlines run along mask cell
#: edges; odd sizes keep them off pixel centres, where matplotlib's reference would be a tie.
REGION = (201.0, 299.0, 1999.0, 2703.0)


@pytest.fixture(scope="module")
def cmu_superpixels(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """Superpixels of the CMU sample at 10x (working downsample 2), 16 um."""
    folder = tmp_path_factory.mktemp("smart") / "cmu"
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions(size=SuperpixelSize.parse("16um")))
    return folder


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return TINY["save_tiny_sam"](tmp_path_factory.mktemp("sam") / "tiny")


@pytest.fixture()
def slide(tmp_path: Path, cmu_slide: Path, cmu_superpixels: Path) -> Slide:
    shutil.copytree(cmu_superpixels, ProjectFiles(tmp_path, 1).superpixels(1))
    return Slide(id=1, project_id=1, name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967)


def expected_cover(labels_H_W: np.ndarray, polygon_V_2: np.ndarray) -> set[int]:
    """Ids with at least half of their pixel centres inside ``polygon`` (pixels of the level)."""
    ys, xs = np.mgrid[0:labels_H_W.shape[0], 0:labels_H_W.shape[1]] + 0.5
    inside = MplPath(polygon_V_2).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(labels_H_W.shape)
    covered = np.bincount(labels_H_W[inside].ravel(), minlength=labels_H_W.max() + 1)
    total = np.bincount(labels_H_W.ravel(), minlength=labels_H_W.max() + 1)
    return {int(i) for i in np.flatnonzero((covered >= 0.5 * total) & (total > 0)) if i > 0}


@pytest.mark.parametrize("downsample, level", [(2.0, 0), (8.0, 2)])
def test_each_scale_takes_the_superpixels_its_outline_covers_by_half(tmp_path, slide, cmu_superpixels, tiny_sam,
                                                                       downsample, level):
    settings = Settings(data_dir=tmp_path, sam_model=tiny_sam)
    found = smart.suggest(None, settings, None, slide, x_level0=1100.0, y_level0=1500.0, region_level0=REGION,
                          downsample=downsample)
    assert found.basis == "sam" and len(found.scales) == 3
    level_ids = read_labels(cmu_superpixels / LABELS_FILE, level=level)
    scale = 2.0 * 2**level  # level-0 px per pixel of the level
    taken = 0
    for suggestion in found.scales:
        outline = suggestion.outline_level0
        assert outline.ndim == 2 and outline.shape[1] == 2 and len(outline) >= 3 and suggestion.score is not None
        # Inside the region, but for the part of a mask cell (37.6 level-0 px) past the image's edge.
        assert (outline >= np.array(REGION[:2]) - 15).all() and (outline <= np.array(REGION[2:]) + 15).all()
        assert set(suggestion.superpixels.tolist()) == expected_cover(level_ids, outline / scale)
        assert np.all(np.diff(suggestion.superpixels) > 0)
        taken += len(suggestion.superpixels)
    assert taken > 0  # the tiny model's masks cover something of the slide


def test_embeddings_are_cached_per_region(tmp_path, slide, tiny_sam):
    settings = Settings(data_dir=tmp_path, sam_model=tiny_sam)
    region = (150.0, 250.0, 1950.0, 2650.0)  # no other test embeds it
    first, cached, note = smart.embed_region(settings, slide, region)
    assert first is not None and not cached and note == ""
    assert first.region_level0 == (150, 250, 1950, 2650) and first.downsample == pytest.approx(2400 / 256)
    again, cached, _ = smart.embed_region(settings, slide, region)
    assert cached and again is first
    # A point prompt reuses it too, to the region's last row and column.
    smart.suggest(None, settings, None, slide, x_level0=900.0, y_level0=900.0, region_level0=region, downsample=4.0)
    corner = smart.suggest(None, settings, None, slide, x_level0=1949.9, y_level0=2649.9, region_level0=region,
                           downsample=4.0)
    assert corner.basis == "sam" and len(corner.scales) == 3
    assert smart.embed_region(settings, slide, region)[1]
    other, cached, _ = smart.embed_region(settings, slide, (0.0, 0.0, 1000.0, 1000.0))
    assert not cached and other is not first and other.image.input_hw == (256, 256)
    # The slide's edge clips a region; a region off the slide is refused.
    assert smart.embed_region(settings, slide, (2000.0, 2800.0, 9000.0, 9000.0))[0].region_level0 == (2000, 2800, 2220,
                                                                                                     2967)
    with pytest.raises(ParameterError, match="less than 16"):
        smart.embed_region(settings, slide, (5000.0, 5000.0, 6000.0, 6000.0))
    with pytest.raises(ParameterError, match="outside the region"):
        smart.suggest(None, settings, None, slide, x_level0=100.0, y_level0=100.0, region_level0=region, downsample=4.0)


def test_without_weights_the_basis_is_classical(tmp_path, slide, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("SLIDELABEL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("SLIDELABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    settings = Settings(data_dir=tmp_path)
    embedding, cached, note = smart.embed_region(settings, slide, REGION)
    assert embedding is None and not cached and "hf download facebook/sam-vit-base" in note
    # Off the superpixels (past the slide's edge) nothing is proposed, and nothing is read.
    found = smart.suggest(None, settings, None, slide, x_level0=5000.0, y_level0=5000.0, region_level0=REGION,
                          downsample=4.0)
    assert found.basis == "classical" and found.scales == [] and "facebook/sam-vit-base" in found.note
