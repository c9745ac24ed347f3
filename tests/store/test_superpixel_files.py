"""Tests for slidelabel.store: label map, table, manifest and slide hash."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile

import slidelabel.store.label_map as label_map_module
from slidelabel.errors import OutputError, SlideNotFoundError
from slidelabel.store.label_map import LabelMapWriter, label_map_shape, read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, file_sha256, read_manifest, write_manifest
from slidelabel.store.superpixel_table import SuperpixelTable, read_table, write_table

HEIGHT, WIDTH, BLOCK = 3001, 2777, 1000
MPP = 0.499


def superpixel_like_labels(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """uint32 map of ragged ~30 px cells with ids up to ~4e9 (beyond float32 and int32) and a
    band of 0 (glass) along the top."""
    rng = np.random.default_rng(seed)
    cells_h_w = rng.integers(1, 4_000_000_000, size=(height // 30 + 2, width // 30 + 2))
    rows = (np.arange(height) + rng.integers(0, 30, size=height)) // 30
    cols = (np.arange(width) + rng.integers(0, 30, size=width)) // 30
    labels_h_w = cells_h_w[rows[:, None], cols[None, :]].astype(np.uint32)
    labels_h_w[:37] = 0
    return labels_h_w


def blocks(height: int, width: int, size: int, *, seed: int = 0) -> list[tuple[int, int]]:
    """Upper-left corners of ``size`` blocks covering the image, in shuffled order."""
    corners = [(top, left) for top in range(0, height, size) for left in range(0, width, size)]
    np.random.default_rng(seed).shuffle(corners)
    return corners


def write_map(
    path: Path, labels_h_w: np.ndarray, *, mpp: float | None = MPP, lut: np.ndarray | None = None
) -> None:
    height, width = labels_h_w.shape
    with LabelMapWriter(path, width=width, height=height, mpp=mpp) as writer:
        for top, left in blocks(height, width, BLOCK):
            writer.write_block(top, left, labels_h_w[top : top + BLOCK, left : left + BLOCK])
        writer.finish(lut)


@pytest.fixture(scope="module")
def labels_h_w() -> np.ndarray:
    return superpixel_like_labels(HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def label_map(tmp_path_factory: pytest.TempPathFactory, labels_h_w: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("slide") / LABELS_FILE
    write_map(path, labels_h_w)
    return path


# --- label map ------------------------------------------------------------------------------


def test_label_map_round_trip_every_level(label_map: Path, labels_h_w: np.ndarray) -> None:
    assert sorted(p.name for p in label_map.parent.iterdir()) == [LABELS_FILE]
    assert label_map_shape(label_map) == (HEIGHT, WIDTH)
    level0 = read_labels(label_map)
    assert level0.dtype == np.uint32
    np.testing.assert_array_equal(level0, labels_h_w)
    # 3001 -> 1501 -> 751 -> 376 -> 188: five levels, the last one fits in a 256 px tile.
    for level in range(5):
        step = 2**level
        np.testing.assert_array_equal(
            read_labels(label_map, level=level), labels_h_w[::step, ::step], err_msg=f"{level=}"
        )
    with pytest.raises(ValueError, match="level must be in 0..4"):
        read_labels(label_map, level=5)


def test_label_map_is_tiled_compressed_bigtiff_with_resolution(label_map: Path) -> None:
    with tifffile.TiffFile(label_map) as tiff:
        assert tiff.is_bigtiff
        page = tiff.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        numerator, denominator = page.tags["XResolution"].value
        assert 1e4 * denominator / numerator == pytest.approx(MPP, rel=1e-6)
        assert len(tiff.series[0].levels) == 5


@pytest.mark.parametrize(
    ("left", "top", "width", "height", "level"),
    [(0, 0, 1, 1, 0), (255, 257, 513, 700, 0), (2000, 2900, 777, 101, 0), (100, 3, 50, 60, 2)],
)
def test_read_labels_window(
    label_map: Path,
    labels_h_w: np.ndarray,
    left: int,
    top: int,
    width: int,
    height: int,
    level: int,
) -> None:
    step = 2**level
    expected = labels_h_w[::step, ::step][top : top + height, left : left + width]
    window = read_labels(label_map, left=left, top=top, width=width, height=height, level=level)
    np.testing.assert_array_equal(window, expected)


def test_read_labels_default_window_runs_to_the_edge(
    label_map: Path, labels_h_w: np.ndarray
) -> None:
    window = read_labels(label_map, left=2700, top=2990)
    np.testing.assert_array_equal(window, labels_h_w[2990:, 2700:])


@pytest.mark.parametrize(
    "window",
    [
        {"left": -1},
        {"top": -1},
        {"left": 2000, "width": 778},
        {"top": 3000, "height": 2},
        {"width": -1},
    ],
)
def test_read_labels_window_outside_is_value_error(label_map: Path, window: dict) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        read_labels(label_map, **window)


def test_lut_renumbers_every_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    old_h_w = rng.integers(0, 500, size=(700, 900)).repeat(3, axis=0)[:1900]  # int64 input
    lut = np.concatenate([[0], rng.permutation(np.arange(1, 500)) + 70_000]).astype(np.int64)
    path = tmp_path / LABELS_FILE
    write_map(path, old_h_w, lut=lut)
    for level in range(4):
        step = 2**level
        np.testing.assert_array_equal(
            read_labels(path, level=level), lut[old_h_w][::step, ::step], err_msg=f"{level=}"
        )


def test_uncovered_pixels_are_zero_and_small_map_has_one_level(tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    with LabelMapWriter(path, width=200, height=37, mpp=None) as writer:
        writer.write_block(5, 150, np.full((10, 50), 7, dtype=np.uint8))
        writer.write_block(0, 0, np.zeros((0, 3), dtype=np.uint32))  # empty blocks are fine
        writer.finish()
    expected = np.zeros((37, 200), dtype=np.uint32)
    expected[5:15, 150:200] = 7
    np.testing.assert_array_equal(read_labels(path), expected)
    with tifffile.TiffFile(path) as tiff:
        assert len(tiff.series[0].levels) == 1
        assert tiff.pages[0].tags["ResolutionUnit"].value == tifffile.RESUNIT.NONE


@pytest.mark.parametrize(("tile_size", "height", "width"), [(16, 230, 90), (512, 1100, 600)])
def test_other_tile_sizes(tmp_path: Path, tile_size: int, height: int, width: int) -> None:
    labels_h_w = superpixel_like_labels(height, width, seed=3)
    path = tmp_path / LABELS_FILE
    with LabelMapWriter(path, width=width, height=height, mpp=1.0, tile_size=tile_size) as writer:
        for top, left in blocks(height, width, 333):
            writer.write_block(top, left, labels_h_w[top : top + 333, left : left + 333])
        writer.finish()
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].tilewidth == tile_size
        levels = len(tiff.series[0].levels)
    step = 2 ** (levels - 1)
    assert max(-(-height // step), -(-width // step)) <= tile_size < max(height, width) / step * 2
    np.testing.assert_array_equal(read_labels(path, level=levels - 1), labels_h_w[::step, ::step])


def test_large_image_opens_label_map_with_uint32_tiles(
    label_map: Path, labels_h_w: np.ndarray
) -> None:
    large_image = pytest.importorskip("large_image")
    source = large_image.open(str(label_map))
    # large_image_source_tiff (libtiff) opens it; the tifffile source fails on pyramids with zarr 3.
    assert source.name == "tiff"
    metadata = source.getMetadata()
    assert (metadata["sizeX"], metadata["sizeY"], metadata["levels"]) == (WIDTH, HEIGHT, 5)
    assert (metadata["tileWidth"], metadata["tileHeight"]) == (256, 256)
    assert metadata["mm_x"] == pytest.approx(MPP / 1000, rel=1e-6)
    assert metadata["mm_y"] == pytest.approx(MPP / 1000, rel=1e-6)
    full_z = metadata["levels"] - 1
    tile = source.getTile(3, 5, full_z, numpyAllowed="always")
    assert tile.dtype == np.uint32 and tile.shape == (256, 256, 1)
    np.testing.assert_array_equal(tile[..., 0], labels_h_w[1280:1536, 768:1024])
    edge = source.getTile(10, 11, full_z, numpyAllowed="always")  # 217 x 185 px, padded to 256
    np.testing.assert_array_equal(edge[:185, :217, 0], labels_h_w[2816:, 2560:])
    coarse = source.getTile(0, 0, 0, numpyAllowed="always")  # our level 4, 174 x 188 px
    np.testing.assert_array_equal(coarse[:188, :174, 0], labels_h_w[::16, ::16])
    region, _ = source.getRegion(format=large_image.constants.TILE_FORMAT_NUMPY)
    assert region.dtype == np.uint32
    np.testing.assert_array_equal(region[..., 0], labels_h_w)


def test_large_image_without_mpp_reports_no_mm(tmp_path: Path) -> None:
    large_image = pytest.importorskip("large_image")
    path = tmp_path / LABELS_FILE
    write_map(path, superpixel_like_labels(300, 400), mpp=None)
    assert large_image.open(str(path)).getMetadata()["mm_x"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "width and height"),
        ({"height": -5}, "width and height"),
        ({"mpp": 0.0}, "mpp"),
        ({"mpp": float("nan")}, "mpp"),
        ({"tile_size": 100}, "multiple of 16"),
        ({"tile_size": 0}, "multiple of 16"),
    ],
)
def test_writer_rejects_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    arguments = {"width": 100, "height": 100, "mpp": 0.5} | kwargs
    with pytest.raises(ValueError, match=match):
        LabelMapWriter(tmp_path / LABELS_FILE, **arguments)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("top", "left", "labels", "match"),
    [
        (0, 0, np.zeros((10, 10), dtype=np.float32), "integer"),
        (0, 0, np.zeros(10, dtype=np.uint32), "2-D"),
        (95, 0, np.zeros((10, 10), dtype=np.uint32), "does not fit"),
        (0, -1, np.zeros((10, 10), dtype=np.uint32), "does not fit"),
        (0, 0, np.full((2, 2), -1), "0..4294967295"),
        (0, 0, np.full((2, 2), 2**32), "0..4294967295"),
    ],
)
def test_write_block_rejects_bad_blocks(
    tmp_path: Path, top: int, left: int, labels: np.ndarray, match: str
) -> None:
    with LabelMapWriter(tmp_path / LABELS_FILE, width=100, height=100, mpp=None) as writer:
        with pytest.raises(ValueError, match=match):
            writer.write_block(top, left, labels)


@pytest.mark.parametrize(
    ("lut", "match"),
    [
        (np.arange(5), "5 entries but the map holds id 9"),
        (np.arange(1, 11), r"lut\[0\] must be 0"),
        (np.array([0] + [-1] * 9), "lut values"),
        (np.arange(10.0), "integer"),
    ],
)
def test_finish_rejects_bad_lut(tmp_path: Path, lut: np.ndarray, match: str) -> None:
    with LabelMapWriter(tmp_path / LABELS_FILE, width=10, height=10, mpp=None) as writer:
        writer.write_block(0, 0, np.arange(100).reshape(10, 10) % 10)
        with pytest.raises(ValueError, match=match):
            writer.finish(lut)
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_writer_leaves_no_files(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="segmentation failed"):
        with LabelMapWriter(tmp_path / LABELS_FILE, width=3000, height=3000, mpp=0.5) as writer:
            writer.write_block(0, 0, np.ones((2048, 2048), dtype=np.uint32))
            assert len(list(tmp_path.iterdir())) == 1  # the scratch folder
            raise KeyError("segmentation failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="already finished or aborted"):
        writer.write_block(0, 0, np.ones((1, 1), dtype=np.uint32))


def test_failure_while_writing_the_tiff_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_level_tiles = label_map_module._level_tiles

    def failing_level_tiles(*args: object, **kwargs: object) -> Iterator[np.ndarray]:
        tiles = real_level_tiles(*args, **kwargs)
        for _ in range(3):
            yield next(tiles)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(label_map_module, "_level_tiles", failing_level_tiles)
    path = tmp_path / LABELS_FILE
    path.write_bytes(b"previous run")
    with LabelMapWriter(path, width=1000, height=1000, mpp=0.5) as writer:
        writer.write_block(0, 0, np.ones((1000, 1000), dtype=np.uint32))
        with pytest.raises(OutputError, match="No space left"):
            writer.finish()
    assert sorted(tmp_path.iterdir()) == [path]
    assert path.read_bytes() == b"previous run"


def test_dropped_writer_removes_its_scratch_folder(tmp_path: Path) -> None:
    writer = LabelMapWriter(tmp_path / LABELS_FILE, width=500, height=500, mpp=None)
    writer.write_block(0, 0, np.ones((500, 500), dtype=np.uint32))
    del writer
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_writer_in_missing_folder_is_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        LabelMapWriter(tmp_path / "missing" / LABELS_FILE, width=10, height=10, mpp=None)


def test_reading_missing_or_corrupt_label_map_is_output_error(
    tmp_path: Path, label_map: Path
) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        read_labels(tmp_path / LABELS_FILE)
    with pytest.raises(OutputError, match="does not exist"):
        label_map_shape(tmp_path / LABELS_FILE)
    junk = tmp_path / "junk.tiff"
    junk.write_bytes(b"not a tiff at all")
    with pytest.raises(OutputError, match="not a readable TIFF"):
        read_labels(junk)
    rgb = tmp_path / "rgb.tiff"
    tifffile.imwrite(rgb, np.zeros((20, 20, 3), dtype=np.uint8), photometric="rgb")
    with pytest.raises(OutputError, match="not a label map"):
        label_map_shape(rgb)
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(label_map.read_bytes()[:30_000])
    with pytest.raises(OutputError):
        read_labels(truncated)


# --- memory ---------------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time, tracemalloc
    from pathlib import Path
    import numpy as np
    from slidelabel.store.label_map import LabelMapWriter, read_labels

    size, block, cell = 20_000, 2048, 40
    path = Path(sys.argv[1])
    cells_per_row = -(-size // cell)
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    started = time.perf_counter()
    with LabelMapWriter(path, width=size, height=size, mpp=0.5) as writer:
        for top in range(0, size, block):
            rows = np.arange(top, min(top + block, size), dtype=np.uint32) // cell
            for left in range(0, size, block):
                cols = np.arange(left, min(left + block, size), dtype=np.uint32) // cell
                writer.write_block(top, left, rows[:, None] * cells_per_row + cols[None, :] + 1)
        # Reverse the ids 1..N so the LUT pass is measured too.
        writer.finish(np.concatenate([[0], np.arange(cells_per_row**2, 0, -1)]).astype(np.uint32))
    seconds = time.perf_counter() - started
    peak_traced_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss_growth_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before_mb
    corner = read_labels(path, left=size - 100, top=size - 100).tolist()
    print(json.dumps({"seconds": seconds, "peak_traced_mb": peak_traced_mb,
                      "rss_growth_mb": rss_growth_mb, "corner": corner}))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="resource.getrusage is POSIX only")
def test_writing_20000_px_map_stays_in_bounded_memory(tmp_path: Path) -> None:
    """A 20000 x 20000 map is 1.6 GB of uint32; writing it must stay far below that."""
    path = tmp_path / LABELS_FILE
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["peak_traced_mb"] < 200, report
    assert report["rss_growth_mb"] < 200, report  # ru_maxrss is in KiB on Linux
    cells_per_row = 500
    rows, cols = np.arange(19_900, 20_000) // 40, np.arange(19_900, 20_000) // 40
    expected = cells_per_row**2 + 1 - (rows[:, None] * cells_per_row + cols[None, :] + 1)
    np.testing.assert_array_equal(np.array(report["corner"]), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LABELS_FILE]


# --- table ----------------------------------------------------------------------------------


def make_table(n: int, *, with_um2: bool = True, seed: int = 0) -> SuperpixelTable:
    rng = np.random.default_rng(seed)
    x_min, y_min = rng.integers(0, 90_000, size=(2, n))
    width, height = rng.integers(1, 400, size=(2, n))
    area_px = rng.integers(1, 5000, size=n)
    return SuperpixelTable(
        ids=np.arange(1, n + 1, dtype=np.uint32),
        bbox_level0=np.stack([x_min, y_min, x_min + width, y_min + height], axis=1),
        centroid_level0=np.stack([x_min + width / 2, y_min + height / 3], axis=1),
        area_px=area_px,
        area_um2=area_px * 0.25 if with_um2 else None,
        tissue_fraction=rng.random(n).astype(np.float32),
    )


def assert_tables_equal(actual: SuperpixelTable, expected: SuperpixelTable) -> None:
    for field in dataclasses.fields(SuperpixelTable):
        got, want = getattr(actual, field.name), getattr(expected, field.name)
        if want is None:
            assert got is None, field.name
        else:
            np.testing.assert_array_equal(got, want, err_msg=field.name)


@pytest.mark.parametrize("with_um2", [True, False])
@pytest.mark.parametrize("n", [0, 1, 1000])
def test_table_round_trip(tmp_path: Path, n: int, with_um2: bool) -> None:
    table = make_table(n, with_um2=with_um2)
    path = tmp_path / TABLE_FILE
    write_table(path, table)
    back = read_table(path)
    assert_tables_equal(back, table)
    assert back.ids.dtype == np.uint32
    assert back.bbox_level0.dtype == np.int64 and back.bbox_level0.shape == (n, 4)
    assert back.centroid_level0.dtype == np.float64 and back.centroid_level0.shape == (n, 2)
    assert back.area_px.dtype == np.int64
    assert back.tissue_fraction.dtype == np.float32
    assert sorted(tmp_path.iterdir()) == [path]


def test_table_columns_are_documented_ones(tmp_path: Path) -> None:
    path = tmp_path / TABLE_FILE
    write_table(path, make_table(5))
    schema = pq.read_schema(path)
    assert schema.names == [
        "id", "x_min", "y_min", "x_max", "y_max", "centroid_x", "centroid_y", "area_px",
        "area_um2", "tissue_fraction",
    ]
    assert schema.field("id").type == pa.uint32()
    assert schema.field("x_min").type == pa.int64()
    assert schema.field("tissue_fraction").type == pa.float32()
    write_table(path, make_table(5, with_um2=False))
    assert "area_um2" not in pq.read_schema(path).names


def replace_field(table: SuperpixelTable, name: str, value: object) -> SuperpixelTable:
    return dataclasses.replace(table, **{name: value})


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("ids", np.arange(0, 4), "ids must be exactly 1..N"),
        ("ids", np.array([1, 2, 4, 3]), "ids must be exactly 1..N"),
        ("ids", np.arange(1, 5, dtype=float), "ids must be integer"),
        ("ids", np.arange(1, 5).reshape(2, 2), "ids must be 1-D"),
        ("bbox_level0", np.zeros((4, 3), dtype=int), r"bbox_level0 has shape \(4, 3\)"),
        ("bbox_level0", np.tile([5, 5, 5, 9], (4, 1)), "bbox_level0 needs"),
        ("bbox_level0", np.tile([-1, 0, 5, 9], (4, 1)), "bbox_level0 needs"),
        ("centroid_level0", np.zeros((3, 2)), r"centroid_level0 has shape \(3, 2\)"),
        ("centroid_level0", np.full((4, 2), np.inf), "centroid_level0 must be finite"),
        ("area_px", np.zeros(4, dtype=int), "area_px must be >= 1"),
        ("area_px", np.ones(4), "area_px must be integer"),
        ("area_um2", np.ones(5), r"area_um2 has shape \(5,\)"),
        ("area_um2", np.full(4, np.nan), "area_um2 must be > 0"),
        ("tissue_fraction", np.full(4, 1.5), r"tissue_fraction must lie in \[0, 1\]"),
        ("tissue_fraction", np.array(["a"] * 4), "tissue_fraction must be numeric"),
    ],
)
def test_write_table_validates_and_names_the_field(
    tmp_path: Path, name: str, value: object, match: str
) -> None:
    path = tmp_path / TABLE_FILE
    with pytest.raises(ValueError, match=match):
        write_table(path, replace_field(make_table(4), name, value))
    assert list(tmp_path.iterdir()) == []


def test_reading_missing_or_corrupt_table_is_output_error(tmp_path: Path) -> None:
    path = tmp_path / TABLE_FILE
    with pytest.raises(OutputError, match="does not exist"):
        read_table(path)
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(OutputError, match="not readable Parquet"):
        read_table(path)
    write_table(path, make_table(3))
    pq.write_table(pq.read_table(path).drop_columns(["tissue_fraction", "x_max"]), path)
    with pytest.raises(OutputError, match="lacks the columns tissue_fraction, x_max"):
        read_table(path)
    write_table(path, make_table(3))
    arrow_table = pq.read_table(path)
    index = arrow_table.column_names.index("tissue_fraction")
    bad = arrow_table.set_column(index, "tissue_fraction", pa.array([0.5, 2.0, 0.1], pa.float32()))
    pq.write_table(bad, path)
    with pytest.raises(OutputError, match="tissue_fraction must lie in"):
        read_table(path)


# --- manifest and hash ----------------------------------------------------------------------


def test_manifest_round_trip_sorted_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_FILE
    assert read_manifest(path) is None
    manifest = {"slide": {"sha256": "ab" * 32, "mpp": 0.499}, "n_superpixels": 12, "a": [1, 2]}
    write_manifest(path, manifest)
    assert read_manifest(path) == manifest
    assert path.read_text() == json.dumps(manifest, sort_keys=True, indent=2) + "\n"
    assert sorted(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize(
    ("content", "match"),
    [(b'{"a": ', "not valid JSON"), (b"[1, 2]", "JSON object"), (b"\xff\xfe\x00", "unreadable")],
)
def test_corrupt_manifest_is_output_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / MANIFEST_FILE
    path.write_bytes(content)
    with pytest.raises(OutputError, match=match):
        read_manifest(path)


def test_write_manifest_needs_a_dict(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dict"):
        write_manifest(tmp_path / MANIFEST_FILE, [1, 2])  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("chunk_bytes", [1, 7, 8 << 20])
def test_file_sha256_matches_hashlib(tmp_path: Path, chunk_bytes: int) -> None:
    path = tmp_path / "slide.bin"
    data = np.random.default_rng(0).bytes(100_003)
    path.write_bytes(data)
    assert file_sha256(path, chunk_bytes=chunk_bytes) == hashlib.sha256(data).hexdigest()


def test_file_sha256_of_real_slide(cmu_slide: Path) -> None:
    assert file_sha256(cmu_slide) == hashlib.sha256(cmu_slide.read_bytes()).hexdigest()


def test_file_sha256_errors(tmp_path: Path) -> None:
    with pytest.raises(SlideNotFoundError, match="does not exist"):
        file_sha256(tmp_path / "missing.svs")
    with pytest.raises(ValueError, match="chunk_bytes"):
        file_sha256(tmp_path, chunk_bytes=0)
