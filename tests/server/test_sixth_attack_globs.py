"""Sixth attack on issue 13: a pattern adding slides from a server folder that holds a link back
into itself walked (and opened) a number of paths doubling with each wildcard: 10 wildcards, 1,024
opens of one slide, 24 s. Now a pattern has at most three wildcard parts, at most 10,000 matches,
and each file is opened once however many links lead to it."""

from __future__ import annotations

import shutil

import pytest

from slidelabel.errors import ParameterError
from slidelabel.services import slide_folders, slides


@pytest.fixture
def looped_folder(tmp_path, cmu_slide):
    folder = tmp_path / "looped"
    folder.mkdir()
    shutil.copy(cmu_slide, folder / "a.svs")
    for name in ("l1", "l2"):
        (folder / name).symlink_to(folder, target_is_directory=True)
    return folder


def test_a_pattern_through_a_link_loop_opens_each_file_once(app, settings, project, looped_folder):
    added = slides.add_from_server(app.state.database, settings, project["id"], str(looped_folder / "l*/l*/a.svs"),
                                   folders=[looped_folder])
    assert [slide.name for slide in added.slides] == ["a.svs"]
    assert len(added.skipped) == 3 and all("same file" in skip.reason for skip in added.skipped)


def test_a_pattern_of_many_wildcard_parts_is_refused(app, settings, project, looped_folder):
    with pytest.raises(ParameterError, match="at most 3 parts"):
        slides.add_from_server(app.state.database, settings, project["id"], str(looped_folder) + "/l*" * 10 + "/a.svs",
                               folders=[looped_folder])


def test_a_pattern_of_too_many_matches_is_refused(app, settings, project, looped_folder, monkeypatch):
    monkeypatch.setattr(slide_folders, "MAX_LISTED", 5)
    with pytest.raises(ParameterError, match="more than 5 files"):
        slides.add_from_server(app.state.database, settings, project["id"], str(looped_folder / "l*/l*/*"),
                               folders=[looped_folder])
