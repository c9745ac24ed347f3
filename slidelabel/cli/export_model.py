"""``slidelabel export-model``: a model file as ONNX with a JSON sidecar, for other tools."""

from __future__ import annotations

from pathlib import Path

import click

from slidelabel.cli.errors import user_errors
from slidelabel.errors import ParameterError


def _colours(pairs: tuple[str, ...]) -> dict[str, str]:
    colours = {}
    for pair in pairs:
        name, separator, colour = pair.rpartition("=")
        if not separator or not name:
            raise ParameterError(f"--colour takes CATEGORY=#rrggbb, got {pair!r}")
        colours[name] = colour
    return colours


@click.command("export-model")
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write MODEL.onnx and MODEL.json into (created if missing).")
@click.option("--colour", "colours", multiple=True, metavar="CATEGORY=#RRGGBB",
              help="A category's colour for the sidecar; repeat for several.")
@user_errors
def export_model(model_file: Path, out: Path, colours: tuple[str, ...]) -> None:
    """Export MODEL_FILE (a slidelabel model file) as ONNX: raw float32 features in, the
    probability of each category out, exactly as slidelabel predicts them."""
    from slidelabel.services.model_export import export_model_file  # the model stack, only when run

    exported = export_model_file(model_file, out, colours=_colours(colours))
    click.echo(exported.onnx_path)
    click.echo(exported.sidecar_path)
