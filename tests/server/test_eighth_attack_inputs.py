"""Eighth attack: names that people give.

- A label import coerced non-string class names into category names: ``{"name": ["a"]}``
  created the category "['a']", ``5`` the category "5", a DSA ``"group": 7`` the category "7".
  Such a file is now refused (422) naming the feature or element.
- Usernames took invisible, bidi and control characters ("alice\\u200b" shows as "alice" in
  every member list) that category names refuse; and a noncharacter (U+FFFF) passed as a name.
  One printable-name rule (:func:`slidelabel.services.names.check_printable_name`) now serves both.
"""

from __future__ import annotations

import pytest

from slidelabel.errors import ParameterError
from slidelabel.services.imports import parse_document
from slidelabel.services.names import check_printable_name, shown_input

SQUARE = [[[0, 0], [2000, 0], [2000, 2000], [0, 2000], [0, 0]]]


def _geojson(classification: object) -> dict:
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "classification": classification}, "geometry": {"type": "Polygon", "coordinates": SQUARE}}]}


def _dsa(element: dict) -> dict:
    return {"name": "a", "elements": [{"type": "polyline", "closed": True, "points": [[0, 0, 0], [99, 0, 0], [99, 99, 0]],
                                       **element}]}


@pytest.mark.parametrize("document, where", [
    (_geojson({"name": ["a"]}), "feature 0: its classification name must be a string"),
    (_geojson({"name": 5}), "feature 0: its classification name must be a string (a class name); got a JSON number"),
    (_geojson({"name": {"x": 1}}), "got a JSON object"),
    (_geojson({"names": ["a", 5]}), "feature 0: its classification names must be a string"),
    (_dsa({"group": 7}), "element 0: its group must be a string"),
    (_dsa({"label": {"value": True}}), "element 0: its label value must be a string (a class name); got a JSON boolean"),
    ({"name": "a", "elements": [{"type": "pixelmap", "values": [0, 1], "categories": [{"label": "none"}, {"label": 3}]}]},
     "element 0, category 1: its label must be a string"),
])
def test_a_class_name_that_is_no_string_is_refused_naming_where(document, where):
    with pytest.raises(ParameterError) as raised:
        parse_document(document)
    assert where in str(raised.value)


def test_string_class_names_still_import():
    assert [shape.name for shape in parse_document(_geojson({"name": "tumour"})).shapes] == ["tumour"]
    assert [shape.name for shape in parse_document(_geojson({"names": ["tumour", "grade 2"]})).shapes] == [
        "tumour: grade 2"]
    assert [shape.name for shape in parse_document(_geojson("stroma")).shapes] == ["stroma"]
    assert [shape.name for shape in parse_document(_dsa({"group": "glass"})).shapes] == ["glass"]
    assert parse_document(_geojson({"name": None})).shapes == []


def test_a_label_import_with_a_list_as_class_name_is_a_422(client, project, slide_url, admin_headers):
    answer = client.post(f"{slide_url}/import", headers=admin_headers, params={"create_categories": "true"},
                         json=_geojson({"name": ["a"]}))
    assert answer.status_code == 422 and "feature 0" in answer.json()["detail"]
    names = {category["name"] for category in client.get(f"/api/v1/projects/{project['id']}",
                                                         headers=admin_headers).json()["categories"]}
    assert "['a']" not in names


@pytest.mark.parametrize("username, code", [
    ("alice\u200b", "U+200B"), ("\u202eecila", "U+202E"), ("a\nb", "U+000A"), ("bob\uffff", "U+FFFF"),
    ("\ufdd0carol", "U+FDD0"), ("dave\ue000", "U+E000"),
])
def test_a_username_is_printable_text(client, admin_headers, username, code):
    answer = client.post("/api/v1/users", headers=admin_headers, json={"username": username, "password": "password123"})
    assert answer.status_code == 422 and code in answer.json()["detail"]
    assert username not in [user["username"] for user in client.get("/api/v1/users", headers=admin_headers).json()]


def test_printable_usernames_are_taken(client, admin_headers):
    for username in ("alice", "Zoë Müller", "研究者", "o'brien-2"):
        answer = client.post("/api/v1/users", headers=admin_headers, json={"username": username, "password": "password123"})
        assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("name", ["x\uffff", "a\u200bb", "a\u2028b", "tab\tx",
                                  # Seventeenth attack: names that looked blank were taken.
                                  "\u3164", "\u2800", "\uffa0", "\u115f", "a\u034fb"])
def test_the_name_rule_refuses_what_would_not_show(name):
    with pytest.raises(ParameterError, match="U\\+"):
        check_printable_name(name, what="category name", max_chars=100)


def test_the_name_rule_strips_and_bounds():
    assert check_printable_name("  Tumour 2  ", what="category name", max_chars=100) == "Tumour 2"
    with pytest.raises(ParameterError, match="needs a name"):
        check_printable_name("   ", what="category name", max_chars=100)
    with pytest.raises(ParameterError, match="at most 5 characters") as raised:
        check_printable_name("x" * 3_000_000, what="username", max_chars=5)
    assert len(str(raised.value)) < 200


def test_an_input_is_named_by_a_short_prefix_and_its_length():
    assert shown_input("resnet") == "'resnet'"
    shown = shown_input("y" * 3_000_000)
    assert shown == f"{'y' * 40!r}... (3,000,000 characters)"


@pytest.mark.parametrize("document", [{"type": "x" * 3_000_000}, {"k" * 3_000_000: 1, "b": 2}])
def test_a_label_file_of_the_wrong_shape_is_named_briefly(document):
    with pytest.raises(ParameterError) as raised:
        parse_document(document)
    assert len(str(raised.value)) < 500 and "3,000,000 characters" in str(raised.value)
