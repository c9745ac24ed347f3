"""``slidelabel predict`` and ``slidelabel features`` over a folder holding a real slide and a broken one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
from click.testing import CliRunner

from slidelabel.cli.main import main
from slidelabel.pipelines.features.extract import extract_slide_features, read_features
from slidelabel.pipelines.models import Category, load_model, save_model, train
from slidelabel.pipelines.normalisation import normalised
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, TABLE_FILE
from slidelabel.store.superpixel_table import read_table

SIZE = "100um"
CATEGORIES = [Category("tissue"), Category("artefact", excluded=True), Category("glass")]


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(cmu_slide, tmp_path_factory) -> tuple[Path, Path]:
    """(model file, feature array it was trained on): ``linear`` on the CMU slide's ``color``
    features with slide normalisation, tissue-rich superpixels as tissue and bare ones as glass."""
    folder = tmp_path_factory.mktemp("training")
    options = SuperpixelOptions(size=SuperpixelSize.parse(SIZE))
    compute_slide_superpixels(cmu_slide, folder, options)
    features = extract_slide_features(cmu_slide, folder, folder / "color.zarr", extractor="color")
    feats_N_D = normalised(read_features(features), "slide")
    fraction_N = read_table(folder / TABLE_FILE).tissue_fraction
    rows = np.flatnonzero(((fraction_N >= 0.9) | (fraction_N <= 0.1)) & np.isfinite(feats_N_D).all(axis=1))
    classes = np.where(fraction_N[rows] >= 0.9, 0, 2)
    assert {0, 2} <= set(classes.tolist())
    model = train(feats_N_D[rows], classes, CATEGORIES, model="linear", feature_extractor="color",
                  rng=np.random.default_rng(0), cross_validate_model=False)
    model.normalisation, model.temperature = "slide", 1.5
    path = folder / "epoch-1.slmodel"
    save_model(model, path)
    return path, features


@pytest.fixture()
def cohort(cmu_slide, tmp_path) -> Path:
    folder = tmp_path / "cohort"
    folder.mkdir()
    shutil.copy(cmu_slide, folder / cmu_slide.name)
    (folder / "x.svs").write_text("not a slide\n")
    return folder


def test_predicts_a_folder_as_the_model_does_reports_the_broken_slide_and_resumes(trained, cohort, tmp_path):
    model_path, features = trained
    out = tmp_path / "out"
    args = ("predict", cohort, "--model", model_path, "--out", out, "--size", SIZE, "--geojson", "--annotation",
            "--quiet")
    first = run(*args)
    assert first.exit_code == 1, first.output
    errors = [line for line in first.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(cohort / "x.svs") in errors[0] and "Traceback" not in first.output
    assert "2 slides: 1 done, 0 already finished, 1 failed" in first.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["slides"], summary["done"], summary["skipped"], summary["failed"]) == (2, 1, 0, 1)

    folder = out / "CMU-1-Small-Region"
    table = {name: np.asarray(column, dtype=object if name == "predicted" else None)
             for name, column in pq.read_table(folder / "predictions.parquet").to_pydict().items()}
    model = load_model(model_path)
    feats_N_D = normalised(read_features(features), "slide")
    has_N = np.isfinite(feats_N_D).all(axis=1)
    probs_N_K = model.predict_proba(feats_N_D[has_N])
    names = np.array([c.name for c in CATEGORIES])
    assert table["superpixel"].tolist() == list(range(1, has_N.size + 1))
    assert table["predicted"][has_N].tolist() == names[probs_N_K.argmax(axis=1)].tolist()
    assert all(name is None for name in table["predicted"][~has_N])
    np.testing.assert_allclose(table["certainty"][has_N], probs_N_K.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(np.column_stack([table[f"p_{name}"] for name in names])[has_N], probs_N_K, atol=1e-5)
    assert set(table["predicted"][has_N]) == {"tissue", "glass"}

    value_of_id = np.zeros(has_N.size + 1, np.uint8)
    value_of_id[1:][has_N] = probs_N_K.argmax(axis=1) + 1
    mask = tifffile.imread(folder / "predictions.mask.tiff")
    np.testing.assert_array_equal(mask, value_of_id[read_labels(folder / LABELS_FILE)])

    shapes = json.loads((folder / "predictions.geojson").read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in shapes} == {"tissue", "glass"}
    document = json.loads((folder / "predictions.annotation.json").read_text())
    assert {element["group"] for element in document["elements"]} == {"tissue", "glass"}

    second = run(*args)
    assert second.exit_code == 1
    assert "2 slides: 0 done, 1 already finished, 1 failed" in second.output
    assert json.loads((out / "summary.json").read_text())["skipped"] == 1


def test_features_alone_and_bad_model_or_extractor(trained, cohort, cmu_slide, tmp_path):
    model_path, features = trained
    out = tmp_path / "out"
    result = run("features", cohort / cmu_slide.name, "--extractor", "color", "--out", out, "--size", SIZE, "--quiet")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_features(out / "CMU-1-Small-Region" / "features-color.zarr"),
                                  read_features(features))
    unknown = run("features", cohort, "--extractor", "nonsense", "--out", out, "--quiet")
    assert unknown.exit_code == 2 and "nonsense" in unknown.output and "Traceback" not in unknown.output
    no_model = run("predict", cohort, "--model", tmp_path / "missing.slmodel", "--out", out, "--quiet")
    assert no_model.exit_code != 0 and "missing.slmodel" in no_model.output and "Traceback" not in no_model.output
