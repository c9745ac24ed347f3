"""``slidelabel info``: text and JSON output, readers list, and one-line errors for bad slides."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from slidelabel.cli.errors import EXIT_FAILED, EXIT_SLIDE, EXIT_USAGE
from slidelabel.cli.main import main

SLIDELABEL = Path(sys.executable).parent / "slidelabel"


def run(*args: str):
    return CliRunner().invoke(main, ["info", *map(str, args)])


def _one_line_error(result, *words: str) -> None:
    """The command failed with exactly one 'error:' line on stderr naming ``words``."""
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output + result.stderr


def test_cmu_text(cmu_slide: Path):
    result = run(cmu_slide)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in [
        str(cmu_slide),
        "openslide (vendor: aperio)",
        "2220 x 2967 px",
        "240 x 240 px",
        "0.499 um/px (from the slide's metadata)",
        "20x",
        "label, macro, thumbnail",
        "% of the slide",
    ]:
        assert expected in out
    assert re.search(r"levels:\s+1\n", out)


def test_slide_without_mpp_says_how_to_set_it(tcga_slide: Path):
    result = run(tcga_slide)
    assert result.exit_code == 0
    assert "pixel size:" in result.stdout and "pass --base-mpp" in result.stdout
    fixed = run("--base-mpp", "0.25", tcga_slide)
    assert "0.25 um/px (from --base-mpp)" in fixed.stdout and "40x" in fixed.stdout


def test_json_one_slide(cmu_slide: Path):
    result = run("--json", cmu_slide)
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert (record["width"], record["height"], record["source"]) == (2220, 2967, "openslide")
    assert record["mpp"] == pytest.approx(0.499) and record["mpp_source"] == "metadata"
    assert record["magnification"] == 20 and record["vendor"] == "aperio"
    assert 0.32 < record["tissue_fraction"] < 0.43  # see test_tissue for the range


def test_json_several_slides_is_a_list(cmu_slide: Path, tcga_slide: Path):
    result = run("--json", cmu_slide, tcga_slide)
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert [r["path"] for r in records] == [str(cmu_slide), str(tcga_slide)]
    assert records[1]["mpp"] is None and records[1]["mpp_source"] == "none"


def test_sources_lists_the_installed_readers():
    result = run("--sources")
    assert result.exit_code == 0
    assert {"openslide", "tiff", "tifffile", "pil"} <= set(result.stdout.split())
    assert "openslide" in json.loads(run("--sources", "--json").stdout)


def test_registry_lists_every_extension_point_with_the_defaults_marked():
    listed = json.loads(run("--registry", "--json").stdout)
    assert [c["name"] for c in listed["strategies"] if c["default"]] == ["margin"]
    assert {"features", "models", "normalisations", "slide_readers", "segment_formats", "feature_formats"} < set(listed)
    text = run("--registry").stdout
    assert re.search(r"^  \* tissue +context", text, re.M) and re.search(r"^    color ", text, re.M)


def test_an_unregistered_name_is_a_usage_error_listing_the_registered_ones(tmp_path: Path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    result = CliRunner().invoke(main, ["simulate", str(tmp_path / "images"), str(tmp_path / "masks"),
                                       "--out", str(tmp_path / "out"), "--model", "svm"])
    assert result.exit_code == EXIT_USAGE
    assert "unknown model 'svm'; registered: linear" in result.stderr


def test_no_slide_is_a_usage_error():
    result = run()
    assert result.exit_code == EXIT_USAGE and "SLIDE" in result.stderr


@pytest.fixture
def bad_slides(tmp_path: Path, cmu_slide: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, word the error must contain)."""
    (tmp_path / "empty.svs").write_bytes(b"")
    (tmp_path / "notes.svs").write_text("not a slide\n" * 50)
    data = cmu_slide.read_bytes()
    (tmp_path / "truncated.svs").write_bytes(data[: int(len(data) * 0.3)])
    (tmp_path / "folder.svs").mkdir()
    return {
        "missing": (tmp_path / "missing.svs", "no such file"),
        "directory": (tmp_path / "folder.svs", "directory"),
        "empty": (tmp_path / "empty.svs", "empty"),
        "text": (tmp_path / "notes.svs", "not an image"),
        "truncated": (tmp_path / "truncated.svs", "truncated"),
    }


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "truncated"])
def test_bad_slide_gives_one_line_and_exit_code(bad_slides: dict, case: str):
    path, cause = bad_slides[case]
    result = run(path)
    assert result.exit_code == EXIT_SLIDE
    _one_line_error(result, str(path), cause)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("option", "cause"),
    [(["--source", "nope"], "unknown slide reader"), (["--base-mpp", "0"], "> 0")],
)
def test_bad_options_give_one_line_and_usage_exit_code(cmu_slide: Path, option: list, cause: str):
    result = run(*option, cmu_slide)
    assert result.exit_code == EXIT_USAGE
    _one_line_error(result, cause)


def test_one_bad_slide_among_several_does_not_stop_the_others(
    cmu_slide: Path, tcga_slide: Path, bad_slides: dict
):
    truncated, _ = bad_slides["truncated"]
    result = run(cmu_slide, truncated, tcga_slide)
    assert result.exit_code == EXIT_FAILED
    _one_line_error(result, str(truncated), "truncated")
    assert str(cmu_slide) in result.stdout and str(tcga_slide) in result.stdout

    as_json = run("--json", cmu_slide, truncated)
    assert as_json.exit_code == EXIT_FAILED
    records = json.loads(as_json.stdout)
    assert records[0]["width"] == 2220 and "truncated" in records[1]["error"]


def test_all_slides_bad_exits_with_the_slide_code(bad_slides: dict):
    result = run(bad_slides["empty"][0], bad_slides["missing"][0])
    assert result.exit_code == EXIT_SLIDE
    assert len(result.stderr.strip().splitlines()) == 2


@pytest.mark.skipif(not SLIDELABEL.exists(), reason="the slidelabel script is not installed")
def test_installed_command_prints_one_line_for_a_truncated_slide(bad_slides: dict):
    """A real process: nothing else (library logging, warnings) may reach the terminal."""
    path, _ = bad_slides["truncated"]
    completed = subprocess.run(
        [str(SLIDELABEL), "info", str(path)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == EXIT_SLIDE
    assert completed.stdout == ""
    assert completed.stderr.strip().splitlines() == [
        f"error: {path}: the file is truncated: it has {path.stat().st_size} bytes but its "
        "TIFF structure needs 1275951"
    ]
