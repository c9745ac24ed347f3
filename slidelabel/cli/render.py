"""``slidelabel render``: a PNG of a slide with its superpixel boundaries."""

from __future__ import annotations

from pathlib import Path

import click

from slidelabel.cli.errors import user_errors
from slidelabel.services.render import render_slide


@click.command()
@click.argument("slide", type=click.Path(path_type=Path))
@click.option("--superpixels", "superpixels", type=click.Path(path_type=Path), required=True,
              help="The slide's superpixel folder, or the --out folder of `slidelabel superpixels`.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option("--max-size", type=click.IntRange(min=16), default=2048, show_default=True,
              help="Longest side of the picture in pixels.")
@click.option("--base-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Micrometres per level-0 pixel, for slides whose metadata lacks it.")
@user_errors
def render(slide: Path, superpixels: Path, out: Path, max_size: int, base_mpp: float | None) -> None:
    """Draw the superpixel boundaries of SLIDE over its thumbnail."""
    click.echo(render_slide(slide, superpixels, out, max_size=max_size, base_mpp=base_mpp))
