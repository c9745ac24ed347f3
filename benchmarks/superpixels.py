"""Superpixel benchmark: slidelabel against the Histomics Label method, measured in one run.

Prints one JSON object:

* ``throughput``: megapixels per second per worker (one thread each) of slidelabel and of the
  Histomics Label method (``histomics_baseline``: skimage SLIC-zero on 4096 px tiles with 800 px
  overlap) on the whole of ``TCGA-CR-7395-01A-01-TS1.svs`` at level 0 (4443 x 3567 px of JPEG 2000
  tiles, tissue and glass, every pixel segmented by both), everything included (reading,
  segmenting, for slidelabel also writing its files), by wall time and by CPU time, and their ratios;
* ``boundary``: boundary recall (2 px tolerance) and under-segmentation error of both on the
  MoNuSeg images against the pathologists' nuclei, at equal superpixel counts;
* ``memory``: peak resident memory of ``slidelabel superpixels`` on a synthetic pyramidal slide of
  40,960 x 40,960 px built from real tissue, against one 16 times smaller, and their ratio.

Run: ``.venv/bin/python benchmarks/superpixels.py [--images 30] [--parts throughput,boundary,memory]``; progress goes
to stderr. Targets: throughput ratio >= 5, recall no worse, memory ratio < 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # per worker: one thread for both methods

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from skimage.io import imread  # noqa: E402
from skimage.segmentation import slic  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from histomics_baseline import histomics_superpixels  # noqa: E402

from slidelabel.pipelines.segmentation_quality import (  # noqa: E402
    boundary_recall,
    count_superpixels,
    truth_segments,
    undersegmentation_error,
)
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array  # noqa: E402
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TCGA = DATA / "slides" / "TCGA-CR-7395-01A-01-TS1.svs"
SUPERPIXEL_PX = 100  # Histomics Label's 800 px overlap is 8 superpixel sizes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(run) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def throughput() -> dict:
    """Both methods on the whole slide at level 0, all pixels segmented, one thread each."""
    cv2.setNumThreads(1)
    import large_image

    meta = large_image.open(str(TCGA)).getMetadata()
    region = dict(left=0, top=0, width=meta["sizeX"], height=meta["sizeY"])
    megapixels = region["width"] * region["height"] / 1e6
    log(f"throughput: Histomics Label method on {megapixels:.1f} Mpx ...")
    (labels, _), h_wall, h_cpu = _timed(lambda: histomics_superpixels(
        str(TCGA), superpixel_size=SUPERPIXEL_PX, tile_size=4096, overlap=800, region=region))
    h_count = count_superpixels(labels)
    log("throughput: slidelabel ...")
    with tempfile.TemporaryDirectory() as tmp:
        options = SuperpixelOptions(magnification=0, size=SuperpixelSize(SUPERPIXEL_PX, "px"), tissue_only=False)
        result, s_wall, s_cpu = _timed(lambda: compute_slide_superpixels(TCGA, Path(tmp) / "out", options))
    out = {
        "region_level0": region, "megapixels": round(megapixels, 2), "superpixel_px": SUPERPIXEL_PX,
        "histomics_label": {"mp_per_s_wall": megapixels / h_wall, "mp_per_s_cpu": megapixels / h_cpu,
                            "superpixels": h_count},
        "slidelabel": {"mp_per_s_wall": megapixels / s_wall, "mp_per_s_cpu": megapixels / s_cpu,
                       "superpixels": result.superpixels},
    }
    out["ratio_wall"] = out["slidelabel"]["mp_per_s_wall"] / out["histomics_label"]["mp_per_s_wall"]
    out["ratio_cpu"] = out["slidelabel"]["mp_per_s_cpu"] / out["histomics_label"]["mp_per_s_cpu"]
    return out


def boundary(n_images: int) -> dict:
    """Recall and under-segmentation error at equal counts: slidelabel's count sets SLIC-zero's."""
    names = sorted((DATA / "monuseg-train" / "images").glob("*.png"))[:n_images]
    rows = {"slidelabel": [], "histomics_label": []}
    for index, path in enumerate(names, 1):
        log(f"boundary: image {index}/{len(names)}")
        rgb = imread(path)[..., :3]
        truth = truth_segments(imread(DATA / "monuseg-train" / "masks" / path.name) > 0)
        ours = superpixel_array(rgb, SuperpixelParams(step=20))
        theirs = slic(rgb, n_segments=count_superpixels(ours), slic_zero=True, compactness=1, sigma=0,
                      enforce_connectivity=True, start_label=1)
        for name, labels in (("slidelabel", ours), ("histomics_label", theirs)):
            rows[name].append((boundary_recall(labels, truth, tolerance_px=2),
                               undersegmentation_error(labels, truth), count_superpixels(labels)))
    summary = {}
    for name, values in rows.items():
        v = np.array(values)
        summary[name] = {"boundary_recall": v[:, 0].mean(), "undersegmentation_error": v[:, 1].mean(),
                         "superpixels": v[:, 2].mean()}
    summary["images"] = len(names)
    summary["recall_difference"] = summary["slidelabel"]["boundary_recall"] - summary["histomics_label"]["boundary_recall"]
    return summary


def _tissue_tile() -> np.ndarray:
    """A 2048 px square of real tissue from the TCGA slide, mirrored so that it tiles seamlessly."""
    import large_image

    source = large_image.open(str(TCGA))
    rgb, _ = source.getRegion(region=dict(left=1200, top=800, width=1024, height=1024),
                              format=large_image.constants.TILE_FORMAT_NUMPY)
    quarter = np.ascontiguousarray(rgb[..., :3])
    top = np.concatenate([quarter, quarter[:, ::-1]], axis=1)
    return np.concatenate([top, top[::-1]], axis=0)


def write_synthetic_slide(path: Path, side: int, tissue: np.ndarray) -> None:
    """A pyramidal JPEG TIFF of ``side`` x ``side`` px at 0.25 um/px, tiled with ``tissue``.

    Level k repeats ``tissue`` downsampled by 2**k, so every level shows the same picture.
    """
    import tifffile

    levels = [tissue]
    while side >> len(levels) >= 1024:
        levels.append(cv2.resize(levels[-1], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))

    def tiles(level: int):
        pattern, size = levels[level], side >> level
        repeat = pattern.shape[0]
        for top in range(0, size, 256):
            for left in range(0, size, 256):
                yield np.ascontiguousarray(np.take(np.take(pattern, np.arange(top, top + 256) % repeat, 0),
                                                   np.arange(left, left + 256) % repeat, 1))

    resolution = (1e4 / 0.25, 1e4 / 0.25)  # pixels per centimetre
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(len(levels)):
            size = side >> level
            tif.write(tiles(level), shape=(size, size, 3), dtype=np.uint8, tile=(256, 256),
                      compression="jpeg", photometric="rgb", subfiletype=1 if level else 0,
                      resolution=resolution, resolutionunit="CENTIMETER")


def peak_memory_mb(slide: Path, out: Path) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of `slidelabel superpixels` on ``slide`` at 10x, in a fresh process."""
    # VmHWM, not getrusage: Linux carries ru_maxrss across exec, so a child started by this
    # (large) process would report this process's peak.
    code = (
        "import re, sys, time\n"
        "from pathlib import Path\n"
        "from slidelabel.services.superpixels import SuperpixelOptions, compute_slide_superpixels\n"
        "t = time.perf_counter()\n"
        "compute_slide_superpixels(Path(sys.argv[1]), Path(sys.argv[2]), SuperpixelOptions(magnification=10))\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
        "print(int(hwm) / 1024, time.perf_counter() - t)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(slide), str(out)], capture_output=True, text=True, check=True)
    rss, seconds = done.stdout.split()
    return float(rss), float(seconds)


def memory(folder: Path) -> dict:
    tissue = _tissue_tile()
    results = {}
    for name, side in (("small", 10240), ("large", 40960)):
        slide = folder / f"{name}.tiff"
        log(f"memory: writing a {side} x {side} px synthetic slide ...")
        write_synthetic_slide(slide, side, tissue)
        log(f"memory: superpixels of the {name} slide ...")
        rss, seconds = peak_memory_mb(slide, folder / f"{name}-out")
        results[name] = {"side_px": side, "peak_rss_mb": rss, "seconds": seconds}
        slide.unlink()
    results["area_ratio"] = (results["large"]["side_px"] / results["small"]["side_px"]) ** 2
    results["peak_rss_ratio"] = results["large"]["peak_rss_mb"] / results["small"]["peak_rss_mb"]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30, help="MoNuSeg images for the boundary metrics")
    parser.add_argument("--parts", default="throughput,boundary,memory",
                        help="comma-separated parts to run (default: all three)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not DATA.exists():
        sys.exit(f"needs the shared data at {DATA}")
    report: dict = {}
    targets: dict = {}
    if "throughput" in parts:
        report["throughput"] = throughput()
        targets["throughput_ratio_at_least_5"] = bool(report["throughput"]["ratio_cpu"] >= 5)
    if "boundary" in parts:
        report["boundary"] = boundary(args.images)
        targets["recall_no_worse"] = bool(report["boundary"]["recall_difference"] >= 0)
    if "memory" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            report["memory"] = memory(Path(tmp))
        targets["memory_ratio_under_1_3"] = bool(report["memory"]["peak_rss_ratio"] < 1.3)
    report["targets"] = targets
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
