"""``slidelabel serve`` checks where it will listen before it makes anything: a bad port or host,
or a port in use, is a usage error, with no data folder or admin user made (sixteenth attack:
``--port 99999`` printed a traceback from ``bind()`` after both were made)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from slidelabel.cli.errors import EXIT_USAGE
from slidelabel.cli.main import main


def serve(data_dir: Path, *args: str, **environment: str):
    return CliRunner().invoke(main, ["serve", *args], env={"SLIDELABEL_DATA_DIR": str(data_dir), **environment})


def refused_before_anything(result, data_dir: Path, *words: str) -> None:
    assert result.exit_code == EXIT_USAGE, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and not data_dir.exists()
    for word in words:
        assert word in result.output, result.output


@pytest.mark.parametrize("port", ["99999", "-1", "0", "65536"])
def test_a_port_out_of_range_is_a_usage_error(tmp_path, port):
    refused_before_anything(serve(tmp_path / "data", "--port", port), tmp_path / "data", "--port", port,
                            "1<=x<=65535")


def test_a_port_out_of_range_from_the_environment_is_a_usage_error(tmp_path):
    refused_before_anything(serve(tmp_path / "data", SLIDELABEL_PORT="99999"), tmp_path / "data",
                            "cannot listen on 127.0.0.1:99999 (the port must be 1 to 65535)")


def test_a_host_that_does_not_resolve_or_a_port_in_use_is_a_usage_error(tmp_path):
    refused_before_anything(serve(tmp_path / "data", "--host", "no-such-host.invalid", "--port", "8000"),
                            tmp_path / "data", "cannot listen on no-such-host.invalid:8000")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused_before_anything(serve(tmp_path / "data", "--port", str(port)), tmp_path / "data",
                                f"cannot listen on 127.0.0.1:{port} (Address already in use)")
