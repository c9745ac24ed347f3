"""``slidelabel simulate``: active learning against ground-truth masks, with learning curves."""

from __future__ import annotations

import json
from pathlib import Path

import click

from slidelabel.cli.errors import user_errors
from slidelabel.cli.progress import StageBar
from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.models import MODELS
from slidelabel.pipelines.strategies import STRATEGIES
from slidelabel.services.simulation import SimulationOptions, load_images, simulate
from slidelabel.services.simulation_report import write_report

_DEFAULTS = SimulationOptions.__dataclass_fields__


def _default(name: str):
    return _DEFAULTS[name].default


@click.command("simulate")
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("masks", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for curve.csv, summary.json and curve.png.")
@click.option("--strategies", default=",".join(_default("strategies")), show_default=True,
              help=f"Comma-separated strategies; registered: {', '.join(STRATEGIES)}.")
@click.option("--features", "extractor", type=click.Choice(sorted(FEATURES)), default=_default("extractor"), show_default=True)
@click.option("--model", type=click.Choice(sorted(MODELS)), default=_default("model"), show_default=True)
@click.option("--superpixel-px", type=click.IntRange(min=4), default=_default("superpixel_px"), show_default=True,
              help="Superpixel side in image pixels.")
@click.option("--initial-labels", type=click.IntRange(min=1), default=_default("initial_labels"), show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_default("batch_size"), show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=_default("budget"), show_default=True,
              help="Labels at which a run stops.")
@click.option("--repeats", type=click.IntRange(min=1), default=_default("repeats"), show_default=True,
              help="Runs per strategy, each from other initial labels.")
@click.option("--test-fraction", type=float, default=_default("test_fraction"), show_default=True,
              help="Share of the images held out for testing; they never give labels.")
@click.option("--seed", type=int, default=_default("seed"), show_default=True)
@click.option("--normalise-per-image/--no-normalise-per-image", default=_default("normalise_per_image"), show_default=True,
              help="z-score features within each image (uses no labels), against stain differences.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def simulate_command(images: Path, masks: Path, out: Path, strategies: str, quiet: bool, **options: object) -> None:
    """Simulate labelling IMAGES whose truth is in MASKS (same file names; mask value = class).

    Every superpixel gets the majority class of its pixels; the strategies choose which to
    reveal, batch by batch, and every round is scored on held-out images.
    """
    chosen = tuple(name.strip() for name in strategies.split(",") if name.strip())
    settings = SimulationOptions(strategies=chosen, **options)  # type: ignore[arg-type]
    bars = StageBar(enabled=not quiet)
    loaded, values = load_images(images, masks, settings, progress=bars)
    result = simulate(loaded, values, settings, progress=bars)
    bars.close()
    summary = write_report(result, settings, out)
    click.echo(json.dumps({k: summary[k] for k in ("full_supervision", "strategies")}, indent=2, default=float))
    click.echo(f"wrote {out / 'curve.csv'}, {out / 'summary.json'} and {out / 'curve.png'}")
