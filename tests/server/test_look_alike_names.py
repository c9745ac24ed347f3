"""Names that must differ are compared as they look: a username or category name written in
fullwidth or mathematical letters, with a Cyrillic or Greek letter drawn like a Latin one, with a
variation selector or in other case is the name it looks like (the twenty-second attack's low:
'ａｄｍｉｎ' and Cyrillic 'аdmin' were accepted beside 'admin'). A name read from an imported file
that looks like a category's is that category."""

from __future__ import annotations

import threading

import pytest
from conftest import PASSWORD
from test_exports import slide_id, url  # noqa: F401 - fixtures

from slidelabel.services.names import look_alike_key

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

USERS = "/api/v1/users"
#: 'admin' as it can be made to look: fullwidth, mathematical bold, a Cyrillic 'а', a variation
#: selector, capitals, a Greek capital alpha.
ADMIN_LOOKS = ["ａｄｍｉｎ", "\U0001d41a\U0001d41d\U0001d426\U0001d422\U0001d427", "\u0430dmin", "admin\ufe0f", "Admin",
               "\u0391DMIN",
               # the twenty-fourth attack's: Latin alpha, dotless i, small capitals, Lisu
               "\u0251dmin", "adm\u0131n", "\u1d00\u1d05\u1d0d\u026a\u0274", "\ua4eeDMIN"]


@pytest.mark.parametrize("name", ADMIN_LOOKS)
def test_a_username_that_looks_like_another_is_taken(client, admin_headers, name):
    response = client.post(USERS, headers=admin_headers, json={"username": name, "password": PASSWORD})
    assert response.status_code == 409, response.text
    assert "looks like the existing username 'admin'" in response.json()["detail"]


def test_names_that_only_share_letters_stay_apart(client, admin_headers):
    for name in ["adm1n", "administrator", "José", "Jose", "\u0434\u043c\u0438\u0442\u0440\u0438\u0439"]:
        response = client.post(USERS, headers=admin_headers, json={"username": name, "password": PASSWORD})
        assert response.status_code == 201, (name, response.text)
    assert look_alike_key("José") != look_alike_key("Jose")


def test_a_category_that_looks_like_another_is_refused(client, admin_headers, project):
    categories = f"/api/v1/projects/{project['id']}/categories"
    for name in ["Tumour", "\u0422umour", "ＳＴＲＯＭＡ", "\u0455troma"]:
        response = client.post(categories, headers=admin_headers, json={"name": name})
        assert response.status_code == 409, (name, response.text)
        assert "which looks like" in response.json()["detail"]
    stroma = next(c for c in project["categories"] if c["name"] == "stroma")
    renamed = client.patch(f"{categories}/{stroma['id']}", headers=admin_headers, json={"name": "tum\u043eur"})
    assert renamed.status_code == 409, renamed.text
    # A category may take another look of its own name.
    tumour = next(c for c in project["categories"] if c["name"] == "tumour")
    renamed = client.patch(f"{categories}/{tumour['id']}", headers=admin_headers, json={"name": "Tumour"})
    assert renamed.status_code == 200


def test_an_imported_name_that_looks_like_a_category_labels_it(client, admin_headers, project, slide_id):
    """QuPath's 'Tumour' and 'STROMA' label the project's 'tumour' and 'stroma'; of two new names
    that look alike ('Necrosis', 'necrosis'), one category is made."""
    square = lambda x: [[[x, 0], [x + 400, 0], [x + 400, 400], [x, 400], [x, 0]]]  # noqa: E731
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square(x)},
                 "properties": {"classification": {"name": name}}}
                for x, name in [(0, "Tumour"), (600, "STROMA"), (1200, "Necrosis"), (1800, "necrosis")]]
    response = client.post(url(project, slide_id, "/import?create_categories=true"), headers=admin_headers,
                           json={"type": "FeatureCollection", "features": features})
    assert response.status_code == 200, response.text
    categories = client.get(f"/api/v1/projects/{project['id']}", headers=admin_headers).json()["categories"]
    assert sorted(c["name"] for c in categories) == ["Necrosis", "glass", "stroma", "tumour"]
    assert response.json()["created_categories"] == ["Necrosis"], response.json()


def test_look_alike_accounts_created_at_once_make_one(app):
    """Twenty-fourth attack, low: on PostgreSQL 'zoe', 'ＺＯＥ' and Cyrillic 'zое' created at once
    were all made (20 of 20 tries): the check and the insert now hold one lock."""
    from slidelabel.errors import ConflictError
    from slidelabel.services.accounts import create_user

    for round_ in range(8):
        names = [f"zoe{round_}", f"ＺＯＥ{round_}", f"z\u043e\u0435{round_}"]
        start, made = threading.Barrier(len(names)), []

        def create(name: str) -> None:
            start.wait()
            try:
                with app.state.database.session(write=True) as session:
                    create_user(session, name, PASSWORD)
                made.append(name)
            except ConflictError:
                pass

        threads = [threading.Thread(target=create, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(made) == 1, (round_, made)


@pytest.mark.parametrize("first, second", [("zo\u00eb", "zo\u0451"), ("al\u00edce", "al\u03afce"),
                                           ("jean-luc", "jean\u2010luc"), ("jo", "\u03f3o"), ("walice", "wa\u01c0ice")])
def test_letters_with_marks_and_dashes_look_alike(client, admin_headers, first, second):
    """Twenty-fifth attack, low: NFKC composes Cyrillic 'ё', so it never met the map of look-alike
    letters; dashes and a few letters were not in it."""
    assert client.post(USERS, headers=admin_headers, json={"username": first, "password": PASSWORD}).status_code == 201
    copy = client.post(USERS, headers=admin_headers, json={"username": second, "password": PASSWORD})
    assert copy.status_code == 409 and "looks like" in copy.json()["detail"]
