"""``slidelabel predict`` and ``slidelabel features``: a trained model, or an extractor, over a folder of slides."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from slidelabel.cli.errors import EXIT_FAILED, user_errors
from slidelabel.cli.progress import BatchBars
from slidelabel.cli.superpixels import options_of, superpixel_options
from slidelabel.services.batch import BatchReport, expand_inputs
from slidelabel.services.cohort import (
    PredictOptions,
    features_cohort,
    open_cohort_model,
    predict_cohort,
    write_summary,
)
from slidelabel.services.superpixels import SlideResult

#: Options of both commands besides the superpixels' own.
_COMMON = (
    click.argument("slides", nargs=-1, required=True),
    click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
                 help="Folder for the results; each slide gets a subfolder named after its file."),
    click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Threads computing superpixels on tiles in parallel."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
    click.option("--debug", is_flag=True, help="Log details of unexpected failures."),
)


def _common(command: Callable) -> Callable:
    for option in reversed(_COMMON):
        command = option(command)
    return superpixel_options(command)


def _run(slides: tuple[str, ...], out: Path, quiet: bool, debug: bool, verb: Callable[[SlideResult], str],
         batch: Callable[[list[Path], BatchBars], BatchReport]) -> None:
    """Run ``batch`` over the expanded ``slides`` with progress bars, then print the summary line
    and its JSON (also written to ``out/summary.json``); exit code 1 when a slide failed."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("large_image").setLevel(logging.DEBUG if debug else logging.WARNING)
    started = time.perf_counter()
    paths = expand_inputs(slides)
    bars = BatchBars(len(paths), enabled=not quiet, verb=verb)
    report = batch(paths, bars)
    bars.close()
    click.echo(report.summary())
    click.echo(json.dumps(write_summary(out, report, time.perf_counter() - started)))
    if report.failures:
        sys.exit(EXIT_FAILED)


@click.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A trained model file (an epoch's model download from the dashboard).")
@click.option("--geojson", is_flag=True, help="Also write the predictions as QuPath GeoJSON.")
@click.option("--annotation", is_flag=True, help="Also write the predictions as a Digital Slide Archive annotation.")
@_common
@user_errors
def predict(slides: tuple[str, ...], out: Path, model_path: Path, geojson: bool, annotation: bool, workers: int,
            quiet: bool, debug: bool, **superpixels: object) -> None:
    """Segment SLIDES (files, glob patterns or folders) with a trained model.

    Each slide's folder gets its superpixels and features, predictions.parquet (predicted
    category, certainty and every category's probability per superpixel), predictions.mask.tiff
    (pyramidal mask: category index + 1, 0 = none), on request predictions.geojson and
    predictions.annotation.json, and predictions.json (written last). Finished slides are skipped
    on a re-run with the same model and options.
    """
    options = PredictOptions(options_of(**superpixels), geojson=geojson, annotation=annotation)
    model = open_cohort_model(model_path)
    _run(slides, out, quiet, debug,
         lambda result: f"{result.superpixels} superpixels predicted in {result.seconds:.1f} s",
         lambda paths, bars: predict_cohort(paths, out, model, options, workers=workers,
                                            progress_for=bars.progress_for, on_result=bars.on_result))


@click.command()
@click.option("--extractor", required=True, help="A feature extractor (see `slidelabel info`).")
@_common
@user_errors
def features(slides: tuple[str, ...], out: Path, extractor: str, workers: int, quiet: bool, debug: bool,
             **superpixels: object) -> None:
    """Compute the superpixels and features of SLIDES (files, glob patterns or folders).

    Each slide's folder gets its superpixels and features-EXTRACTOR.zarr ((N, D) float32, row i =
    superpixel i + 1). Finished slides are skipped on a re-run.
    """
    options = options_of(**superpixels)
    _run(slides, out, quiet, debug,
         lambda result: f"features of {result.superpixels} superpixels in {result.seconds:.1f} s",
         lambda paths, bars: features_cohort(paths, out, options, extractor=extractor, workers=workers,
                                             progress_for=bars.progress_for, on_result=bars.on_result))
