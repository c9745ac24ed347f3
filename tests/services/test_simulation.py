"""The active-learning simulator: honest splits, complete outputs, reproducible curves."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from slidelabel.cli.main import main
from slidelabel.errors import ParameterError
from slidelabel.services import learning_loop
from slidelabel.services.simulation import LabelledImage, SimulationOptions, simulate, split_images
from slidelabel.services.simulation_inputs import load_inputs

SMALL = dict(strategies=("random", "margin"), initial_labels=10, batch_size=10, budget=40, repeats=2)


@pytest.fixture(scope="module")
def four_images(monuseg_dir: Path, tmp_path_factory) -> Path:
    """Four MoNuSeg images with their masks, in images/ and masks/."""
    root = tmp_path_factory.mktemp("monuseg4")
    for kind in ("images", "masks"):
        (root / kind).mkdir()
        for path in sorted((monuseg_dir / kind).glob("*.png"))[:4]:
            shutil.copy(path, root / kind / path.name)
    return root


@pytest.fixture(scope="module")
def loaded(four_images: Path):
    return load_inputs(four_images / "images", four_images / "masks", SimulationOptions(**SMALL),
                       work=four_images / "work")


def test_superpixels_take_the_majority_class_of_their_pixels(loaded):
    images, values = loaded
    assert values == [0, 255]
    image = images[0]
    n = int(image.superpixels_H_W.max())
    assert image.classes_N.shape == (n,) and image.feats_N_D.shape[0] == n
    k = int(np.argmax(image.classes_N == 1)) + 1  # a nucleus superpixel
    assert (image.mask_H_W[image.superpixels_H_W == k] == 1).mean() > 0.5


def test_test_images_never_contribute_labels(loaded, monkeypatch):
    images, values = loaded
    train_idx, test_idx = split_images(len(images), 0.3, 0)
    # An extra feature column is 1 on the rows of test images: training must never see a 1.
    flagged = [LabelledImage(im.name, im.superpixels_H_W, im.classes_N,
                             np.column_stack([im.feats_N_D, np.full(len(im.classes_N), float(i in test_idx))]), im.mask_H_W)
               for i, im in enumerate(images)]
    real_train = learning_loop.train
    seen = []

    def checking_train(feats_N_D, labels_N, *args, **kwargs):
        seen.append(int(feats_N_D[:, -1].sum()))
        return real_train(feats_N_D, labels_N, *args, **kwargs)

    monkeypatch.setattr(learning_loop, "train", checking_train)
    # Without normalisation: a per-slide z-score would turn the constant flag into 0.
    simulate(flagged, values, SimulationOptions(**SMALL, normalisation="none"))
    assert len(test_idx) > 0 and len(seen) > 2 and seen == [0] * len(seen)


def test_outputs_are_complete_and_reproducible(four_images, tmp_path):
    args = ["simulate", four_images / "images", four_images / "masks", "--strategies", "random,margin",
            "--budget", "40", "--repeats", "2", "--quiet"]
    first = CliRunner().invoke(main, [str(a) for a in args] + ["--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, [str(a) for a in args] + ["--out", str(tmp_path / "b")])
    assert second.exit_code == 0
    rows = list(csv.DictReader((tmp_path / "a" / "curve.csv").open()))
    assert len(rows) == 2 * 2 * 4  # strategies x repeats x rounds (10, 20, 30, 40 labels)
    assert {r["labels"] for r in rows} == {"10", "20", "30", "40"}
    assert all(0 <= float(r["macro_f1"]) <= 1 and 0 <= float(r["pixel_dice"]) <= 1 for r in rows)
    assert (tmp_path / "a" / "curve.csv").read_text() == (tmp_path / "b" / "curve.csv").read_text()
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(summary["strategies"]) == {"random", "margin"}
    assert set(summary["test_images"]).isdisjoint(summary["train_images"])
    assert summary["full_supervision"]["macro_f1"] > 0.6  # chance is about 0.5
    assert Image.open(tmp_path / "a" / "curve.png").size[0] > 500


def test_bad_inputs_are_refused(tmp_path, four_images):
    with pytest.raises(ParameterError, match="no mask"):
        (tmp_path / "masks").mkdir()
        load_inputs(four_images / "images", tmp_path / "masks", SimulationOptions(**SMALL), work=tmp_path)
    with pytest.raises(ParameterError, match="unknown strategy"):
        SimulationOptions(strategies=("psychic",))
    with pytest.raises(ParameterError, match="two images"):
        split_images(1, 0.3, 0)
