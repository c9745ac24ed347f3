"""Eighth attack, exports: the predictions CSV's header (3), category positions after a merge (4),
predictions of a category merged away (5) and errors that echoed megabytes (11, projects).

3. The header was joined with ``","`` while rows went through :mod:`csv`: a category named
   ``a"b,c`` split into two header columns and every later probability column was misnamed; names
   starting with ``=`` went into spreadsheets as formulas.
4. A new category took the number of categories as its position: after a merge, the position of
   an existing one, so the label-mask TIFF (value = position + 1) gave both one value.
5. A merge left the epoch's predictions holding the deleted id: the GeoJSON of predictions
   dropped those superpixels, the mask wrote 0, the CSV named a column ``p_category 12``,
   ``predictions.bin`` and the gallery's overlay held an id of no category.
"""

from __future__ import annotations

import csv
import io
import threading
import time

import numpy as np
import pytest
import tifffile
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from slidelabel.services.epochs import PredictionWriter
from slidelabel.services.prediction_csv import spreadsheet_text
from slidelabel.services.projects import add_category
from slidelabel.store.database import MIGRATIONS, Database, migration_connection
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Project, Slide
from slidelabel.store.predictions import SlidePredictions, read_predictions, write_predictions
from slidelabel.store.superpixel_files import TABLE_FILE
from slidelabel.store.superpixel_table import read_table

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

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


def _merge(client, headers, project: dict, source: int, target: int) -> None:
    response = client.post(f"{API}/projects/{project['id']}/categories/{source}/merge", headers=headers,
                           json={"into": target})
    assert response.status_code == 200, response.text


def _categories(client, headers, project: dict) -> list[dict]:
    return client.get(f"{API}/projects/{project['id']}", headers=headers).json()["categories"]


def _mask(client, headers, slide_url: str, source: str) -> np.ndarray:
    response = client.get(f"{slide_url}/export/mask.tiff", headers=headers, params={"source": source})
    assert response.status_code == 200, response.text
    return tifffile.imread(io.BytesIO(response.content))


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


# 4: positions ------------------------------------------------------------------------------


def test_a_category_added_after_a_merge_takes_a_position_and_mask_value_of_its_own(client, admin_headers, project,
                                                                                   slide_url):
    tumour, stroma, glass = project["categories"]
    _merge(client, admin_headers, project, tumour["id"], stroma["id"])
    new = _add(client, admin_headers, project, "necrosis")
    categories = _categories(client, admin_headers, project)
    positions = [c["position"] for c in categories]
    assert len(set(positions)) == len(positions) == 3
    # The others keep theirs (their mask values do not change with a merge); the new one is last.
    assert [(c["name"], c["position"]) for c in categories] == [("stroma", 1), ("glass", 2), ("necrosis", 3)]
    assert new["color"] != glass["color"] and new["hotkey"] == "4"
    for superpixels, category in ((range(1, 101), glass["id"]), (range(101, 201), new["id"])):
        response = client.put(f"{slide_url}/labels", headers=admin_headers,
                              json={"superpixels": list(superpixels), "category_id": category})
        assert response.status_code == 200, response.text
    values = np.unique(_mask(client, admin_headers, slide_url, "labels"))
    assert values.tolist() == [0, 3, 4]


def test_categories_added_at_once_take_different_positions(app, project):
    """PostgreSQL runs two writes at once (SQLite's write turn queues them): the second new
    category waits for the first one's transaction on the project's row, then comes after it."""
    database = app.state.database
    done: list[int] = []

    def second() -> None:
        with database.session(write=True) as session:
            done.append(add_category(session, session.get(Project, project["id"]), "second").position)

    with database.session(write=True) as session:
        first = add_category(session, session.get(Project, project["id"]), "first").position
        if database.engine.dialect.name == "sqlite":
            thread = None  # would wait for this transaction's write turn: run it after
        else:
            thread = threading.Thread(target=second)
            thread.start()
            # Without the row lock, the second reads the positions now, before this commits.
            time.sleep(0.5)
    if thread is None:
        second()
    else:
        thread.join()
    assert (first, done) == (3, [4])


def test_positions_stay_within_a_uint8_mask_after_many_merges(app, client, admin_headers, project):
    """Past position 254 a new category takes the lowest free position, so masks can hold it."""
    with app.state.database.session(write=True) as session:
        session.execute(text("UPDATE categories SET position = 254 WHERE id = :id"),
                        {"id": project["categories"][2]["id"]})
    _merge(client, admin_headers, project, project["categories"][0]["id"], project["categories"][1]["id"])
    assert _add(client, admin_headers, project, "late")["position"] == 0


def test_the_migration_separates_categories_that_share_a_position(tmp_path):
    """Databases of before: after a merge, new categories took an existing position."""
    database = Database(f"sqlite:///{tmp_path / 'old.sqlite'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    def upgrade(to: str) -> None:
        with migration_connection(database.engine) as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, to)

    upgrade("0007")
    with database.engine.begin() as connection:
        connection.execute(text("INSERT INTO projects (id, name, description, superpixel_options, extractor, model, "
                                "strategy, normalisation, created_at) VALUES "
                                "(1, 'p', '', '{}', 'color', 'logistic', 'entropy', 'none', '2026-01-01'), "
                                "(2, 'q', '', '{}', 'color', 'logistic', 'entropy', 'none', '2026-01-01')"))
        # Project 1: a(0) merged away, then d took c's position 2; project 2 is fine.
        connection.execute(text("INSERT INTO categories (id, project_id, name, color, excluded, position) VALUES "
                                "(2, 1, 'b', '#000000', 0, 1), (3, 1, 'c', '#000000', 0, 2), "
                                "(4, 1, 'd', '#000000', 0, 2), (5, 1, 'e', '#000000', 0, 3), "
                                "(6, 2, 'x', '#000000', 0, 0), (7, 2, 'y', '#000000', 0, 1)"))
    upgrade("head")
    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT id, position FROM categories ORDER BY id")).all()
    database.dispose()
    assert [tuple(row) for row in rows] == [(2, 1), (3, 2), (4, 4), (5, 3), (6, 0), (7, 1)]


# 5: predictions of a merged category -----------------------------------------------------------


def test_predictions_of_a_merged_category_read_as_its_target_in_every_export(app, client, admin_headers, project,
                                                                            slide_url, slide_row):
    tumour, stroma = (c["id"] for c in project["categories"][:2])
    necrosis = _add(client, admin_headers, project, "necrosis")["id"]
    probs_N_C = _predict(app, project, slide_row, [tumour, stroma, necrosis])
    predicted = np.count_nonzero(probs_N_C.sum(axis=1))
    _merge(client, admin_headers, project, necrosis, tumour)
    # The merged columns add up: 0.7 + 0.15 where either was on top, 0.15 + 0.15 where stroma was
    # (0.7).
    expected_N = np.where(np.arange(probs_N_C.shape[0]) % 3 == 1, stroma, tumour)
    expected_N[-1] = 0

    bin_ = np.frombuffer(client.get(f"{slide_url}/predictions.bin", headers=admin_headers).content, "<u4")
    assert bin_[1:].tolist() == expected_N.tolist()
    certainty = np.frombuffer(client.get(f"{slide_url}/certainty.bin", headers=admin_headers).content, np.uint8)
    assert certainty[1:4].tolist() == pytest.approx([255 * 0.85, 255 * 0.7, 255 * 0.85], abs=1)

    link = client.post(f"{API}/projects/{project['id']}/gallery", headers=admin_headers,
                       json={"overlay": "predictions", "slide_ids": []}).json()
    overlay = client.get(f"{API}/gallery/{link['token']}/slides/{slide_row}/overlay.bin")
    assert overlay.status_code == 200 and overlay.content == bin_.tobytes()

    shapes = client.get(f"{slide_url}/export/geojson", headers=admin_headers,
                        params={"source": "predictions", "dissolve": "false"}).json()["features"]
    assert len(shapes) == predicted
    assert {f["properties"]["classification"]["name"] for f in shapes} == {"tumour", "stroma"}

    mask = _mask(client, admin_headers, slide_url, "predictions")
    assert np.unique(mask).tolist() == [0, 1, 2]

    rows = list(csv.DictReader(io.StringIO(client.get(f"{slide_url}/export/predictions.csv",
                                                      headers=admin_headers).text)))
    assert list(rows[0])[12:] == ["p_tumour", "p_stroma"]
    assert [row["predicted"] for row in rows[:3]] == ["tumour", "stroma", "tumour"]
    assert [float(row["p_tumour"]) for row in rows[:3]] == pytest.approx([0.85, 0.3, 0.85], abs=1e-3)
    assert sum(row["predicted"] == "" for row in rows) == 1


def test_a_merge_of_a_merge_target_moves_its_predictions_on(app, client, admin_headers, project, slide_url,
                                                           slide_row):
    tumour, stroma, glass = (c["id"] for c in project["categories"])
    _predict(app, project, slide_row, [tumour, stroma])
    _merge(client, admin_headers, project, tumour, stroma)
    _merge(client, admin_headers, project, stroma, glass)
    bin_ = np.frombuffer(client.get(f"{slide_url}/predictions.bin", headers=admin_headers).content, "<u4")
    assert set(bin_[1:-1].tolist()) == {glass} and bin_[-1] == 0


def test_an_epoch_after_a_merge_counts_no_change_for_the_merged_category(tmp_path):
    previous, staged = ProjectFiles(tmp_path / "data", 1), ProjectFiles(tmp_path / "staged", 1)
    old = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]], np.float32)
    write_predictions(previous.predictions(1, 5), SlidePredictions(np.array([10, 20, 30]), old))
    writer = PredictionWriter(staged, previous, np.array([10, 20]), 1, {30: 10})
    writer(5, np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.2]], np.float32), np.ones(3, bool))
    assert (writer.compared, writer.changed) == (3, 0)
    assert read_predictions(staged.predictions(0, 5)).category_ids_C.tolist() == [10, 20]


def test_merged_predictions_add_up_the_merged_columns():
    predictions = SlidePredictions(np.array([10, 20, 30, 40]), np.array([[0.1, 0.4, 0.3, 0.2], [0, 0, 0, 0]],
                                                                        np.float32))
    assert predictions.merged({}) is predictions and predictions.merged({99: 10}) is predictions
    merged = predictions.merged({10: 30, 40: 50})
    assert merged.category_ids_C.tolist() == [30, 20, 50]
    np.testing.assert_allclose(merged.probs_N_C, [[0.4, 0.4, 0.2], [0, 0, 0]], rtol=1e-6)
    assert merged.predicted_N.tolist() == [30, 0]


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


def test_a_bad_girder_id_is_quoted_by_a_short_prefix(client, admin_headers, slide_url, slide_row, project, app):
    _predict(app, project, slide_row, [c["id"] for c in project["categories"][:2]])
    response = client.get(f"{slide_url}/export/annotation", headers=admin_headers,
                          params={"source": "predictions", "girder_id": "g" * 60_000})
    assert response.status_code == 422 and len(response.content) < 2000, response.text[:200]
    assert "g" * 40 + "'... (60,000 characters)" in response.text and "Girder item id" in response.text


def test_an_error_on_a_new_project_quotes_a_short_prefix(client, admin_headers):
    response = client.post(f"{API}/projects", headers=admin_headers,
                           json={"name": "n", "categories": [{"name": "a", "color": BIG}]})
    assert response.status_code == 422 and len(response.content) < 2000, response.text[:200]
    assert "3,000,000 characters" in response.text


def test_the_review_list_reads_a_merged_categorys_predictions_as_its_target(app, client, admin_headers, project,
                                                                            slide_url, slide_row):
    tumour, stroma = (c["id"] for c in project["categories"][:2])
    necrosis = _add(client, admin_headers, project, "necrosis")["id"]
    _predict(app, project, slide_row, [tumour, stroma, necrosis])
    labels = f"{API}/projects/{project['id']}/slides/{slide_row}/labels"
    assert client.put(labels, headers=admin_headers, json={"superpixels": [1, 2, 3], "category_id": tumour}).status_code == 200
    _merge(client, admin_headers, project, necrosis, tumour)
    items = client.get(f"{API}/projects/{project['id']}/review", headers=admin_headers).json()["items"]
    predicted = {item["superpixel"]: item["predicted_category_id"] for item in items}
    assert predicted == {1: tumour, 2: stroma, 3: tumour}, predicted
