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
