"""Superpixel algorithms compared at equal superpixel counts on the MoNuSeg nuclei crops.

For every algorithm and target count, each image is segmented with the algorithm's size parameter
tuned (a few retries from the previous image's value) until the produced count is within 10 % of the
target; the count reported is the count produced. Quality is measured against the nuclei masks
(each nucleus and the background are segments): boundary recall and precision at 2 px, corrected
under-segmentation error and achievable segmentation accuracy. Speed is megapixels per second of
one single-threaded worker (OpenCV, OpenMP and numba are held to one thread), timing only the
accepted run, colour conversion included.

Run::

    .venv/bin/python benchmarks/superpixel_algorithms.py [--images N] [--counts 1000,2500]

One JSON object goes to stdout, progress to stderr.
"""

from __future__ import annotations

import os

# Thread pools are sized when numpy, cv2 and numba load, so the limits go first: the speed
# reported is that of one worker, and the workers run side by side.
for _variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                  "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Hashable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage.io import imread  # noqa: E402
from skimage.segmentation import slic  # noqa: E402

from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array  # noqa: E402
from slidelabel.pipelines.segmentation_quality import (  # noqa: E402
    achievable_segmentation_accuracy,
    boundary_precision,
    boundary_recall,
    count_superpixels,
    truth_segments,
    undersegmentation_error,
)

MONUSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg-train"
TOLERANCE_PX = 2
COUNT_TOLERANCE = 0.10
MAX_ATTEMPTS = 6
CV2_ITERATIONS = 10
# OpenCV's MSLIC splits superpixels whose colour-manifold area is large; with the default ruler
# (10) it turns a 1000-superpixel grid into 20,000-60,000 superpixels on H&E and takes 8-20 s per
# megapixel. A ruler of 100 keeps its counts near the seed grid so the size can be tuned.
MSLIC_RULER = 100.0
SEEDS_LEVELS = (4, 3, 2)  # preferred first: more levels refine more (OpenCV's docs)


@dataclass(frozen=True)
class Algorithm:
    """A superpixel algorithm with one knob that sets how many superpixels it makes.

    ``knob`` is a side length in pixels when ``knob_is_size`` (count ~ pixels / knob**2), else a
    count (count ~ knob); ``setting(height, width, knob)`` turns it into the parameters ``run``
    takes (outside the timing), and ``run(rgb_h_w_3, setting)`` returns the labels ``(H, W)``.
    """

    name: str
    knob_is_size: bool
    setting: Callable[[int, int, float], Hashable]
    run: Callable[[np.ndarray, Hashable], np.ndarray]

    def first_knob(self, height: int, width: int, target: int) -> float:
        return math.sqrt(height * width / target) if self.knob_is_size else float(target)

    @property
    def log_slope(self) -> float:
        """Nominal d log(count) / d log(knob)."""
        return -2.0 if self.knob_is_size else 1.0


def _size_setting(height: int, width: int, knob: float) -> int:
    return max(2, round(knob))


def _count_setting(height: int, width: int, knob: float) -> int:
    return max(1, round(knob))


def _seeds_count(height: int, width: int, requested: int, levels: int) -> int:
    """The seed-grid count OpenCV's SEEDS makes from a request (its constructor's arithmetic)."""
    unit = 1 << (levels - 1)
    rows = max(1, int(math.sqrt(requested * height / width)))
    cols = max(1, rows * width // height)
    block_w, block_h = math.ceil(width / cols / unit) * unit, math.ceil(height / rows / unit) * unit
    return (width // block_w) * (height // block_h)


def _seeds_setting(height: int, width: int, knob: float) -> tuple[int, int]:
    """(requested count, levels) whose SEEDS grid is nearest ``knob``, with as many levels as fit.

    SEEDS counts come in steps of whole grid rows and columns of blocks 2**(levels-1) pixels
    apart, so with 4 levels a 1000 x 1000 image can have 961 or 1681 superpixels but nothing near
    2500; fewer levels give finer steps.
    """
    best: tuple[float, int, int] = (math.inf, 0, 0)
    for levels in SEEDS_LEVELS:
        for requested in range(max(1, int(knob * 0.5)), int(knob * 2) + 2):
            miss = abs(_seeds_count(height, width, requested, levels) - knob) / knob
            if miss < best[0]:
                best = (miss, requested, levels)
        if best[0] <= COUNT_TOLERANCE:
            break
    return best[1], best[2]


def _run_cv2_slic(algorithm: int, ruler: float) -> Callable[[np.ndarray, Hashable], np.ndarray]:
    def run(rgb_h_w_3: np.ndarray, region_size: Hashable) -> np.ndarray:
        lab = cv2.cvtColor(rgb_h_w_3, cv2.COLOR_RGB2LAB)
        engine = cv2.ximgproc.createSuperpixelSLIC(
            lab, algorithm=algorithm, region_size=region_size, ruler=ruler
        )
        engine.iterate(CV2_ITERATIONS)
        engine.enforceLabelConnectivity()
        return engine.getLabels()

    return run


def _run_cv2_lsc(rgb_h_w_3: np.ndarray, region_size: Hashable) -> np.ndarray:
    lab = cv2.cvtColor(rgb_h_w_3, cv2.COLOR_RGB2LAB)
    engine = cv2.ximgproc.createSuperpixelLSC(lab, region_size)
    engine.iterate(CV2_ITERATIONS)
    engine.enforceLabelConnectivity()
    return engine.getLabels()


def _run_cv2_seeds(rgb_h_w_3: np.ndarray, setting: Hashable) -> np.ndarray:
    requested, levels = setting
    height, width = rgb_h_w_3.shape[:2]
    engine = cv2.ximgproc.createSuperpixelSEEDS(width, height, 3, requested, levels)
    engine.iterate(cv2.cvtColor(rgb_h_w_3, cv2.COLOR_RGB2LAB))
    return engine.getLabels()


def _run_skimage_histomics(rgb_h_w_3: np.ndarray, n_segments: Hashable) -> np.ndarray:
    return slic(rgb_h_w_3, n_segments=n_segments, slic_zero=True, compactness=1, sigma=0,
                enforce_connectivity=True, start_label=0)


def _run_skimage_plain(rgb_h_w_3: np.ndarray, n_segments: Hashable) -> np.ndarray:
    return slic(rgb_h_w_3, n_segments=n_segments, compactness=10, start_label=0)


def _algorithms() -> tuple[dict[str, Algorithm], dict[str, str]]:
    """The algorithms that can run here, and a note for each that cannot."""
    available = {
        "skimage_slic_histomics": Algorithm("skimage_slic_histomics", False, _count_setting,
                                            _run_skimage_histomics),
        "skimage_slic": Algorithm("skimage_slic", False, _count_setting, _run_skimage_plain),
        "cv2_slic": Algorithm("cv2_slic", True, _size_setting,
                              _run_cv2_slic(cv2.ximgproc.SLIC, 10.0)),
        "cv2_slico": Algorithm("cv2_slico", True, _size_setting,
                               _run_cv2_slic(cv2.ximgproc.SLICO, 10.0)),
        "cv2_mslic": Algorithm("cv2_mslic", True, _size_setting,
                               _run_cv2_slic(cv2.ximgproc.MSLIC, MSLIC_RULER)),
        "cv2_lsc": Algorithm("cv2_lsc", True, _size_setting, _run_cv2_lsc),
        "cv2_seeds": Algorithm("cv2_seeds", False, _seeds_setting, _run_cv2_seeds),
    }
    skipped: dict[str, str] = {}
    available["slidelabel"] = Algorithm(
        "slidelabel", True, _size_setting,
        lambda rgb_h_w_3, step: superpixel_array(rgb_h_w_3, SuperpixelParams(step=max(int(step), 4))),
    )
    available["slidelabel_sharp"] = Algorithm(  # no smoothing, lower compactness: the recall end
        "slidelabel_sharp", True, _size_setting,
        lambda rgb_h_w_3, step: superpixel_array(
            rgb_h_w_3, SuperpixelParams(step=max(int(step), 4), compactness=10, smoothing=0)),
    )
    return available, skipped


def _segment_at_count(
    algorithm: Algorithm, rgb_h_w_3: np.ndarray, target: int, knob: float
) -> dict:
    """Tune the knob from ``knob`` until the count is near ``target``; the closest run wins.

    Steps are Newton steps on log(count) with the nominal slope until a knob on each side of the
    target is known, then bisections in log(knob): counts after connectivity enforcement follow
    the knob only roughly (skimage's plain SLIC can make 30 % fewer superpixels than asked).
    """
    height, width = rgb_h_w_3.shape[:2]
    tried: dict[Hashable, dict] = {}
    bracket: dict[bool, float] = {}  # too_many -> log(knob) that gave it
    for _ in range(MAX_ATTEMPTS):
        setting = algorithm.setting(height, width, knob)
        if setting in tried:
            break
        started = time.perf_counter()
        labels_h_w = algorithm.run(rgb_h_w_3, setting)
        seconds = time.perf_counter() - started
        count = count_superpixels(labels_h_w)
        tried[setting] = {"labels": labels_h_w, "seconds": seconds, "count": count, "knob": knob,
                          "setting": setting}
        if abs(count - target) <= COUNT_TOLERANCE * target:
            break
        bracket[count > target] = math.log(knob)
        if len(bracket) == 2:
            knob = math.exp((bracket[True] + bracket[False]) / 2)
        else:
            knob *= math.exp(math.log(target / count) / algorithm.log_slope)
    return min(tried.values(), key=lambda run: abs(run["count"] - target))


def _quality(labels_h_w: np.ndarray, truth_h_w: np.ndarray) -> dict[str, float]:
    return {
        "boundary_recall": boundary_recall(labels_h_w, truth_h_w, tolerance_px=TOLERANCE_PX),
        "boundary_precision": boundary_precision(labels_h_w, truth_h_w, tolerance_px=TOLERANCE_PX),
        "undersegmentation_error": undersegmentation_error(labels_h_w, truth_h_w),
        "asa": achievable_segmentation_accuracy(labels_h_w, truth_h_w),
    }


def _run_images(job: tuple[list[str], list[str], list[int]]) -> tuple[list[dict], dict[str, str]]:
    """One worker: every algorithm and target on some images, carrying tuned knobs along."""
    image_paths, names, targets = job
    cv2.setNumThreads(1)
    available, skipped = _algorithms()
    algorithms = {name: available[name] for name in names if name in available}
    warm_rgb = np.ascontiguousarray(imread(image_paths[0])[:96, :96, :3])
    for name, algorithm in list(algorithms.items()):
        try:  # compiles numba kernels and loads libraries before anything is timed
            algorithm.run(warm_rgb, algorithm.setting(96, 96, algorithm.first_knob(96, 96, 16)))
        except Exception as error:  # noqa: BLE001 - one broken algorithm must not stop the others
            skipped[name] = f"failed on a 96 x 96 warm-up crop: {error!r}"
            del algorithms[name]
    records: list[dict] = []
    knobs: dict[tuple[str, int], float] = {}
    for path in image_paths:
        rgb_h_w_3 = np.ascontiguousarray(imread(path)[..., :3])
        truth_h_w = truth_segments(imread(Path(path).parent.parent / "masks" / Path(path).name))
        height, width = truth_h_w.shape
        for name, algorithm in list(algorithms.items()):
            for target in targets:
                knob = knobs.get((name, target), algorithm.first_knob(height, width, target))
                try:
                    run = _segment_at_count(algorithm, rgb_h_w_3, target, knob)
                except Exception as error:  # noqa: BLE001
                    skipped[name] = f"failed on {Path(path).name}: {error!r}"
                    del algorithms[name]
                    break
                knobs[(name, target)] = run["knob"]
                labels_h_w = run["labels"]
                records.append({
                    "algorithm": name, "target": target, "image": Path(path).name,
                    "count": run["count"], "setting": repr(run["setting"]),
                    "seconds": run["seconds"], "megapixels": labels_h_w.size / 1e6,
                    **_quality(labels_h_w, truth_h_w),
                })
                print(f"{Path(path).name} {name} target {target}: {run['count']} superpixels "
                      f"({run['setting']!r}) in {run['seconds']:.2f} s",
                      file=sys.stderr, flush=True)
    return records, skipped


def _summary(records: list[dict], target: int) -> dict:
    counts = [record["count"] for record in records]
    summary = {
        "count": float(np.mean(counts)),
        "count_min": min(counts),
        "count_max": max(counts),
        "images_off_target": sum(abs(c - target) > COUNT_TOLERANCE * target for c in counts),
    }
    for metric in ("boundary_recall", "boundary_precision", "undersegmentation_error", "asa"):
        summary[metric] = round(float(np.mean([record[metric] for record in records])), 4)
    megapixels = sum(record["megapixels"] for record in records)
    summary["mp_per_s"] = round(megapixels / sum(record["seconds"] for record in records), 3)
    summary["settings"] = sorted({record["setting"] for record in records})
    return summary


def _image_subset(n_images: int) -> list[str]:
    paths = sorted(str(path) for path in (MONUSEG / "images").glob("*.png"))
    if not paths:
        raise SystemExit(f"no MoNuSeg images under {MONUSEG / 'images'}")
    # Spread over the sorted names, which group the TCGA sites (organs) together.
    picks = np.linspace(0, len(paths) - 1, min(n_images, len(paths))).round().astype(int)
    return [paths[index] for index in picks]


def main(argv: list[str] | None = None) -> None:
    """Benchmark every available algorithm and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="MoNuSeg images to use (30 = all)")
    parser.add_argument("--counts", default="1000,2500",
                        help="target superpixel counts, comma-separated")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel single-threaded workers")
    parser.add_argument("--algorithms", default=None, help="comma-separated subset of names")
    args = parser.parse_args(argv)
    targets = [int(count) for count in args.counts.split(",")]
    if args.images < 1 or args.workers < 1 or min(targets) < 2:
        parser.error("--images and --workers must be >= 1 and every count >= 2")
    available, skipped = _algorithms()
    names = [*available, *skipped] if args.algorithms is None else args.algorithms.split(",")
    unknown = sorted(set(names) - set(available) - set(skipped))
    if unknown:
        parser.error(f"unknown algorithms {unknown}; known: {sorted(available) + sorted(skipped)}")
    for name, note in skipped.items():
        print(f"skipping {name}: {note}", file=sys.stderr)

    paths = _image_subset(args.images)
    n_workers = min(args.workers, len(paths))
    jobs = [(paths[worker::n_workers], names, targets) for worker in range(n_workers)]
    started = time.perf_counter()
    records: list[dict] = []
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        for worker_records, worker_skipped in pool.map(_run_images, jobs):
            records += worker_records
            skipped.update(worker_skipped)
    results = {
        name: {
            str(target): _summary(
                [r for r in records if r["algorithm"] == name and r["target"] == target], target
            )
            for target in targets
        }
        for name in names
        if name not in skipped
    }
    print(json.dumps({
        "images": [Path(path).name for path in paths],
        "targets": targets,
        "tolerance_px": TOLERANCE_PX,
        "count_tolerance": COUNT_TOLERANCE,
        "workers": n_workers,
        "threads_per_worker": 1,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
        "skipped": {name: note for name, note in skipped.items() if name in names},
    }, indent=2))


if __name__ == "__main__":
    main()
