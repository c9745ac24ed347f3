"""``slidelabel export-model``: ONNX and sidecar files that reproduce the model, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from click.testing import CliRunner

from slidelabel.cli.errors import EXIT_OUTPUT, EXIT_USAGE
from slidelabel.cli.main import main
from slidelabel.pipelines.features import get_extractor
from slidelabel.pipelines.models import Category, load_model, save_model, train

CATEGORIES = [Category("tumour"), Category("glass", excluded=True), Category("stroma")]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A boosting model on 57 ``color`` features of two classes (plus rows of the excluded one)."""
    rng = np.random.default_rng(0)
    feats_N_D = rng.normal(size=(120, 57)).astype(np.float32)
    labels_N = np.where(feats_N_D[:, 0] + feats_N_D[:, 1] > 0, 2, 0)
    labels_N[:8] = 1
    model = train(feats_N_D, labels_N, CATEGORIES, model="boosting", feature_extractor="color",
                  model_options={"n_boosters": 2}, rng=rng)
    path = tmp_path_factory.mktemp("models") / "tissue.slmodel"
    save_model(model, path)
    return path


def _invoke(*args: object):
    return CliRunner().invoke(main, ["export-model", *map(str, args)])


def test_writes_a_graph_that_predicts_as_the_model_and_a_sidecar(model_file, tmp_path):
    result = _invoke(model_file, "--out", tmp_path / "onnx", "--colour", "tumour=#aa0000", "--colour", "stroma=#00aa00")
    assert result.exit_code == 0, result.output
    onnx_path, sidecar_path = tmp_path / "onnx" / "tissue.onnx", tmp_path / "onnx" / "tissue.json"
    assert result.output.split() == [str(onnx_path), str(sidecar_path)]
    sidecar = json.loads(sidecar_path.read_text())
    assert sidecar["onnx_file"] == "tissue.onnx" and sidecar["classifier"] == "boosting"
    assert sidecar["feature_extractor"] == "color" and sidecar["input"]["shape"] == ["N", 57]
    assert sidecar["feature_names"] == get_extractor("color").channel_names()
    assert [(c["name"], c["trained"], c["color"]) for c in sidecar["categories"]] == [
        ("tumour", True, "#aa0000"), ("glass", False, None), ("stroma", True, "#00aa00")]
    model = load_model(model_file)
    feats_N_D = np.random.default_rng(1).normal(size=(200, 57)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probs_N_K = session.run([sidecar["output"]["name"]], {sidecar["input"]["name"]: feats_N_D})[0]
    np.testing.assert_allclose(probs_N_K, model.predict_proba(feats_N_D), atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["tissue.json", "tissue.onnx"]


def _one_line_error(result, code: int, *words: str) -> None:
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]


def test_a_file_that_is_not_a_model_is_one_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    _one_line_error(_invoke(path, "--out", tmp_path / "onnx"), EXIT_OUTPUT, "notes.txt", "not a slidelabel model file")
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").iterdir())


def test_a_bad_colour_is_a_usage_error(model_file, tmp_path):
    _one_line_error(_invoke(model_file, "--out", tmp_path, "--colour", "tumour=red"), EXIT_USAGE, "#rrggbb", "tumour")
    _one_line_error(_invoke(model_file, "--out", tmp_path, "--colour", "red"), EXIT_USAGE, "CATEGORY=#rrggbb")


def test_is_listed_in_the_help():
    assert "export-model" in CliRunner().invoke(main, ["--help"]).output
