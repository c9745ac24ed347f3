"""Sixth attack on issue 13: server paths and internal error texts reached every member through
routes other than ``GET .../jobs/{id}``: a cohort's folder (``GET .../cohorts``), an imported
segments file (``GET .../imports``) and a failed job's internal error text (``GET .../jobs``).
Others now see names and "internal error"; the admin sees them whole."""

from __future__ import annotations

from slidelabel.services.cohort_jobs import COHORT
from slidelabel.services.segment_import import ALGORITHM
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Role
from slidelabel.store.superpixel_files import MANIFEST_FILE, write_manifest

FOLDER = "/srv/lab-a/cohort-2026"
SOURCE = "/srv/lab-a/cells/case 1.geojson"
INTERNAL = "internal error: FileNotFoundError: /srv/slidelabel/projects/1/x.zarr"


def _add_job(app, project: dict, **fields) -> None:
    with app.state.database.session(write=True) as session:
        session.add(Job(project_id=project["id"], **fields))


def test_a_viewer_sees_a_cohorts_folder_name_and_the_admin_its_path(app, client, admin_headers, member_headers, project):
    _add_job(app, project, kind=COHORT, key="attack-6-cohort", state=JobState.failed, message=INTERNAL,
             params={"epoch": 1, "folder": FOLDER, "formats": ["mask"]})
    url = f"/api/v1/projects/{project['id']}/cohorts"
    viewer = client.get(url, headers=member_headers(Role.viewer))
    assert viewer.status_code == 200, viewer.text
    assert viewer.json()[0]["folder"] == "cohort-2026"
    assert "/srv/" not in viewer.text and "FileNotFoundError" not in viewer.text
    assert client.get(url, headers=admin_headers).json()[0]["folder"] == FOLDER


def test_a_viewer_sees_no_internal_error_text_in_the_job_list(app, client, admin_headers, member_headers, project):
    _add_job(app, project, kind="superpixels", key="attack-6-job", state=JobState.failed, message=INTERNAL, params={})
    url = f"/api/v1/projects/{project['id']}/jobs"
    viewer = client.get(url, headers=member_headers(Role.viewer))
    assert viewer.status_code == 200, viewer.text
    assert viewer.json()[0]["message"].startswith("internal error") and "/srv/" not in viewer.text
    assert client.get(url, headers=admin_headers).json()[0]["message"] == INTERNAL


def test_a_viewer_sees_the_name_of_an_imported_segments_file(app, client, admin_headers, member_headers, project,
                                                            slide_row, settings):
    folder = ProjectFiles(settings.data_dir, project["id"]).superpixels(slide_row)
    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder / MANIFEST_FILE, {
        "algorithm": ALGORITHM, "superpixels": 3, "options": {"format": "geojson"},
        "import": {"source": {"path": SOURCE}, "dropped": {}, "classes": {}}})
    url = f"/api/v1/projects/{project['id']}/imports"
    viewer = client.get(url, headers=member_headers(Role.viewer))
    assert viewer.status_code == 200, viewer.text
    [slide] = [s for s in viewer.json()["slides"] if s["slide_id"] == slide_row]
    assert slide["segments"]["source"] == "case 1.geojson" and "/srv/" not in viewer.text
    admin = client.get(url, headers=admin_headers).json()
    assert [s for s in admin["slides"] if s["slide_id"] == slide_row][0]["segments"]["source"] == SOURCE
