"""Eighth attack on issue 13: a slide file is checked each time the server opens it, not only
when it is added. A FIFO named like a slide blocked every request that opened it, forever (45 took
all of the API's threads); a slide file replaced by a link to another folder's slide after it was
added was served from there; a slide could be deleted while an epoch reading it ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fifo_waits import within

from slidelabel.store.models import Job, JobState


def _answer(request, fifo: Path):
    return within(request, fifo, "no answer in time: the FIFO blocked the request", seconds=20)


@pytest.mark.parametrize("pattern", [False, True], ids=["path", "pattern"])
def test_a_fifo_named_like_a_slide_is_refused_without_being_opened(client, admin_headers, project, settings, pattern):
    folder = settings.slide_folders[0] / "specials"
    folder.mkdir()
    fifo = folder / "fifo.svs"
    os.mkfifo(fifo)
    url = f"/api/v1/projects/{project['id']}/slides"
    raw = str(folder / "*") if pattern else str(fifo)
    answer = _answer(lambda: client.post(url, headers=admin_headers, json={"path": raw}), fifo)
    if pattern:
        assert answer.status_code == 201, answer.text
        [skipped] = answer.json()["skipped"]
        assert "not a regular file" in skipped["reason"]
    else:
        assert answer.status_code == 422 and "not a regular file" in answer.json()["detail"], answer.text


def test_a_slide_replaced_by_a_link_or_a_fifo_after_it_was_added_is_not_served(client, admin_headers, project,
                                                                               settings, cmu_slide, tcga_slide):
    folder = settings.slide_folders[0]
    shutil.copy(cmu_slide, folder / "swap.svs")
    url = f"/api/v1/projects/{project['id']}/slides"
    [slide] = client.post(url, headers=admin_headers, json={"path": str(folder / "swap.svs")}).json()["added"]
    tiles = f"{url}/{slide['id']}/tiles"
    assert client.get(tiles, headers=admin_headers).json()["width"] == 2220

    (folder / "swap.svs").unlink()
    (folder / "swap.svs").symlink_to(tcga_slide)  # a slide of a folder the adder may not read
    for opened in (tiles, f"{tiles}/0/0/0.jpg", f"{url}/{slide['id']}/thumbnail.jpg"):
        refused = client.get(opened, headers=admin_headers)
        assert refused.status_code == 409, refused.text
        assert "replaced by a link" in refused.json()["detail"] and str(folder) not in refused.text

    (folder / "swap.svs").unlink()
    os.mkfifo(folder / "swap.svs")
    answer = _answer(lambda: client.get(f"{tiles}/0/0/0.jpg", headers=admin_headers), folder / "swap.svs")
    assert answer.status_code == 409 and "not a regular file" in answer.json()["detail"], answer.text


def test_a_slide_is_not_deleted_while_an_epoch_of_its_project_runs(app, client, admin_headers, project, slide_row):
    with app.state.database.session(write=True) as session:
        epoch = Job(project_id=project["id"], kind="epoch", key="epoch:attack-8", state=JobState.running, params={})
        session.add(epoch)
        session.flush()
        epoch_id = epoch.id
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}"
    refused = client.delete(url, headers=admin_headers)
    assert refused.status_code == 409 and str(epoch_id) in refused.json()["detail"], refused.text
    with app.state.database.session(write=True) as session:
        session.get(Job, epoch_id).state = JobState.done
    assert client.delete(url, headers=admin_headers).status_code == 204


def test_the_worker_module_builds_its_celery_app_when_asked_not_at_import(tmp_path: Path) -> None:
    """``serve --slide-folder X`` with SLIDELABEL_SLIDE_FOLDER_READERS naming X died at import with a
    traceback: the module built its app from the environment alone, before serve had put X there."""
    env = {**os.environ, "SLIDELABEL_SLIDE_FOLDER_READERS": f'{{"{tmp_path}": ["alice"]}}',
           "SLIDELABEL_DATA_DIR": str(tmp_path / "data")}
    env.pop("SLIDELABEL_SLIDE_FOLDERS", None)
    imported = subprocess.run([sys.executable, "-c", "import slidelabel.workers.app"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr[-2000:]
    env["SLIDELABEL_SLIDE_FOLDERS"] = str(tmp_path)
    built = subprocess.run([sys.executable, "-c", "from slidelabel.workers.app import app; print(app.main)"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0 and built.stdout.strip() == "slidelabel", built.stderr[-2000:]


def test_a_slide_added_to_a_project_deleted_meanwhile_is_404_not_a_taken_name(app, client, admin_headers, project,
                                                                               settings, cmu_slide, monkeypatch):
    from slidelabel.services import slides
    from slidelabel.store.models import Project

    shutil.copy(cmu_slide, settings.slide_folders[0] / "cmu.svs")
    described = slides._describe

    def describe_then_delete(*args, **kwargs):
        info = described(*args, **kwargs)
        with app.state.database.session(write=True) as session:  # the owner deletes the project meanwhile
            session.delete(session.get(Project, project["id"]))
        return info

    monkeypatch.setattr(slides, "_describe", describe_then_delete)
    answer = client.post(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers,
                         json={"path": str(settings.slide_folders[0] / "cmu.svs")})
    assert answer.status_code == 404 and "deleted" in answer.json()["detail"], answer.text


def test_import_jobs_take_the_slide_file_through_the_same_check(app, client, admin_headers, project, settings,
                                                                cmu_slide, tcga_slide):
    """Ninth attack: a segment import read a slide replaced by a link to another folder's slide
    (168 segments over the other slide's extent) while tiles already answered 409."""
    from types import SimpleNamespace

    from slidelabel.errors import ConflictError
    from slidelabel.services import project_imports

    folder = settings.slide_folders[0]
    shutil.copy(cmu_slide, folder / "swap.svs")
    [slide] = client.post(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers,
                          json={"path": str(folder / "swap.svs")}).json()["added"]
    context = SimpleNamespace(database=app.state.database, settings=settings, project_id=project["id"],
                              slide_id=slide["id"])
    assert project_imports._slide(context)[0].path == folder / "swap.svs"
    (folder / "swap.svs").unlink()
    (folder / "swap.svs").symlink_to(tcga_slide)
    with pytest.raises(ConflictError, match="replaced by a link"):
        project_imports._slide(context)
    (folder / "swap.svs").unlink()
    (folder / "swap.svs").symlink_to(folder / "swap.svs")  # a link to itself: resolving it fails
    with pytest.raises(ConflictError):
        project_imports._slide(context)
