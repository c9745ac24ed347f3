"""Eighth attack, H2 and H3: superpixel options within their ranges could still ask one worker
for a seed grid of any size (7.3 GB in seconds for 4 px superpixels on a 40,960 px slide), and
the window cache between the passes wrote 3 bytes per pixel, uncompressed and unbounded, to the
data folder's disk (5 GB in 100 s, 125 GB at the largest slide allowed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines import window_cache
from slidelabel.pipelines.slides import Slide
from slidelabel.pipelines.window_cache import WindowCache
from slidelabel.services import superpixels as service
from slidelabel.services.superpixels import (
    SuperpixelOptions,
    SuperpixelSize,
    check_planned_superpixels,
    compute_slide_superpixels,
    planned_scale,
    working_scale,
)
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import LABELS_FILE

#: The attack's options: the slide's level 0 in 4 px superpixels (2220 x 2967 px: 411,810 seeds).
DENSE = SuperpixelOptions(magnification=0, size=SuperpixelSize(4, "px"))
#: Coarse enough to run in about a second, fine enough for several tiles.
FAST = {"magnification": 10, "size": SuperpixelSize(30, "um"), "tile_size": 256, "tissue_only": False}


def test_more_seeds_than_the_bound_fail_before_the_engine_allocates_them(cmu_slide, tmp_path, monkeypatch):
    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was built for a slide past the bound")

    monkeypatch.setattr(service, "SuperpixelEngine", no_engine)
    with pytest.raises(ParameterError) as error:
        compute_slide_superpixels(cmu_slide, tmp_path / "sp", DENSE, max_superpixels=100_000)
    message = str(error.value)
    for part in ("411,810 superpixels", "2,220 x 2,967", "4 px", "100,000", "SLIDELABEL_MAX_SUPERPIXELS_PER_SLIDE",
                 "larger size"):
        assert part in message, message
    assert str(cmu_slide.parent) not in message
    assert not (tmp_path / "sp" / LABELS_FILE).exists()


@pytest.mark.parametrize("options", [
    SuperpixelOptions(),
    SuperpixelOptions(magnification=0, size=SuperpixelSize(6, "px")),
    SuperpixelOptions(magnification=20, size=SuperpixelSize(16, "um")),
    SuperpixelOptions(magnification=12, size=SuperpixelSize(16, "px")),
    SuperpixelOptions(mpp=0.51, size=SuperpixelSize(20, "um")),
    SuperpixelOptions(mpp=3.3, size=SuperpixelSize(64, "px")),
    SuperpixelOptions(magnification=40),  # finer than level 0: the job decides (and refuses)
])
def test_the_scale_planned_from_the_slide_record_is_the_jobs_own(cmu_slide, options):
    with Slide(cmu_slide) as slide:
        info = slide.info
        try:
            actual = working_scale(slide, options)
        except ParameterError:
            actual = None
    assert planned_scale(info.width, info.height, info.mpp, options) == actual


def test_the_planned_check_refuses_what_the_job_would_refuse(cmu_slide):
    with pytest.raises(ParameterError, match=r"slide 'a\.svs'.*411,810 superpixels.*at most 100,000"):
        check_planned_superpixels(2220, 2967, 0.499, DENSE, limit=100_000, slide_name="a.svs")
    check_planned_superpixels(2220, 2967, 0.499, DENSE, limit=411_810, slide_name="a.svs")
    # A size in um that is under 4 px at the slide's resolution is refused before it is queued too.
    with pytest.raises(ParameterError, match=r"slide 'a\.svs'.*at least 4 px"):
        check_planned_superpixels(2220, 2967, 0.499, SuperpixelOptions(magnification=0, size=SuperpixelSize(1, "um")),
                                  limit=None, slide_name="a.svs")
    # Without a pixel size a size in um cannot be planned: the job says what is missing.
    check_planned_superpixels(2220, 2967, None, SuperpixelOptions(), limit=1, slide_name="a.svs")


@pytest.fixture(scope="module")
def tissue_rgb(cmu_slide) -> np.ndarray:
    with Slide(cmu_slide) as slide:
        return slide.read_region(0, 0, 1024, 1024)


def test_windows_are_kept_compressed_and_come_back_exactly(tissue_rgb, tmp_path):
    with WindowCache(tmp_path) as cache:
        assert cache.put((0, 0), tissue_rgb)
        on_disk = sum(f.stat().st_size for f in cache.folder.iterdir())
        assert on_disk == cache.held < 0.8 * tissue_rgb.nbytes
        back = cache.take((0, 0))
        assert np.array_equal(back, tissue_rgb) and back.flags.writeable
        assert cache.take((0, 0)) is None and not any(cache.folder.iterdir())
    assert not cache.folder.exists()


def test_windows_past_the_bound_are_not_kept(tissue_rgb, tmp_path):
    one = len(window_cache.imagecodecs.zstd_encode(tissue_rgb, level=1))
    with WindowCache(tmp_path, max_bytes=2 * one + one // 2) as cache:
        kept = [cache.put((i, 0), tissue_rgb) for i in range(4)]
        assert kept == [True, True, False, False] and cache.skipped == 2
        assert sum(f.stat().st_size for f in cache.folder.iterdir()) == cache.held <= cache.max_bytes
        assert cache.take((2, 0)) is None  # the caller reads the slide again
        assert cache.take((0, 0)) is not None and cache.put((2, 0), tissue_rgb)  # taking frees room


def test_the_cache_leaves_the_disk_its_reserve(tissue_rgb, tmp_path, monkeypatch):
    usage = window_cache.shutil.disk_usage(tmp_path)
    reserve = window_cache.reserve_bytes(tmp_path)
    # A window of the tissue compresses to far more than the 1,000 bytes left above the reserve.
    monkeypatch.setattr(window_cache.shutil, "disk_usage",
                        lambda path: type(usage)(usage.total, usage.total - reserve - 1000, reserve + 1000))
    with WindowCache(tmp_path) as cache:
        assert not cache.put((0, 0), tissue_rgb) and not any(cache.folder.iterdir())


def test_a_bounded_cache_gives_the_same_superpixels_and_stays_within_its_bound(cmu_slide, tmp_path, monkeypatch):
    options = SuperpixelOptions(**FAST)
    seen: list[int] = []

    class Measured(WindowCache):
        def put(self, key, rgb):
            kept = super().put(key, rgb)
            seen.append(sum(f.stat().st_size for f in self.folder.iterdir()))
            return kept

    monkeypatch.setattr(service, "WindowCache", Measured)
    whole = compute_slide_superpixels(cmu_slide, tmp_path / "whole", options)
    unbounded_peak = max(seen)
    seen.clear()
    bound = unbounded_peak // 3
    bounded = compute_slide_superpixels(cmu_slide, tmp_path / "bounded", options, cache_bytes=bound)
    assert 0 < max(seen) <= bound < unbounded_peak
    none = compute_slide_superpixels(cmu_slide, tmp_path / "none", options, cache_bytes=0)
    assert whole.superpixels == bounded.superpixels == none.superpixels
    labels = [read_labels(tmp_path / name / LABELS_FILE) for name in ("whole", "bounded", "none")]
    assert np.array_equal(labels[0], labels[1]) and np.array_equal(labels[0], labels[2])
    assert not list(Path(tmp_path).glob("*/.*.tmp*"))
