"""``slidelabel import-features``: features computed by another tool for a slide's segments."""

from __future__ import annotations

from pathlib import Path

import click

from slidelabel.cli.errors import user_errors
from slidelabel.cli.progress import StageBar
from slidelabel.services.feature_import import import_features


@click.command("import-features")
@click.argument("slide", type=click.Path(path_type=Path))
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--segments", "segments", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The slide's segments folder (from import-segments or superpixels).")
@click.option("--name", required=True, help="Name the features are registered under, e.g. uni-trident.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for NAME.zarr.")
@click.option("--format", "format_", default="auto", show_default=True,
              help="Source format: auto, or one `slidelabel info --registry` lists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def import_features_command(slide: Path, source: Path, segments: Path, name: str, out: Path, format_: str,
                            quiet: bool) -> None:
    """Import the features in SOURCE (TRIDENT/CLAM patch HDF5, a Parquet/CSV table, Histomics
    Label's feature.h5) for the segments of SLIDE, as the Zarr array a computed extractor writes.
    """
    bar = StageBar(enabled=not quiet, prefix=f"{slide.name} ", unit="tile")
    try:
        result = import_features(slide, source, segments, out, name=name, format=format_,
                                 progress=lambda done, total: bar("patches", done, total))
    finally:
        bar.close()
    click.echo(result.summary())
