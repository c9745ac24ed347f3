"""`slidelabel superpixels`, `render` and `demo` as a user runs them: bad input, batches, re-runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from slidelabel.cli.main import main

FAST = ["--size", "60um", "--quiet"]


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def bad_slides(cmu_slide, tmp_path) -> dict[str, Path]:
    """One slide of each kind of bad input, next to a good copy."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "good.svs"
    shutil.copy(cmu_slide, good)
    data = cmu_slide.read_bytes()
    (folder / "empty.svs").write_bytes(b"")
    (folder / "truncated.svs").write_bytes(data[: len(data) // 3])
    (folder / "notes.svs").write_text("these are my notes, not a slide\n")
    (folder / "noise.tif").write_bytes(bytes(range(256)) * 64)
    # A real, readable image of a kind slidelabel does not support: 16-bit fluorescence.
    tifffile.imwrite(folder / "fluorescence.tif", np.zeros((512, 512), np.uint16), tile=(256, 256))
    return {p.stem: p for p in folder.iterdir()} | {"missing": folder / "missing.svs"}


def test_bad_slides_fail_one_line_each_and_the_others_go_on(bad_slides, tmp_path):
    result = run("superpixels", *bad_slides.values(), "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 6
    for name in ("empty", "truncated", "notes", "noise", "missing", "fluorescence"):
        (line,) = [e for e in errors if f"{name}." in e]
        assert str(bad_slides[name]) in line
    assert "7 slides: 1 done, 0 already finished, 6 failed" in result.output
    assert (tmp_path / "out" / "good" / "manifest.json").exists()


def test_each_bad_slide_names_its_cause(bad_slides, tmp_path):
    causes = {"empty": "empty", "missing": "no such file", "notes": "not", "noise": "not",
              "truncated": "truncated", "fluorescence": "8-bit rgb"}
    for name, cause in causes.items():
        result = run("superpixels", bad_slides[name], "--out", tmp_path / "out", *FAST)
        assert result.exit_code == 1 and cause in result.output.lower(), (name, result.output)


def test_a_folder_is_a_batch_and_a_rerun_skips_finished_slides(cmu_slide, tcga_slide, tmp_path):
    folder = tmp_path / "slides"
    folder.mkdir()
    for slide in (cmu_slide, tcga_slide):
        shutil.copy(slide, folder / slide.name)
    (folder / "README.txt").write_text("not a slide, and not picked up")
    args = ("superpixels", folder, "--out", tmp_path / "out", "--base-mpp", "0.5", *FAST)
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "2 slides: 2 done" in first.output
    second = run(*args)
    assert "2 slides: 0 done, 2 already finished, 0 failed" in second.output
    glob = run("superpixels", str(folder / "CMU*.svs"), "--out", tmp_path / "out", "--base-mpp", "0.5", *FAST)
    assert "1 slide: 0 done, 1 already finished" in glob.output


def test_slide_without_mpp_gets_a_hint(tcga_slide, tmp_path):
    result = run("superpixels", tcga_slide, "--out", tmp_path / "out", *FAST)
    assert result.exit_code == 1 and "--base-mpp" in result.output and "Traceback" not in result.output


def test_conflicting_and_bad_options_are_usage_errors(cmu_slide, tmp_path):
    both = run("superpixels", cmu_slide, "--out", tmp_path, "--mpp", "1", "--magnification", "10")
    assert both.exit_code == 2 and "either" in both.output
    size = run("superpixels", cmu_slide, "--out", tmp_path, "--size", "big")
    assert size.exit_code == 2 and "um or px" in size.output


def test_render_draws_the_boundaries_on_a_thumbnail(cmu_slide, tmp_path):
    assert run("superpixels", cmu_slide, "--out", tmp_path / "sp", *FAST).exit_code == 0
    png = tmp_path / "pic.png"
    result = run("render", cmu_slide, "--superpixels", tmp_path / "sp", "--out", png, "--max-size", "800")
    assert result.exit_code == 0, result.output
    picture = Image.open(png)
    assert max(picture.size) == 800
    pixels = picture.convert("RGB").getdata()
    assert sum(p == (255, 230, 0) for p in pixels) > 2000  # boundary colour drawn


def test_render_without_superpixels_says_what_to_run(cmu_slide, tmp_path):
    result = run("render", cmu_slide, "--superpixels", tmp_path, "--out", tmp_path / "x.png")
    assert result.exit_code == 4 and "slidelabel superpixels" in result.output and "Traceback" not in result.output


def test_demo_runs_on_a_given_slide(cmu_slide, tmp_path):
    result = run("demo", "--out", tmp_path / "demo", "--slide", cmu_slide)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "CMU-1-Small-Region-superpixels.png").exists()
    assert (tmp_path / "demo" / "superpixels" / "CMU-1-Small-Region" / "manifest.json").exists()
