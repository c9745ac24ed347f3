"""Cohort benchmark: ``slidelabel predict`` over whole slides, one worker and two.

Prints one JSON object:

* ``cohort``: ``--slides`` synthetic whole slides (default 20) of ``--side-px`` square (default
  40,960 px at 40x, 0.2527 um/px) built from real tissue: four 4,096 px tissue mosaics of
  :mod:`tissue_mosaic` (MoNuSeg training images, stain-normalised, tiled into organ regions on
  glass, with masks) repeated, mirrored, across each slide, as pyramidal JPEG TIFFs written tile
  by tile (memory: one mosaic). They are kept in ``--cache`` (default
  ``$SLIDELABEL_CACHE/benchmarks/cohort``): a rerun builds nothing.
* ``model``: a ``linear`` model on ``tissue`` features with per-slide normalisation (the project
  defaults, :mod:`slidelabel.services.projects`), trained in seconds on labels read from the first
  mosaic's mask at the default superpixels (10x, 50 um).
* ``one_worker``: ``slidelabel predict`` of the whole cohort in one process, single-threaded
  (``OMP_NUM_THREADS=1`` and friends) and pinned to one CPU: slides per hour, and the peak
  resident memory of the process (``ru_maxrss`` of the child; target under 2 GB).
* ``two_workers``: two such processes at once, each over half of the cohort and pinned to its
  own CPU: slides per hour together, the ratio to one worker (target at least 1.7) and the peak
  memory of each.

The machine's load average is recorded: other people's work on the same cores lowers both
figures and the ratio; each worker's CPU time (``slides_per_cpu_hour``) is given as well, which
they do not lower. ``full_default_estimate_h`` scales the measured time to 20 slides of
40,960 px, for runs made smaller with ``--slides`` and ``--side-px``.

Run: ``.venv/bin/python benchmarks/cohort.py [--slides 20] [--side-px 40960] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tissue_mosaic  # noqa: E402 - the sibling benchmark that builds the slides

from slidelabel.pipelines.features.extract import read_features  # noqa: E402
from slidelabel.pipelines.features.patches import table_centroids  # noqa: E402
from slidelabel.pipelines.models import Category, save_model, train  # noqa: E402
from slidelabel.pipelines.normalisation import normalised  # noqa: E402
from slidelabel.services.cohort import features_file, slide_features  # noqa: E402
from slidelabel.services.projects import DEFAULT_EXTRACTOR, DEFAULT_MODEL, DEFAULT_NORMALISATION  # noqa: E402
from slidelabel.services.superpixels import SuperpixelOptions  # noqa: E402
from slidelabel.store.superpixel_files import MANIFEST_FILE, TABLE_FILE, read_manifest  # noqa: E402
from slidelabel.store.superpixel_table import read_table  # noqa: E402

FULL_SLIDES, FULL_SIDE_PX = 20, 40 * tissue_mosaic.CHUNK
#: Side of the tissue mosaics (with masks) that the slides tile, and how many there are.
MOTIF_PX, MOTIFS = 4 * tissue_mosaic.CHUNK, 4
#: Labelled superpixels per class for the model: a few minutes of a user's clicks.
LABELS_PER_CLASS = 100
SINGLE_THREADED = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                          "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")}
MEMORY_TARGET_GB, RATIO_TARGET = 2.0, 1.7


def default_cache() -> Path:
    return Path(os.environ.get("SLIDELABEL_CACHE", Path.home() / ".cache" / "slidelabel")) / "benchmarks" / "cohort"


@dataclass(frozen=True)
class MirroredTiling:
    """A ``side`` x ``side`` RGB image that repeats ``motif``, mirrored every other time so that
    the copies meet without seams, shifted by ``offset_px``; sliced lazily (``image[rows, cols]``)."""

    motif: np.ndarray
    side: int
    offset_px: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.side, self.side, 3

    def _mirrored(self, span: slice, period: int) -> np.ndarray:
        at = (np.arange(*span.indices(self.side)) + self.offset_px) % (2 * period)
        return np.where(at < period, at, 2 * period - 1 - at)

    def __getitem__(self, index: tuple[slice, slice]) -> np.ndarray:
        rows, cols = index
        return self.motif[np.ix_(self._mirrored(rows, self.motif.shape[0]), self._mirrored(cols, self.motif.shape[1]))]


def _halved(rgb_H_W_3: np.ndarray) -> np.ndarray:
    height, width = rgb_H_W_3.shape[0] // 2 * 2, rgb_H_W_3.shape[1] // 2 * 2
    quads = rgb_H_W_3[:height, :width].astype(np.float32).reshape(height // 2, 2, width // 2, 2, 3)
    return np.round(quads.mean(axis=(1, 3))).astype(np.uint8)


def build_motifs(cache: Path) -> list[Path]:
    """:data:`MOTIFS` tissue mosaics of :data:`MOTIF_PX` (with masks) in ``cache``, built once:
    motif k fills its organ regions with the k-th MoNuSeg image of each of four organs."""
    for sub in ("slides", "masks"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    organs = tissue_mosaic.DEFAULT_ORGANS
    sources = tissue_mosaic.source_images(tissue_mosaic.MONUSEG, organs, MOTIFS)
    paths = []
    for k in range(MOTIFS):
        path = cache / "slides" / f"motif-{MOTIF_PX}-{k:03d}.tiff"
        if not path.is_file():  # written atomically: there means whole
            images = [tissue_mosaic.normalised_image(tissue_mosaic.MONUSEG / "images" / f"{sources[k][o]}.png")
                      for o in organs]
            tissue_mosaic.make_slide(cache, path.stem, images, MOTIF_PX, (k, MOTIF_PX))
        paths.append(path)
    return paths


def build_slides(cache: Path, count: int, side_px: int) -> tuple[list[Path], float | None]:
    """``count`` slides of ``side_px`` in ``cache/slides/`` (those already there are kept) and the
    seconds building one took (None when all were there). Slide i tiles motif ``i mod MOTIFS``,
    mirrored, shifted by ``1000 i`` px; its pyramid levels tile the motif's halvings, written tile
    by tile (memory: the motif's levels, 67 MB)."""
    motifs = build_motifs(cache)
    paths, started, built = [], time.perf_counter(), 0
    for index in range(count):
        path = cache / "slides" / f"cohort-{side_px}-{index:03d}.tiff"
        if not path.is_file():
            built += 1
            motif = tifffile.imread(motifs[index % MOTIFS], key=0)
            levels = [MirroredTiling(motif, side_px, 1000 * index)]
            while max(levels[-1].shape[:2]) >= 512:
                motif = _halved(motif)
                levels.append(MirroredTiling(motif, levels[-1].side // 2, 1000 * index >> len(levels)))
            tissue_mosaic.write_pyramid(path, levels, tissue_mosaic._JPEG)  # the mosaics' own JPEG settings
        paths.append(path)
    return paths, (time.perf_counter() - started) / built if built else None


def train_model(cache: Path, out: Path) -> tuple[Path, dict]:
    """A model at the project defaults trained on the first motif's mask: ``LABELS_PER_CLASS``
    superpixels per class, glass and organs (the class under each superpixel's centroid), saved
    to ``out``."""
    slide = build_motifs(cache)[0]
    folder = out / "training"
    options = SuperpixelOptions()
    slide_features(slide, folder, options, extractor=DEFAULT_EXTRACTOR)
    downsample = read_manifest(folder / MANIFEST_FILE)["working"]["downsample"]
    ids_N, centroid_N_2 = table_centroids(read_table(folder / TABLE_FILE), downsample)
    mask = tifffile.imread(cache / "masks" / slide.name, key=0)
    rows = np.clip(((centroid_N_2[:, 1] + 0.5) * downsample).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(((centroid_N_2[:, 0] + 0.5) * downsample).astype(int), 0, mask.shape[1] - 1)
    classes_N = mask[rows, cols].astype(int)
    feats_N_D = normalised(read_features(features_file(folder, DEFAULT_EXTRACTOR)), DEFAULT_NORMALISATION)[ids_N - 1]
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(classes_N == k))[:LABELS_PER_CLASS]
                             for k in np.unique(classes_N)])
    categories = [Category("glass"), *(Category(organ) for organ in tissue_mosaic.DEFAULT_ORGANS)]
    model = train(feats_N_D[chosen], classes_N[chosen], categories, model=DEFAULT_MODEL,
                  feature_extractor=DEFAULT_EXTRACTOR, rng=rng)
    model.normalisation = DEFAULT_NORMALISATION
    path = out / "model.slmodel"
    save_model(model, path)
    accuracy = float((model.predict_proba(feats_N_D).argmax(1) == classes_N).mean())
    return path, {"extractor": DEFAULT_EXTRACTOR, "model": DEFAULT_MODEL, "normalisation": DEFAULT_NORMALISATION,
                  "labels": int(chosen.size), "superpixels": int(ids_N.size),
                  "training_slide_accuracy": round(accuracy, 3)}


def start_worker(slides: list[Path], model: Path, out: Path, cpu: int | None) -> subprocess.Popen:
    """``slidelabel predict`` of ``slides`` into ``out``, single-threaded, on CPU ``cpu`` if given."""
    command = [str(Path(sys.executable).with_name("slidelabel")), "predict", *map(str, slides),
               "--model", str(model), "--out", str(out), "--quiet"]
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen(command, env={**os.environ, **SINGLE_THREADED}, preexec_fn=pin,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_worker(process: subprocess.Popen) -> tuple[float, float]:
    """Wait for ``process``; its peak resident memory (GB) and CPU time (s). A failed run is an error."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"slidelabel predict failed ({process.returncode}): {process.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss * 1024 / 1e9, usage.ru_utime + usage.ru_stime  # ru_maxrss in KiB on Linux


def run_workers(groups: list[list[Path]], model: Path, out: Path, cpus: list[int | None]) -> dict:
    """Run one worker per group at once; wall time, slides per hour and each worker's peak memory."""
    started = time.perf_counter()
    processes = [start_worker(group, model, out / f"worker{i}", cpu)
                 for i, (group, cpu) in enumerate(zip(groups, cpus))]
    peaks, cpu_seconds = zip(*(wait_worker(process) for process in processes))
    seconds = time.perf_counter() - started
    slides = sum(map(len, groups))
    records = [json.loads(p.read_text()) for p in sorted(out.glob("worker*/*/predictions.json"))]
    if len(records) != slides:
        raise RuntimeError(f"{len(records)} of {slides} slides have predictions in {out}")
    return {"workers": len(groups), "slides": slides, "seconds": round(seconds, 1),
            "slides_per_hour": round(slides * 3600 / seconds, 2), "peak_memory_gb": [round(p, 3) for p in peaks],
            "cpu_seconds": [round(c, 1) for c in cpu_seconds],
            "slides_per_cpu_hour": round(slides * 3600 / sum(cpu_seconds), 2),
            "cpus": cpus, "superpixels_per_slide": [r["superpixels"] for r in records],
            "seconds_per_slide": [r["seconds"] for r in records]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=FULL_SLIDES, help=f"Slides in the cohort (default {FULL_SLIDES}).")
    parser.add_argument("--side-px", type=int, default=FULL_SIDE_PX,
                        help=f"Side of each slide, a multiple of {tissue_mosaic.CHUNK} (default {FULL_SIDE_PX}).")
    parser.add_argument("--cache", type=Path, default=default_cache(), help="Folder keeping the slides between runs.")
    args = parser.parse_args(argv)
    if args.slides < 2 or args.side_px < tissue_mosaic.CHUNK or args.side_px % tissue_mosaic.CHUNK:
        parser.error(f"--slides must be >= 2 and --side-px a multiple of {tissue_mosaic.CHUNK}, "
                     f"got {args.slides} and {args.side_px}")
    args.cache.mkdir(parents=True, exist_ok=True)
    slides, build_seconds = build_slides(args.cache, args.slides, args.side_px)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cpus = affinity[:2] if len(affinity) >= 2 else [None, None]
    report: dict = {"cohort": {"slides": len(slides), "side_px": args.side_px, "mpp": tissue_mosaic.MPP,
                               "cache": str(args.cache),
                               "build_seconds_per_slide": build_seconds and round(build_seconds, 1),
                               "slide_file_mb": round(sum(p.stat().st_size for p in slides) / len(slides) / 1e6, 1)},
                    "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="slidelabel-cohort-bench-") as tmp:
        model, report["model"] = train_model(args.cache, Path(tmp))
        one = run_workers([slides], model, Path(tmp) / "one", cpus[:1])
        shutil.rmtree(Path(tmp) / "one")  # the two workers start from nothing too
        two = run_workers([slides[0::2], slides[1::2]], model, Path(tmp) / "two", cpus)
    report["one_worker"] = one
    report["two_workers"] = {**two, "ratio_to_one": round(two["slides_per_hour"] / one["slides_per_hour"], 2)}
    report["load_average_after"] = os.getloadavg()
    report["targets"] = {"peak_memory_gb_below": MEMORY_TARGET_GB, "ratio_at_least": RATIO_TARGET,
                         "memory_met": max(one["peak_memory_gb"] + two["peak_memory_gb"]) < MEMORY_TARGET_GB,
                         "ratio_met": report["two_workers"]["ratio_to_one"] >= RATIO_TARGET}
    # Per-slide times (process start-up left out) scaled to 20 slides of the full area.
    scale = FULL_SLIDES * (FULL_SIDE_PX / args.side_px) ** 2 / 3600
    report["full_default_estimate_h"] = {
        "predict_one_worker": round(float(np.mean(one["seconds_per_slide"])) * scale, 2),
        "predict_two_workers": round(float(np.mean(two["seconds_per_slide"])) * scale / 2, 2),
        "build_slides_once": build_seconds and round(build_seconds * scale, 2),
        "note": "per-slide seconds of this run scaled by slide count and area, at this run's load"}
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
