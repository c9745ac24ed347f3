"""The ``slidelabel`` command: a group whose subcommands live in modules of their own."""

from __future__ import annotations

import click

from slidelabel import __version__
from slidelabel.cli.demo import demo
from slidelabel.cli.info import info
from slidelabel.cli.render import render
from slidelabel.cli.simulate import simulate_command
from slidelabel.cli.superpixels import superpixels


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slidelabel")
def main() -> None:
    """Label whole-slide images by superpixels and teach a classifier what is in them."""


for command in (info, superpixels, render, demo, simulate_command):
    main.add_command(command)
