"""The docker/ files, checked without a Docker engine: the compose files parse, name a Dockerfile
and targets that exist, declare the volumes they mount, and run slidelabel commands whose
options slidelabel's CLI accepts; the Dockerfile installs through Makefile targets that exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click
import pytest
import yaml

from slidelabel.cli.main import main

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILES = sorted(DOCKER.glob("compose.*.yml"))
DOCKERFILE = (DOCKER / "Dockerfile").read_text()


def services(path: Path) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())["services"]


def test_there_are_a_team_and_a_dsa_deployment():
    assert [p.name for p in COMPOSE_FILES] == ["compose.dsa.yml", "compose.team.yml"]


def test_the_dockerfile_installs_through_makefile_targets_that_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = re.findall(r"RUN make ([\w-]+)", DOCKERFILE)
    assert targets == ["venv", "plugin-test"]
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), target


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_a_compose_file_builds_stages_of_the_dockerfile_and_mounts_declared_volumes(path: Path):
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE, re.MULTILINE))
    declared = set(yaml.safe_load(path.read_text()).get("volumes") or {})
    for name, service in services(path).items():
        if "build" in service:
            assert (path.parent / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
            assert service["build"]["target"] in stages, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(("/", ".", "$")) or source in declared, f"{name}: volume {source}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_a_compose_file_runs_commands_that_exist(path: Path):
    for name, service in services(path).items():
        command = service.get("command")
        if not command:
            continue
        if command[0] == "slidelabel":
            subcommand = main.get_command(click.Context(main), command[1])  # imported on demand
            assert subcommand is not None, f"{name}: no slidelabel {command[1]}"
            subcommand.make_context(command[1], list(command[2:]))  # raises on an unknown option
        elif command[0] == "uvicorn":
            assert importlib.util.find_spec(command[1].split(":")[0]) is not None, name
        else:
            pytest.fail(f"{name}: unexpected command {command}")
