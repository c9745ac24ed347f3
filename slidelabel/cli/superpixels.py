"""``slidelabel superpixels``: seamless tiled superpixels for one slide or a folder of thousands."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from slidelabel.cli.errors import EXIT_FAILED, user_errors
from slidelabel.cli.progress import BatchBars
from slidelabel.services.batch import expand_inputs, run_batch
from slidelabel.services.superpixels import DEFAULT_MAGNIFICATION, SuperpixelOptions, SuperpixelSize

F = TypeVar("F", bound=Callable[..., object])

#: The options that choose the superpixels, shared by every command that computes them.
_SUPERPIXEL_OPTIONS = (
    click.option("--magnification", type=click.FloatRange(min=0), default=None,
                 help=f"Objective power to work at (default {DEFAULT_MAGNIFICATION:g}x = 1 um/px; 0 = the slide's full resolution)."),
    click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Micrometres per pixel to work at, instead of --magnification."),
    click.option("--size", "size", default="50um", show_default=True,
                 help="Superpixel side, in um (e.g. 50um) or working pixels (e.g. 32px)."),
    click.option("--compactness", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
                 help="Higher gives squarer superpixels, lower follows colour edges more closely."),
    click.option("--iterations", type=click.IntRange(min=1), default=5, show_default=True, help="SLIC iterations."),
    click.option("--tile-size", type=click.IntRange(min=64), default=2048, show_default=True,
                 help="Working tile side in pixels; memory grows with its square, not with the slide."),
    click.option("--all-pixels", is_flag=True, help="Segment glass and background too, not only tissue."),
    click.option("--base-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Micrometres per level-0 pixel, for slides whose metadata lacks it (0.25 at 40x, 0.5 at 20x)."),
    click.option("--source", default=None, help="Force a slide reader (see `slidelabel info --sources`)."),
)


def superpixel_options(command: F) -> F:
    """Add the options that choose the superpixels to ``command`` (read them with :func:`options_of`)."""
    for option in reversed(_SUPERPIXEL_OPTIONS):
        command = option(command)
    return command


def options_of(
    *, magnification: float | None, mpp: float | None, size: str, compactness: float, iterations: int,
    tile_size: int, all_pixels: bool, base_mpp: float | None, source: str | None,
) -> SuperpixelOptions:
    """The :class:`SuperpixelOptions` that :func:`superpixel_options`' values choose."""
    return SuperpixelOptions(
        magnification=magnification, mpp=mpp, size=SuperpixelSize.parse(size), compactness=compactness,
        iterations=iterations, tile_size=tile_size, tissue_only=not all_pixels, base_mpp=base_mpp, source=source,
    )


@click.command()
@click.argument("slides", nargs=-1, required=True)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the results; each slide gets a subfolder named after its file.")
@superpixel_options
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
    options = options_of(magnification=magnification, mpp=mpp, size=size, compactness=compactness,
                         iterations=iterations, tile_size=tile_size, all_pixels=all_pixels, base_mpp=base_mpp,
                         source=source)
    paths = expand_inputs(slides)
    bars = BatchBars(len(paths), enabled=not quiet,
                     verb=lambda result: f"{result.superpixels} superpixels in {result.seconds:.1f} s")
    report = run_batch(paths, out, options, workers=workers, progress_for=bars.progress_for, on_result=bars.on_result)
    bars.close()
    click.echo(report.summary())
    if report.failures:
        sys.exit(EXIT_FAILED)
