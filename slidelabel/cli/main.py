"""The ``slidelabel`` command: a group whose subcommands live in modules of their own.

Subcommands are imported when they run, not when the group starts: ``simulate`` pulls in the
learning engine (PyTorch among it), which would add seconds to every ``slidelabel info``.
"""

from __future__ import annotations

import importlib

import click

from slidelabel import __version__

#: Subcommand name -> "module:attribute" of its click command.
COMMANDS = {
    "info": "slidelabel.cli.info:info",
    "superpixels": "slidelabel.cli.superpixels:superpixels",
    "render": "slidelabel.cli.render:render",
    "demo": "slidelabel.cli.demo:demo",
    "simulate": "slidelabel.cli.simulate:simulate_command",
    "serve": "slidelabel.cli.serve:serve",
    "worker": "slidelabel.cli.worker:worker",
    "export-model": "slidelabel.cli.export_model:export_model",
    "import-segments": "slidelabel.cli.import_segments:import_segments_command",
    "import-features": "slidelabel.cli.import_features:import_features_command",
    "predict": "slidelabel.cli.predict:predict",
    "features": "slidelabel.cli.predict:features",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, _, attribute = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slidelabel")
def main() -> None:
    """Label whole-slide images by superpixels and teach a classifier what is in them."""


if __name__ == "__main__":
    main()
