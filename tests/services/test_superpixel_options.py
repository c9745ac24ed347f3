"""Superpixel options are checked where they enter (API body, CLI, stored project dict), with
ranges that keep one job bounded; sizes read back as they were written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from slidelabel.cli.main import main
from slidelabel.errors import ParameterError
from slidelabel.services.projects import superpixel_options
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize

OUT_OF_RANGE = [
    ("iterations", 10_000_000), ("iterations", 0), ("compactness", 0), ("compactness", -1),
    ("compactness", 1e9), ("tile_size", 10**6), ("tile_size", 8), ("magnification", 1e6),
    ("magnification", -1), ("mpp", 0), ("base_mpp", 1e9), ("size", "1000000um"), ("size", "100000px"),
    ("iterations", "many"), ("compactness", float("nan")), ("tissue_only", "yes"),
]


@pytest.mark.parametrize("field, value", OUT_OF_RANGE)
def test_options_out_of_range_name_the_field(field, value):
    with pytest.raises(ParameterError, match=field):
        superpixel_options({field: value})


def test_magnification_and_mpp_together_are_refused():
    with pytest.raises(ParameterError, match="mpp"):
        SuperpixelOptions(magnification=10, mpp=1)


@pytest.mark.parametrize("size", [SuperpixelSize(1_000_000, "um"), SuperpixelSize(12.3456789, "um"),
                                  SuperpixelSize(4096, "px"), SuperpixelSize(0.1, "um")])
def test_sizes_read_back_as_written(size):
    assert SuperpixelSize.parse(str(size)) == size


def test_stored_options_read_back(tmp_path):
    options = superpixel_options({"size": "4999.75um", "iterations": 100, "compactness": 1000})
    assert superpixel_options(options.as_dict()) == options


def test_cli_refuses_an_out_of_range_option_before_reading_anything(tmp_path):
    result = CliRunner().invoke(main, ["superpixels", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "out"),
                                       "--iterations", "10000000"])
    assert result.exit_code == 2, result.output
    assert "iterations" in result.output and "100" in result.output
    assert not (tmp_path / "out").exists()
