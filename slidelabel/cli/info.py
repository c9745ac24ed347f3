"""``slidelabel info``: what a slide is (size, pyramid, pixel size, reader, tissue), and what this
installation can compute with (``--registry``)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import click

from slidelabel.cli.errors import EXIT_FAILED, exit_code_for, user_errors
from slidelabel.errors import SlideError
from slidelabel.pipelines.slide_readers import list_sources
from slidelabel.pipelines.slides import open_slide
from slidelabel.pipelines.tissue import detect_tissue
from slidelabel.services.registries import Choice, registries

#: Longer side of the thumbnail the tissue fraction is measured on, in pixels: enough to see
#: every piece of tissue, small enough to take well under a second on a whole slide.
TISSUE_THUMBNAIL_SIZE = 1024

_MPP_ORIGINS = {"metadata": "from the slide's metadata", "user": "from --base-mpp"}


def describe_slide(path: str, *, base_mpp: float | None, source: str | None) -> dict:
    """The slide's ``SlideInfo.to_dict()`` plus ``tissue_fraction`` (0 to 1, of the thumbnail)."""
    with open_slide(path, base_mpp=base_mpp, source=source) as slide:
        thumbnail, downsample = slide.thumbnail(max_size=TISSUE_THUMBNAIL_SIZE)
        tissue = detect_tissue(thumbnail, downsample=downsample, mpp=slide.info.mpp)
        return {**slide.info.to_dict(), "tissue_fraction": round(tissue.fraction, 4)}


def _pixel_size(record: dict) -> str:
    if record["mpp"] is None:
        return (
            "unknown (not in the slide's metadata); pass --base-mpp UM with the level-0 pixel "
            "size, e.g. 0.25 for 40x or 0.5 for 20x scans"
        )
    size = f"{record['mpp']:g}"
    if record["mpp_y"] not in (None, record["mpp"]):
        size += f" x {record['mpp_y']:g}"
    return f"{size} um/px ({_MPP_ORIGINS[record['mpp_source']]})"


def format_slide(record: dict) -> str:
    """Human-readable lines for one record of :func:`describe_slide`."""
    magnification = record["magnification"]
    vendor = f" (vendor: {record['vendor']})" if record["vendor"] else ""
    rows = [
        ("reader", record["source"] + vendor),
        ("size", f"{record['width']} x {record['height']} px at level 0"),
        ("levels", str(record["levels"])),
        ("tile size", f"{record['tile_width']} x {record['tile_height']} px"),
        ("pixel size", _pixel_size(record)),
        ("magnification", f"{magnification:g}x" if magnification else "unknown"),
        ("associated images", ", ".join(record["associated_images"]) or "none"),
        ("tissue", f"{100 * record['tissue_fraction']:.1f}% of the slide"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    return "\n".join([record["path"], *(f"  {name + ':':<{width}}{value}" for name, value in rows)])


def format_registries(listed: dict[str, list[Choice]]) -> str:
    """One block per registry: each name (``*`` the default) and its description."""
    blocks = []
    for kind, choices in listed.items():
        width = max((len(choice.name) for choice in choices), default=0) + 2
        rows = [f"  {'*' if c.default else ' '} {c.name:<{width}}{c.description}" for c in choices]
        blocks.append("\n".join([kind.replace("_", " ") + ":", *rows]))
    return "\n\n".join(blocks) + "\n\n* the default of a new project"


@click.command()
@click.argument("slides", nargs=-1, metavar="SLIDE...")
@click.option("--base-mpp", type=float, metavar="UM",
              help="Micrometres per level-0 pixel, for slides without it in their metadata.")
@click.option("--source", metavar="NAME",
              help="Slide reader (large_image tile source) to use; see --sources.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per slide (a list when several).")
@click.option("--sources", "show_sources", is_flag=True, help="List the installed slide readers.")
@click.option("--registry", "show_registry", is_flag=True,
              help="List the feature extractors, models, strategies, normalisations, slide readers and import "
                   "formats installed, defaults marked.")
@user_errors
def info(
    slides: tuple[str, ...],
    base_mpp: float | None,
    source: str | None,
    as_json: bool,
    show_sources: bool,
    show_registry: bool,
) -> None:
    """Show the size, pyramid, pixel size, reader and tissue fraction of each SLIDE."""
    if show_sources:
        names = list_sources()
        click.echo(json.dumps(names) if as_json else "\n".join(names))
        return
    if show_registry:
        listed = registries()
        click.echo(json.dumps({kind: [asdict(c) for c in choices] for kind, choices in listed.items()}, indent=2)
                   if as_json else format_registries(listed))
        return
    if not slides:
        raise click.UsageError("give at least one SLIDE, or --sources, or --registry")
    if len(slides) == 1:  # a single slide's error goes to user_errors: message and exit code
        record = describe_slide(slides[0], base_mpp=base_mpp, source=source)
        click.echo(json.dumps(record, indent=2) if as_json else format_slide(record))
        return
    records, errors = [], []
    for path in slides:
        try:
            records.append(describe_slide(path, base_mpp=base_mpp, source=source))
        except SlideError as error:  # one bad slide must not hide the others
            click.echo(f"error: {error}", err=True)
            errors.append(error)
            records.append({"path": path, "error": str(error)})
    if as_json:
        click.echo(json.dumps(records, indent=2))
    elif len(errors) < len(slides):
        click.echo("\n\n".join(format_slide(record) for record in records if "error" not in record))
    if errors:
        sys.exit(EXIT_FAILED if len(errors) < len(slides) else exit_code_for(errors[0]))
