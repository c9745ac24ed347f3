"""Every ``SLIDELABEL_*`` variable the package reads is a field of the one Settings object."""

from __future__ import annotations

import re
from pathlib import Path

import slidelabel
from slidelabel.settings import Settings

PACKAGE = Path(slidelabel.__file__).parent


def test_every_variable_the_code_names_is_a_setting() -> None:
    named = {match for path in PACKAGE.rglob("*.py")
             for match in re.findall(r"SLIDELABEL_([A-Z][A-Z0-9_]*[A-Z0-9])\b", path.read_text())}
    fields = {name.upper() for name in Settings.model_fields}
    assert named - fields == set(), "read outside Settings: " + ", ".join(sorted(named - fields))
    assert {"DATA_DIR", "DB", "BROKER", "CACHE", "MODELS", "SAM_MODEL"} <= named


def test_the_cache_and_model_folders_follow_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLIDELABEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().cache == tmp_path / "xdg" / "slidelabel"
    monkeypatch.setenv("SLIDELABEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SLIDELABEL_MODELS", str(tmp_path / "weights"))
    settings = Settings()
    assert (settings.cache, settings.models) == (tmp_path / "cache", tmp_path / "weights")


def test_a_child_process_reads_back_the_same_settings(monkeypatch, tmp_path: Path) -> None:
    from slidelabel.cli.server_options import settings_environment

    for name in Settings.model_fields:
        monkeypatch.delenv(f"SLIDELABEL_{name.upper()}", raising=False)
    folder = tmp_path / "slides"
    settings = Settings(data_dir=tmp_path / "data", slide_folders=[folder], slide_folder_readers={folder: ["alice"]},
                        worker_max_memory_mb=1, job_stale_seconds=6.5, open_project_creation=True,
                        admin_password="a password", sam_model=tmp_path / "sam")
    for variable, value in settings_environment(settings).items():
        monkeypatch.setenv(variable, value)
    assert Settings() == settings.model_copy(update={"db": settings.database_url, "broker": settings.broker_url})
