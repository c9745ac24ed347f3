"""Learning-engine benchmark: the labelling loop's speed, measured in one run.

Prints one JSON object:

* ``linear_loop``: retrain a ``linear`` model on 2,000 labels, predict 1,000,000 superpixels of
  1024-dimensional features and rank them by margin (what happens after every batch of labels);
  seconds per step and in total (target: under 2 s on 2 cores);
* ``server_epoch``: the whole epoch of the server's loop
  (:func:`slidelabel.services.learning_loop.run_epoch` over the project's feature files, as the
  epoch job runs it: normalise per slide, train, assess and calibrate, predict, rank, write the
  predictions and the ranking) for 1,000,000 superpixels over 5 slides and 5 categories, with 300
  labels, from feature files as extraction writes them (their per-slide statistics included): at the project defaults (features of their width, their model) and, in the same run,
  at the first defaults (``color``'s 57 features, ``linear``, no normalisation) as the baseline
  (target: under 10 s);
* ``batchbald``: a batch of 10 from a pool of 100,000 with 16 posterior samples (target: under
  10 s), when the ``batchbald`` strategy is installed;
* ``extraction``: superpixels per second of every registered feature extractor on the TCGA sample
  slide (JPEG 2000 tiles; level 0, 64 px superpixels), measured in the same run against reading
  one region per superpixel with large_image's ``getRegion``, as Histomics Label does (target:
  ``color`` and ``filterbank`` at least 10x faster), in two ways: computing the colour
  statistics of the region's bounding box (the same baseline for every extractor; also through
  slidelabel's own reader, a stricter one), and computing the extractor's own features from the
  region (its channels, with their statistics over the superpixel and its ring, in numpy). The
  same on the CMU sample (JPEG tiles, as most SVS files have), where decoding costs a sixth as
  much per pixel.

Run: ``.venv/bin/python benchmarks/learning.py [--parts linear_loop,server_epoch,batchbald,extraction]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from large_image.constants import TILE_FORMAT_NUMPY

from slidelabel.pipelines.features import FEATURES, get_extractor
from slidelabel.pipelines.features.color import colour_channels
from slidelabel.pipelines.features.extract import extract_slide_features
from slidelabel.pipelines.features.patches import PatchExtractor
from slidelabel.pipelines.models import Category, train
from slidelabel.pipelines.slide_readers import open_reader
from slidelabel.pipelines.slides import Slide
from slidelabel.pipelines.strategies import STRATEGIES, Evidence, select
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, TABLE_FILE
from slidelabel.store.superpixel_table import read_table

SLIDES = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides"
TCGA = SLIDES / "TCGA-CR-7395-01A-01-TS1.svs"
CMU = SLIDES / "CMU-1-Small-Region.svs"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def linear_loop(n: int = 1_000_000, dims: int = 1024, labels: int = 2000) -> dict:
    """One round of the labelling loop on synthetic two-class features."""
    rng = np.random.default_rng(0)
    log(f"linear loop: making {n} x {dims} float32 features ...")
    classes_N = rng.integers(0, 2, n)
    feats_N_D = rng.standard_normal((n, dims), dtype=np.float32)
    feats_N_D[:, :16] += classes_N[:, None].astype(np.float32)  # a weak signal in 16 dimensions
    labelled_N = np.zeros(n, bool)
    labelled_N[rng.choice(n, labels, replace=False)] = True
    categories = [Category("background"), Category("nucleus")]
    log("linear loop: train, predict, rank ...")
    model, train_s = _timed(lambda: train(feats_N_D[labelled_N], classes_N[labelled_N], categories,
                                          model="linear", feature_extractor="synthetic", cross_validate_model=False))
    probs_N_C, predict_s = _timed(lambda: model.predict_proba(feats_N_D))
    _, rank_s = _timed(lambda: select("margin", Evidence(probs_N_C, labelled_N), k=8))
    total = train_s + predict_s + rank_s
    return {"superpixels": n, "dims": dims, "labels": labels, "train_s": train_s, "predict_s": predict_s,
            "rank_s": rank_s, "total_s": total, "target_s": 2.0, "meets_target": bool(total < 2.0)}


def server_epoch(n: int = 1_000_000, slides: int = 5, labels: int = 300, classes: int = 5) -> dict:
    """The server's epoch, labels to a new queue, at the defaults and at the first defaults."""
    from slidelabel.services.epochs import PredictionWriter
    from slidelabel.services.learning_loop import FileFeatures, LoopChoices, run_epoch
    from slidelabel.services.projects import DEFAULT_EXTRACTOR, DEFAULT_MODEL, DEFAULT_NORMALISATION, DEFAULT_STRATEGY
    from slidelabel.services.queue import ranking_of, write_ranking
    from slidelabel.store.feature_files import store_statistics
    from slidelabel.store.layout import ProjectFiles
    from slidelabel.store.superpixel_table import SuperpixelTable, write_table
    import zarr

    def run(choices: LoopChoices) -> dict:
        dims = len(FEATURES[choices.extractor].channel_names())
        rng = np.random.default_rng(0)
        with tempfile.TemporaryDirectory() as tmp:
            files = ProjectFiles(Path(tmp), 1)
            paths, labelled = {}, {}
            per_slide = n // slides
            log(f"server epoch ({choices.extractor}, {dims} features, {choices.model}): writing {n} rows ...")
            for slide_id in range(1, slides + 1):
                classes_N = rng.integers(0, classes, per_slide)
                feats_N_D = rng.standard_normal((per_slide, dims), dtype=np.float32)
                feats_N_D[:, :classes] += 2 * np.eye(classes, dtype=np.float32)[classes_N]
                paths[slide_id] = files.features(slide_id, choices.extractor)
                paths[slide_id].parent.mkdir(parents=True)
                # As extraction leaves them: with the per-slide statistics in the attributes.
                store_statistics(zarr.create_array(store=paths[slide_id], data=feats_N_D, chunks=(65_536, dims)))
                centres = rng.uniform(8, 100_000, (per_slide, 2))
                files.superpixels(slide_id).mkdir(parents=True)
                write_table(files.superpixels(slide_id) / TABLE_FILE, SuperpixelTable(
                    np.arange(1, per_slide + 1, dtype=np.uint32), np.c_[centres - 8, centres + 8].astype(np.int64),
                    centres, np.full(per_slide, 256, np.int64), None, np.ones(per_slide, np.float32)))
                chosen = np.sort(rng.choice(per_slide, labels // slides, replace=False))
                labelled[slide_id] = (chosen + 1, classes_N[chosen])
            categories = [Category(f"class {c}") for c in range(classes)]
            log("server epoch: normalise, train, assess, predict, rank, write ...")
            start = time.perf_counter()
            staged = ProjectFiles(Path(tmp) / "staged", 1)
            staged.epoch_dir(0).mkdir(parents=True)
            writer = PredictionWriter(staged, files, np.arange(1, classes + 1), None)
            outcome = run_epoch(FileFeatures(paths, choices.normalisation), labelled, categories, choices,
                                assessed=True, sink=writer)
            pool, rows_R = outcome.pool, outcome.ranked_R
            write_ranking(staged.ranking(0), ranking_of(files, pool.slide_ids_P[rows_R], pool.superpixels_P[rows_R],
                                                        outcome.scores_R, np.zeros(rows_R.size, np.int64),
                                                        pool.probs_P_C[rows_R].max(axis=1)))
            seconds = time.perf_counter() - start
        return {"features": choices.extractor, "dims": dims, "model": choices.model,
                "model_chosen": outcome.model.metrics.get("auto_chosen", choices.model),
                "normalisation": choices.normalisation, "strategy": choices.strategy, "seconds": seconds}

    defaults = run(LoopChoices(DEFAULT_EXTRACTOR, DEFAULT_MODEL, DEFAULT_STRATEGY, DEFAULT_NORMALISATION))
    first = run(LoopChoices("color", "linear", "margin", "none"))
    return {"superpixels": n, "slides": slides, "labels": labels, "defaults": defaults, "first_defaults": first,
            "ratio_to_first_defaults": defaults["seconds"] / first["seconds"], "target_s": 10.0,
            "meets_target": bool(defaults["seconds"] < 10.0)}


def batchbald(pool: int = 100_000, samples: int = 16, classes: int = 3, k: int = 10) -> dict:
    if "batchbald" not in STRATEGIES:
        return {"skipped": "the batchbald strategy is not registered"}
    rng = np.random.default_rng(0)
    logits_S_N_C = rng.standard_normal((samples, pool, classes)).astype(np.float32)
    samples_S_N_C = np.exp(logits_S_N_C) / np.exp(logits_S_N_C).sum(axis=2, keepdims=True)
    evidence = Evidence(samples_S_N_C.mean(axis=0), np.zeros(pool, bool), samples_S_N_C=samples_S_N_C)
    log("batchbald ...")
    _, seconds = _timed(lambda: select("batchbald", evidence, k=k, rng=0))
    return {"pool": pool, "samples": samples, "classes": classes, "k": k, "seconds": seconds,
            "target_s": 10.0, "meets_target": bool(seconds < 10.0)}


def _large_image_region(slide_path: Path) -> Callable[[int, int, int, int], np.ndarray]:
    """Reads a level-0 region as Histomics Label does: large_image's ``getRegion``, the source's tile
    cache in between (opened as slidelabel opens it, so with the same cache bound)."""
    _, source = open_reader(slide_path, None)

    def read(left: int, top: int, width: int, height: int) -> np.ndarray:
        region = {"left": left, "top": top, "width": width, "height": height, "units": "base_pixels"}
        pixels, _ = source.getRegion(region=region, format=TILE_FORMAT_NUMPY)
        return np.ascontiguousarray(pixels[:, :, :3])

    return read


def _one_region_per_superpixel(read: Callable[[int, int, int, int], np.ndarray], folder: Path, n: int) -> float:
    """Superpixels per second when each is read as its own region by ``read(left, top, width,
    height)`` and its colour statistics computed from it (the Histomics Label way)."""
    table = read_table(folder / TABLE_FILE)
    rows = np.linspace(0, table.ids.size - 1, min(n, table.ids.size)).astype(int)
    start = time.perf_counter()
    for row in rows:
        x0, y0, x1, y1 = table.bbox_level0[row]
        channels = colour_channels(read(int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
        np.percentile(channels.reshape(-1, channels.shape[2]), [10, 50, 90], axis=0)
    return rows.size / (time.perf_counter() - start)


def _same_features_one_region_per_superpixel(read: Callable[[int, int, int, int], np.ndarray], folder: Path,
                                             name: str, n: int, budget_s: float = 10.0) -> float | None:
    """Superpixels per second when each superpixel's ``name`` features are computed from a region of
    its own, in plain numpy: its bounding box grown by the extractor's context, read by ``read``;
    the extractor's per-pixel channels of that region; their mean and std over the superpixel's
    pixels (and percentiles where the extractor keeps them) and their mean over its ring. Runs over
    up to ``n`` superpixels spread over the slide, for at most ``budget_s`` (the first is run twice
    and timed once: compiling and loading are not counted); None for ``patch``, which is not pooled
    per pixel."""
    extractor = get_extractor(name)
    if isinstance(extractor, PatchExtractor):
        return None
    table = read_table(folder / TABLE_FILE)
    labels_H_W = read_labels(folder / LABELS_FILE)  # in memory, so that the baseline pays for no mask reads
    height, width = labels_H_W.shape
    grow = max(extractor.margin_px, extractor.ring_px + 1) + extractor.grid_px
    ring_kernel = np.ones((2 * extractor.ring_px + 1,) * 2, np.uint8)
    percentiles = getattr(extractor, "percentiles", ()) if extractor.histogram_bins is not None else ()
    rows = np.linspace(0, table.ids.size - 1, min(n, table.ids.size)).astype(int)
    done, start = 0, None
    for row in np.r_[rows[:1], rows]:
        x0, y0, x1, y1 = (int(v) for v in table.bbox_level0[row])
        left, top = max(x0 - grow, 0), max(y0 - grow, 0)
        right, bottom = min(x1 + grow, width), min(y1 + grow, height)
        channels_H_W_K = extractor.window_channels(read(left, top, right - left, bottom - top))
        inside_H_W = labels_H_W[top:bottom, left:right] == table.ids[row]
        pixels_P_K = channels_H_W_K[inside_H_W]
        pixels_P_K.mean(axis=0), pixels_P_K.std(axis=0)
        if percentiles:
            np.percentile(pixels_P_K, percentiles, axis=0)
        ring_H_W = cv2.dilate(inside_H_W.astype(np.uint8), ring_kernel).astype(bool) & ~inside_H_W
        channels_H_W_K[ring_H_W].mean(axis=0)
        if start is None:
            start = time.perf_counter()
            continue
        done += 1
        if time.perf_counter() - start > budget_s:
            break
    return done / (time.perf_counter() - start)


def _extraction_rates(slide_path: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "superpixels"
        log(f"extraction: superpixels of {slide_path.name} ...")
        options = SuperpixelOptions(magnification=0, size=SuperpixelSize(64, "px"))
        n = compute_slide_superpixels(slide_path, folder, options).superpixels
        out = {"superpixels": n}
        read_large_image = _large_image_region(slide_path)
        baseline = _one_region_per_superpixel(read_large_image, folder, 1500)
        out["one_region_per_superpixel_per_s"] = baseline
        with Slide(slide_path) as slide:
            # The same through slidelabel's own reader (stored tiles decoded directly): a stricter baseline.
            out["one_region_per_superpixel_slidelabel_reader_per_s"] = _one_region_per_superpixel(
                slide.read_region, folder, 1500)
        for name in FEATURES:
            log(f"extraction: {name} ...")
            _, seconds = _timed(lambda: extract_slide_features(slide_path, folder, Path(tmp) / f"{name}.zarr",
                                                               extractor=name))
            rate = n / seconds
            out[name] = {"superpixels_per_s": rate, "ratio_to_one_region_per_superpixel": rate / baseline}
            log(f"extraction: {name}, one region per superpixel ...")
            same = _same_features_one_region_per_superpixel(read_large_image, folder, name, 1500)
            if same is not None:
                out[name]["same_features_one_region_per_superpixel_per_s"] = same
                out[name]["ratio_to_same_features_one_region_per_superpixel"] = rate / same
    return out


def extraction() -> dict:
    missing = [path.name for path in (TCGA, CMU) if not path.exists()]
    if missing:
        return {"skipped": f"needs {', '.join(missing)} in {SLIDES}"}
    return {"tcga_jpeg2000": _extraction_rates(TCGA), "cmu_jpeg": _extraction_rates(CMU)}


PARTS = {"linear_loop": linear_loop, "server_epoch": server_epoch, "batchbald": batchbald, "extraction": extraction}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    args = parser.parse_args(argv)
    report = {name: PARTS[name]() for name in args.parts.split(",")}
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
