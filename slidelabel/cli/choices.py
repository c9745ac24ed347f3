"""Command-line options that take a registered name, checked when the command runs.

The registries are built then, not when the command is imported, so ``--help`` and the other
commands never load feature extractors or models; ``slidelabel info --registry`` lists the names.
"""

from __future__ import annotations

import click

from slidelabel.registry import Registry


class RegistryChoice(click.ParamType):
    """A name registered in ``registry``; a usage error listing the names otherwise."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.name = registry.kind

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        name = str(value)
        if name not in self.registry:
            self.fail(f"unknown {self.registry.kind} {name!r}; registered: {', '.join(self.registry)}", param, ctx)
        return name

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "NAME"
