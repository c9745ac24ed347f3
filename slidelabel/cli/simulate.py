"""``slidelabel simulate``: active learning against ground-truth masks, with learning curves."""

from __future__ import annotations

import json
from pathlib import Path

import click

from slidelabel.cli.choices import RegistryChoice
from slidelabel.cli.errors import user_errors
from slidelabel.cli.progress import StageBar
from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.models import MODELS
from slidelabel.pipelines.normalisation import NORMALISATIONS
from slidelabel.services.simulation import SimulationOptions, simulate
from slidelabel.services.simulation_inputs import load_inputs
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
              help="Comma-separated strategies (`slidelabel info --registry` lists them).")
@click.option("--features", "extractor", type=RegistryChoice(FEATURES), default=_default("extractor"), show_default=True,
              help="Feature extractor (`slidelabel info --registry` lists them).")
@click.option("--model", type=RegistryChoice(MODELS), default=_default("model"), show_default=True,
              help="Model (`slidelabel info --registry` lists them).")
@click.option("--auto-budget", "auto_budget_s", type=click.FloatRange(min=0.5), default=None,
              help="Seconds of auto's model search per round (default: auto's own, 20 s).")
@click.option("--normalisation", type=RegistryChoice(NORMALISATIONS), default=_default("normalisation"),
              show_default=True, help="How stain and scanner differences between slides are removed.")
@click.option("--superpixel-px", type=click.IntRange(min=4), default=_default("superpixel_px"), show_default=True,
              help="Superpixel side in image pixels (images).")
@click.option("--size", default=_default("size"), show_default=True,
              help="Superpixel side for slides, e.g. 50um or 32px.")
@click.option("--magnification", type=click.FloatRange(min=0), default=_default("magnification"), show_default=True,
              help="Objective power slides are worked at (0: level 0).")
@click.option("--initial-labels", type=click.IntRange(min=1), default=_default("initial_labels"), show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=_default("batch_size"), show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=_default("budget"), show_default=True,
              help="Labels at which a run stops.")
@click.option("--repeats", type=click.IntRange(min=1), default=_default("repeats"), show_default=True,
              help="Runs per strategy, each from other initial labels.")
@click.option("--test-fraction", type=float, default=_default("test_fraction"), show_default=True,
              help="Share of the images held out for testing; they never give labels.")
@click.option("--seed", type=int, default=_default("seed"), show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def simulate_command(images: Path, masks: Path, out: Path, strategies: str, quiet: bool, **options: object) -> None:
    """Simulate labelling IMAGES whose truth is in MASKS (mask value = class).

    IMAGES holds images (PNG, JPEG; masks of the same name and size) or whole slides (SVS,
    TIFF, ...; masks aligned to level 0, named after the slide, PNG or TIFF), which go through
    the product's own tiled superpixels and feature extraction (kept in OUT/work). Every
    superpixel gets the majority class of its pixels; each round runs the server's own loop and
    reveals the head of its ranking; every round is scored on held-out images. With no options
    it runs a new project's defaults.
    """
    chosen = tuple(name.strip() for name in strategies.split(",") if name.strip())
    settings = SimulationOptions(strategies=chosen, **options)  # type: ignore[arg-type]
    bars = StageBar(enabled=not quiet)
    loaded, values = load_inputs(images, masks, settings, work=out / "work", progress=bars)
    result = simulate(loaded, values, settings, progress=bars)
    bars.close()
    summary = write_report(result, settings, out)
    click.echo(json.dumps({k: summary[k] for k in ("full_supervision", "strategies")}, indent=2, default=float))
    click.echo(f"wrote {out / 'curve.csv'}, {out / 'summary.json'} and {out / 'curve.png'}")
