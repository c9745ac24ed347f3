"""``slidelabel import-segments``: segments made by another tool as a slide's superpixels."""

from __future__ import annotations

from pathlib import Path

import click

from slidelabel.cli.errors import user_errors
from slidelabel.cli.progress import StageBar
from slidelabel.pipelines.importers.segments import ImportOptions
from slidelabel.services.segment_import import import_segments


@click.command("import-segments")
@click.argument("slide", type=click.Path(path_type=Path))
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the results; the slide gets a subfolder named after its file.")
@click.option("--format", "format_", default="auto", show_default=True,
              help="Source format: auto, or one `slidelabel info --registry` lists.")
@click.option("--downsample", type=click.FloatRange(min=1), default=None,
              help="Level-0 px per pixel of the label map (a power of two); for a mask or pixelmap, the level it is at "
                   "(default: from its size); for polygons, where to rasterise them (default 1).")
@click.option("--bboxes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Histomics Label's bounding-box CSV (left,top,right,bottom per segment) for a pixelmap.")
@click.option("--even-odd", is_flag=True, help="Fill self-crossing polygons by the even-odd rule instead of refusing them.")
@click.option("--base-mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Micrometres per level-0 pixel, for slides whose metadata lacks it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def import_segments_command(slide: Path, source: Path, out: Path, format_: str, downsample: float | None,
                            bboxes: Path | None, even_odd: bool, base_mpp: float | None, quiet: bool) -> None:
    """Import the segments in SOURCE (GeoJSON polygons, a label mask, a Histomics Label pixelmap)
    for SLIDE: the slide's folder gets labels.tiff, superpixels.parquet, imported_segments.parquet
    and manifest.json, as computed superpixels do.
    """
    bar = StageBar(enabled=not quiet, prefix=f"{slide.name} ", unit="tile")
    try:
        result = import_segments(slide, source, out / slide.stem, format=format_, base_mpp=base_mpp,
                                 options=ImportOptions(downsample=downsample, bboxes=bboxes, even_odd=even_odd),
                                 progress=lambda done, total: bar("rasterise", done, total))
    finally:
        bar.close()
    click.echo(result.summary())
