"""Eighth attack, exports: the predictions CSV's header (3) and errors that echoed megabytes (11,
projects).

3. The header was joined with ``","`` while rows went through :mod:`csv`: a category named
   ``a"b,c`` split into two header columns and every later probability column was misnamed; names
   starting with ``=`` went into spreadsheets as formulas.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from slidelabel.services.exports import spreadsheet_text
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Slide
from slidelabel.store.predictions import SlidePredictions, write_predictions
from slidelabel.store.superpixel_files import TABLE_FILE
from slidelabel.store.superpixel_table import read_table

API = "/api/v1"
BIG = "x" * 3_000_000


def _predict(app, project: dict, slide_id: int, category_ids_C: list[int], number: int = 1) -> np.ndarray:
    """Epoch ``number`` predicting columns ``category_ids_C`` for the slide: superpixel ``i``'s top
    column is ``i % C`` with probability 0.7, the others share the rest; the last superpixel is not
    predicted. Returns ``probs_N_C``."""
    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    count = read_table(files.superpixels(slide_id) / TABLE_FILE).ids.size
    with app.state.database.session(write=True) as session:
        session.get(Slide, slide_id).superpixels = count
    columns = len(category_ids_C)
    probs_N_C = np.full((count, columns), 0.3 / (columns - 1), np.float32)
    probs_N_C[np.arange(count), np.arange(count) % columns] = 0.7
    probs_N_C[-1] = 0
    write_predictions(files.predictions(number, slide_id), SlidePredictions(np.array(category_ids_C), probs_N_C))
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=number, labels=10, metrics={}))
    return probs_N_C


def _add(client, headers, project: dict, name: str) -> dict:
    response = client.post(f"{API}/projects/{project['id']}/categories", headers=headers, json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()


# 3: the CSV header ---------------------------------------------------------------------------


def test_the_predictions_csv_header_is_quoted_as_its_rows(app, client, admin_headers, project, slide_url, slide_row):
    tumour = project["categories"][0]["id"]
    quoted, formula = (_add(client, admin_headers, project, name)["id"] for name in ('a"b,c', '=HYPERLINK("http://x")'))
    _predict(app, project, slide_row, [tumour, quoted, formula])
    for address in (f"{slide_url}/export/predictions.csv", f"{API}/projects/{project['id']}/export/predictions.csv"):
        response = client.get(address, headers=admin_headers)
        assert response.status_code == 200, response.text
        rows = list(csv.reader(io.StringIO(response.text)))
        assert {len(row) for row in rows} == {15}
        assert rows[0][10:] == ["predicted", "certainty", "p_tumour", 'p_a"b,c', 'p_=HYPERLINK("http://x")']
        # Superpixel 3 (row 3) is predicted the third column, whose name a spreadsheet would run.
        assert rows[3][1] == "3" and rows[3][10] == "'=HYPERLINK(\"http://x\")"
        assert float(rows[3][14]) == pytest.approx(0.7, abs=1e-3)
        assert rows[2][10] == 'a"b,c'


def test_a_slide_name_a_spreadsheet_would_run_is_escaped(app, client, admin_headers, project, slide_url, slide_row):
    _predict(app, project, slide_row, [c["id"] for c in project["categories"][:2]])
    with app.state.database.session(write=True) as session:
        session.get(Slide, slide_row).name = "@SUM(1+1)*cmd|' /C calc'!A0.svs"
    rows = list(csv.reader(io.StringIO(client.get(f"{slide_url}/export/predictions.csv", headers=admin_headers).text)))
    assert {row[0] for row in rows[1:]} == {"'@SUM(1+1)*cmd|' /C calc'!A0.svs"}


@pytest.mark.parametrize("cell, written", [
    ("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@A1", "'@A1"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("tumour", "tumour"), ("a=b", "a=b"), ("", ""), ("'quoted", "'quoted"),
])
def test_spreadsheet_text_escapes_what_spreadsheets_read_as_formulas(cell, written):
    assert spreadsheet_text(cell) == written


# 11: errors that echoed their input ------------------------------------------------------------


@pytest.mark.parametrize("method, path, body", [
    ("put", "/members", {"username": BIG, "role": "viewer"}),
    ("post", "/categories", {"name": "necrosis", "color": BIG}),
    ("post", "/categories", {"name": "necrosis", "hotkey": BIG}),
    ("patch", "/categories/{category}", {"hotkey": BIG}),
    ("patch", "/categories/{category}", {"color": BIG}),
])
def test_errors_quote_a_short_prefix_of_a_large_input(client, admin_headers, project, method, path, body):
    address = f"{API}/projects/{project['id']}" + path.format(category=project["categories"][0]["id"])
    response = client.request(method, address, headers=admin_headers, json=body)
    assert 400 <= response.status_code < 500, response.text[:200]
    assert len(response.content) < 2000, response.text[:200]
    assert "x" * 40 + "'..." in response.text and "3,000,000 characters" in response.text


def test_an_error_on_a_new_project_quotes_a_short_prefix(client, admin_headers):
    response = client.post(f"{API}/projects", headers=admin_headers,
                           json={"name": "n", "categories": [{"name": "a", "color": BIG}]})
    assert response.status_code == 422 and len(response.content) < 2000, response.text[:200]
    assert "3,000,000 characters" in response.text
