"""Fifth attack on issue 13: the smart tool's three scales without a model (GET .../shapes/scales,
and SAM suggest without weights) z-scored the slide's features and measured every superpixel's
distance to the seed once per scale: 3 x 0.6 s over 134,091 imported cells of 274 features, 2.1 s
of a viewer's request at each rest of the cursor. Now the distances are measured once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import zarr

from slidelabel.errors import NotFoundError
from slidelabel.services import region_growing


def test_the_three_scales_measure_feature_distances_once(monkeypatch, tmp_path: Path):
    count = 200
    chain = np.arange(1, count + 1)  # superpixels in a row: i's neighbours are i - 1 and i + 1
    neighbours = [[], *[[n for n in (i - 1, i + 1) if 1 <= n <= count] for i in chain]]
    adjacency = region_growing.Adjacency(np.cumsum([0, *map(len, neighbours)]), np.concatenate(neighbours).astype(np.int64))
    feats_N_D = np.random.default_rng(0).normal(size=(count, 8)).astype(np.float32)
    calls = []

    def counted(feats, seed: int, **kwargs) -> np.ndarray:
        calls.append(seed)
        return distances(feats, seed, **kwargs)

    def no_epoch(*args, **kwargs):
        raise NotFoundError("no epoch yet")

    distances = region_growing.feature_distances
    monkeypatch.setattr(region_growing, "feature_distances", counted)
    monkeypatch.setattr(region_growing, "slide_adjacency", lambda folder: adjacency)
    monkeypatch.setattr(region_growing, "slide_predictions", no_epoch)
    project, slide = SimpleNamespace(id=1, extractor="color"), SimpleNamespace(id=1)
    features = tmp_path / "projects" / "1" / "slides" / "1" / "features" / "color.zarr"
    monkeypatch.setattr(region_growing.ProjectFiles, "features", lambda self, slide_id, name: features)
    features.parent.mkdir(parents=True)
    zarr.create_array(store=features, data=feats_N_D)
    grown = region_growing.grow_at_scales(None, tmp_path, project, slide, seed=100)
    assert calls == [100]
    assert [g.basis for g in grown] == ["features"] * 3
    sizes = [len(g.superpixels) for g in grown]
    assert sizes == sorted(sizes) and 100 in grown[0].superpixels
