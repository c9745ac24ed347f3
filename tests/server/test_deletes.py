"""Deleting a project or slide: refused while its jobs run, its files go with it, and its id is
never given to a new one (so no file of it can be served to the wrong project)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Slide

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


def _leave_files(settings, project_id: int) -> list[Path]:
    files = ProjectFiles(settings.data_dir, project_id)
    made = [files.superpixels(1) / "superpixels.parquet", files.model(1), files.uploads / "slide.svs"]
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"made for the deleted project")
    return made


def test_a_deleted_projects_files_go_and_its_id_is_not_reused(client, admin_headers, project, settings):
    made = _leave_files(settings, project["id"])
    assert client.delete(f"/api/v1/projects/{project['id']}", headers=admin_headers).status_code == 204
    assert not any(path.exists() for path in made)
    again = client.post("/api/v1/projects", headers=admin_headers, json={"name": "next"})
    assert again.status_code == 201 and again.json()["id"] != project["id"]


def test_a_project_with_a_running_job_is_not_deleted(app, client, admin_headers, project, settings):
    made = _leave_files(settings, project["id"])
    with app.state.database.session(write=True) as session:
        session.add(Job(project_id=project["id"], kind="superpixels", key="k", state=JobState.running))
    response = client.delete(f"/api/v1/projects/{project['id']}", headers=admin_headers)
    assert response.status_code == 409 and "cancel" in response.json()["detail"]
    assert client.get(f"/api/v1/projects/{project['id']}", headers=admin_headers).status_code == 200
    assert all(path.exists() for path in made)


def test_a_deleted_slides_id_is_not_reused(app, client, admin_headers, project, slide_row, cmu_slide):
    url = f"/api/v1/projects/{project['id']}/slides"
    assert client.delete(f"{url}/{slide_row}", headers=admin_headers).status_code == 204
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name="again", path=str(cmu_slide), width=2220, height=2967)
        session.add(slide)
        session.flush()
        assert slide.id != slide_row


def test_a_projects_labels_go_in_batches_that_let_others_write_between(app, client, admin_headers, project, slide_row,
                                                                       member_headers, monkeypatch):
    """Tenth attack: deleting a project of 1.7 million labels was one transaction, and every other
    project's label writes waited 7.5 s on SQLite (now at most 0.65 s, batches of 50,000). Here:
    the 40 labels and their history go 7 rows a transaction, and every row of them goes."""
    from sqlalchemy import event, func, select

    from slidelabel.services import projects
    from slidelabel.store.models import Label, LabelEvent, Review

    monkeypatch.setattr(projects, "DELETE_BATCH_ROWS", 7)
    base = f"/api/v1/projects/{project['id']}"
    tumour = project["categories"][0]["id"]
    labels = {"superpixels": list(range(1, 21)), "category_id": tumour}
    for headers in (admin_headers, member_headers(projects.Role.annotator)):
        assert client.put(f"{base}/slides/{slide_row}/labels", headers=headers, json=labels).status_code == 200
    other = client.post("/api/v1/projects", headers=admin_headers, json={"name": "other"}).json()
    deletes: list[int] = []

    def count(_conn, _cursor, statement, _parameters, _context, _executemany) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM LABEL"):
            deletes.append(1)

    event.listen(app.state.database.engine, "after_cursor_execute", count)
    try:
        assert client.delete(base, headers=admin_headers).status_code == 204
    finally:
        event.remove(app.state.database.engine, "after_cursor_execute", count)
    assert len(deletes) >= 2 * 40 // 7  # history then labels, 7 rows at a time
    with app.state.database.session() as session:
        for table in (Label, LabelEvent, Review):
            assert session.scalar(select(func.count()).select_from(table).where(table.project_id == project["id"])) == 0
    assert client.get(f"/api/v1/projects/{other['id']}", headers=admin_headers).status_code == 200


@pytest.mark.parametrize("what", ["project", "slide"])
def test_a_cancelled_job_whose_process_still_runs_holds_the_delete_back(app, client, admin_headers, project, slide_row,
                                                                         settings, monkeypatch, what):
    """Sixteenth attack: Cancel then Delete at once went through while the cancelled job still
    computed (a beating heartbeat), which then wrote its files into the deleted folders or ran on
    for minutes that nobody could stop. Now the delete waits for it (here 0.2 s) and then says to
    try again; once the heartbeat is gone, or stale (a dead worker's), the delete goes through."""
    from datetime import UTC, datetime, timedelta

    from slidelabel.services import jobs

    monkeypatch.setattr(jobs, "STOP_WAIT_S", 0.2, raising=False)
    made = _leave_files(settings, project["id"])
    with app.state.database.session(write=True) as session:
        job = Job(project_id=project["id"], slide_id=slide_row, kind="superpixels", key="k", state=JobState.cancelled,
                  heartbeat_at=datetime.now(UTC))
        session.add(job)
        session.flush()
        job_id = job.id
    url = f"/api/v1/projects/{project['id']}" + (f"/slides/{slide_row}" if what == "slide" else "")
    response = client.delete(url, headers=admin_headers)
    assert response.status_code == 409, response.text
    assert response.json()["detail"].startswith(f"job {job_id} was cancelled but its process has not ended yet; try "
                                                "again in a few seconds (if its worker was killed")
    assert all(path.exists() for path in made)
    with app.state.database.session(write=True) as session:
        session.get(Job, job_id).heartbeat_at = datetime.now(UTC) - timedelta(seconds=settings.job_stale_seconds + 1)
    assert client.delete(url, headers=admin_headers).status_code == 204
