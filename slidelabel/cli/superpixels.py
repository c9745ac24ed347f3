"""``slidelabel superpixels``: seamless tiled superpixels for one slide or a folder of thousands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from tqdm import tqdm

from slidelabel.cli.errors import EXIT_FAILED, user_errors
from slidelabel.cli.progress import StageBar
from slidelabel.services.batch import Failure, expand_inputs, run_batch
from slidelabel.services.superpixels import DEFAULT_MAGNIFICATION, SlideResult, SuperpixelOptions, SuperpixelSize


@click.command()
@click.argument("slides", nargs=-1, required=True)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the results; each slide gets a subfolder named after its file.")
@click.option("--magnification", type=click.FloatRange(min=0), default=None,
              help=f"Objective power to work at (default {DEFAULT_MAGNIFICATION:g}x = 1 um/px; 0 = the slide's full resolution).")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Micrometres per pixel to work at, instead of --magnification.")
@click.option("--size", "size", default="50um", show_default=True,
              help="Superpixel side, in um (e.g. 50um) or working pixels (e.g. 32px).")
@click.option("--compactness", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Higher gives squarer superpixels, lower follows colour edges more closely.")
@click.option("--iterations", type=click.IntRange(min=1), default=5, show_default=True, help="SLIC iterations.")
@click.option("--tile-size", type=click.IntRange(min=64), default=2048, show_default=True,
              help="Working tile side in pixels; memory grows with its square, not with the slide.")
@click.option("--all-pixels", is_flag=True, help="Segment glass and background too, not only tissue.")
@click.option("--base-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Micrometres per level-0 pixel, for slides whose metadata lacks it (0.25 at 40x, 0.5 at 20x).")
@click.option("--source", default=None, help="Force a slide reader (see `slidelabel info --sources`).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads working on tiles in parallel.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--debug", is_flag=True, help="Log details of unexpected failures.")
@user_errors
def superpixels(
    slides: tuple[str, ...], out: Path, magnification: float | None, mpp: float | None, size: str,
    compactness: float, iterations: int, tile_size: int, all_pixels: bool, base_mpp: float | None,
    source: str | None, workers: int, quiet: bool, debug: bool,
) -> None:
    """Cut the tissue of SLIDES (files, glob patterns or folders) into superpixels.

    Each slide's folder gets labels.tiff (pyramidal label map), superpixels.parquet (one row per
    superpixel) and manifest.json (written last). Finished slides are skipped on a re-run.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("large_image").setLevel(logging.DEBUG if debug else logging.WARNING)
    options = SuperpixelOptions(
        magnification=magnification, mpp=mpp, size=SuperpixelSize.parse(size), compactness=compactness,
        iterations=iterations, tile_size=tile_size, tissue_only=not all_pixels, base_mpp=base_mpp, source=source,
    )
    paths = expand_inputs(slides)
    show = not quiet
    overall = tqdm(total=len(paths), desc="slides", unit="slide", position=0, disable=not show)
    bars: list[StageBar] = []

    def progress_for(slide: Path) -> StageBar:
        bars.append(StageBar(enabled=show, prefix=f"{slide.name} ", unit="tile", position=1, leave=False))
        return bars[-1]

    def on_result(outcome: SlideResult | Failure) -> None:
        if bars:
            bars[-1].close()
        if isinstance(outcome, Failure):
            tqdm.write(f"error: {outcome.message}", file=sys.stderr)
        else:
            verb = "already finished" if outcome.status == "skipped" else f"{outcome.superpixels} superpixels in {outcome.seconds:.1f} s"
            tqdm.write(f"{outcome.slide.name}: {verb} -> {outcome.folder}", file=sys.stderr if quiet else sys.stdout)
        overall.update(1)

    report = run_batch(paths, out, options, workers=workers, progress_for=progress_for, on_result=on_result)
    overall.close()
    click.echo(report.summary())
    if report.failures:
        sys.exit(EXIT_FAILED)
