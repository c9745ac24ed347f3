"""The whole labelling loop through the HTTP API with jobs run by a real Celery worker: create a
project, add a real slide, prepare it, label, train, fetch the guided queue, label a card, train
again and export, on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ADMIN_PASSWORD, login
from fastapi.testclient import TestClient
from worker_process import start_worker, stop

from slidelabel.server.app import create_app
from slidelabel.services.accounts import ensure_admin

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


@pytest.fixture
def served(tmp_path: Path, database_url: str, cmu_slide: Path):
    """An app whose jobs go to a real worker over the embedded SQLite broker."""
    from slidelabel.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", db=database_url, slide_folders=[cmu_slide.parent],
                        admin_password=ADMIN_PASSWORD, job_stale_seconds=10)
    app = create_app(settings)
    with app.state.database.session(write=True) as session:
        ensure_admin(session, ADMIN_PASSWORD)
    worker = start_worker(settings)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        stop(worker, signal.SIGKILL)  # every job has finished; a warm shutdown only waits
        app.state.database.dispose()


def finish(client: TestClient, headers: dict, project: int, job: dict, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/projects/{project}/jobs/{job['id']}", headers=headers).json()
        if job["state"] in ("done", "failed", "cancelled"):
            assert job["state"] == "done", job["message"] + job["log"]
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job['id']} still {job['state']} after {timeout} s")


def test_from_project_to_export(served: TestClient, cmu_slide: Path):
    client, headers = served, login(served, "admin", ADMIN_PASSWORD)
    project = client.post("/api/v1/projects", headers=headers, json={
        "name": "loop", "superpixels": {"size": "60um"},
        "categories": [{"name": "tissue"}, {"name": "glass"}, {"name": "pen", "excluded": True}]}).json()
    p = project["id"]
    tissue, glass, pen = (c["id"] for c in project["categories"])
    added = client.post(f"/api/v1/projects/{p}/slides", headers=headers, json={"path": str(cmu_slide)})
    assert added.status_code == 201, added.text
    for job in client.post(f"/api/v1/projects/{p}/jobs/prepare", headers=headers).json():
        finish(client, headers, p, job)
    slide = client.get(f"/api/v1/projects/{p}/slides", headers=headers).json()[0]
    s, n = slide["id"], slide["superpixels"]
    assert n > 100

    # Label by the tissue fraction the superpixel table records (the features never see it).
    table = client.get(f"/api/v1/projects/{p}/slides/{s}/superpixels", headers=headers).json()
    fraction = np.asarray(table["tissue_fraction"])
    ids = np.asarray(table["ids"])
    rng = np.random.default_rng(0)
    tissue_ids = rng.choice(ids[fraction > 0.9], 20, replace=False)
    glass_ids = rng.choice(ids[fraction < 0.1], min(20, int((fraction < 0.1).sum())), replace=False)
    for chosen, category in ((tissue_ids, tissue), (glass_ids, glass), (ids[fraction < 0.1][:1], pen)):
        response = client.put(f"/api/v1/projects/{p}/slides/{s}/labels", headers=headers,
                              json={"superpixels": chosen.tolist(), "category_id": category})
        assert response.status_code == 200, response.text

    finish(client, headers, p, client.post(f"/api/v1/projects/{p}/epochs", headers=headers).json())
    queue = client.get(f"/api/v1/projects/{p}/queue", headers=headers, params={"n": 8}).json()
    assert queue["epoch"] == 1 and len(queue["items"]) == 8
    labelled = set(tissue_ids) | set(glass_ids) | {int(ids[fraction < 0.1][0])}
    assert not labelled & {item["superpixel"] for item in queue["items"]}
    card = queue["items"][0]
    assert client.get(card["thumbnail_url"], headers=headers).headers["content-type"] == "image/png"
    client.put(f"/api/v1/projects/{p}/slides/{s}/labels", headers=headers,
               json={"superpixels": [card["superpixel"]], "category_id": card["predicted"], "epoch": 1})
    finish(client, headers, p, client.post(f"/api/v1/projects/{p}/epochs", headers=headers).json())
    epochs = client.get(f"/api/v1/projects/{p}/epochs", headers=headers).json()
    assert [e["number"] for e in epochs][-1] == 2

    predicted = np.frombuffer(client.get(f"/api/v1/projects/{p}/slides/{s}/predictions.bin", headers=headers).content,
                              "<u4")
    assert predicted.size == n + 1 and set(predicted[1:]) <= {tissue, glass}
    assert (predicted[tissue_ids] == tissue).mean() > 0.8 and (predicted[glass_ids] == glass).mean() > 0.8

    geojson = client.get(f"/api/v1/projects/{p}/slides/{s}/export/geojson", headers=headers,
                         params={"source": "predictions"}).json()
    assert geojson["type"] == "FeatureCollection"
    assert {f["properties"]["classification"]["name"] for f in geojson["features"]} == {"tissue", "glass"}
    model = client.get(f"/api/v1/projects/{p}/epochs/2/model", headers=headers)
    assert model.status_code == 200 and model.content[:2] == b"PK"
