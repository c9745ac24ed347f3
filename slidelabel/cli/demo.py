"""``slidelabel demo``: superpixels of real sample tissue and a picture of them, in one command."""

from __future__ import annotations

from pathlib import Path

import click

from slidelabel.cli.errors import user_errors
from slidelabel.cli.superpixels import superpixels
from slidelabel.services.render import render_slide
from slidelabel.services.sample_data import sample_slide


@click.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Folder for the results.")
@click.option("--slide", "slide", type=click.Path(path_type=Path), default=None,
              help="Use this slide instead of the sample (OpenSlide's CMU-1-Small-Region.svs, from PyPI).")
@click.pass_context
@user_errors
def demo(context: click.Context, out: Path, slide: Path | None) -> None:
    """Cut a real H&E slide into superpixels and draw them: the quickest look at slidelabel."""
    slide = slide or sample_slide()
    click.echo(f"slide: {slide}")
    folder = out / "superpixels"
    try:
        context.invoke(superpixels, slides=(str(slide),), out=folder)
    except SystemExit as stop:
        if stop.code:
            raise
    picture = render_slide(slide, folder, out / f"{slide.stem}-superpixels.png")
    click.echo(f"superpixels: {folder / slide.stem}  (labels.tiff, superpixels.parquet, manifest.json)")
    click.echo(f"picture:     {picture}")
