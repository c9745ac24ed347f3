"""An uploaded file's name (a slide's name, shown to the project's members) holds printable
characters only, as other names do (sixteenth attack: a right-to-left override was taken)."""

from __future__ import annotations

import pytest

from slidelabel.errors import ParameterError
from slidelabel.services.uploads import upload_name


@pytest.mark.parametrize("name", ["tumour\u202egpj.svs", "a\u200bb.svs", "\x1b[31mred.svs", "line\u2028end.svs"])
def test_names_with_unshown_characters_are_refused(name):
    with pytest.raises(ParameterError, match=rf"holds U\+{ord(next(c for c in name if not c.isprintable())):04X}, a "
                                             "control, invisible or unassigned character.*rename the file"):
        upload_name(name)


@pytest.mark.parametrize(("filename", "name"), [("C:\\slides\\Tumör 1.svs", "Tumör 1.svs"), ("x/y/ 切片.ndpi ", "切片.ndpi")])
def test_printable_names_are_the_base_name(filename, name):
    assert upload_name(filename) == name


def test_an_upload_named_with_a_bidi_override_is_a_422_and_adds_nothing(client, admin_headers, project, cmu_slide):
    response = client.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                           files={"file": ("cmu\u202egpj.svs", cmu_slide.read_bytes(), "image/tiff")})
    assert response.status_code == 422, response.text
    assert "U+202E" in response.json()["detail"] and "\u202e" not in response.json()["detail"]
    assert client.get(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers).json() == []


def test_a_server_folder_file_named_with_a_bidi_override_is_not_added(client, admin_headers, project, settings,
                                                                       cmu_slide):
    """Eighteenth attack (low): a slide folder's file named ``tumour<U+202E>gpj.svs`` was added under
    that name (shown to the members as "tumoursvs.jpg"). It is listed as a warning, skipped from a
    folder, refused alone, and every message shows the character escaped."""
    import shutil

    folder = settings.slide_folders[0]
    shutil.copy(cmu_slide, folder / "cmu.svs")
    shutil.copy(cmu_slide, folder / "tumour\u202egpj.svs")
    listing = client.get("/api/v1/slide-folders", headers=admin_headers).json()[0]
    assert [s["path"].rsplit("/", 1)[1] for s in listing["slides"]] == ["cmu.svs"]
    assert "U+202E" in listing["warnings"][0] and "\u202e" not in listing["warnings"][0]
    added = client.post(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers, json={"path": str(folder)})
    assert added.status_code == 201, added.text
    assert [s["name"] for s in added.json()["added"]] == ["cmu.svs"]
    assert ["U+202E" in s["reason"] and "\u202e" not in s["path"] for s in added.json()["skipped"]] == [True]
    alone = client.post(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers,
                        json={"path": str(folder / "tumour\u202egpj.svs")})
    assert alone.status_code == 422 and "U+202E" in alone.json()["detail"], alone.text
    assert "\u202e" not in alone.json()["detail"]
