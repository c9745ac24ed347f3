"""Fourth attack on issue 13: GET .../jobs/{id} showed every viewer the job's parameters whole, so
an import's showed the server's data folder (``/srv/slidelabel/projects/1/slides/2/sources/...``)
and a cohort's the server folder, though job messages and logs keep server paths for the admin.
Now others see each absolute path as its name; the admin sees the parameters as they are."""

from __future__ import annotations

from slidelabel.store.models import Job, JobState, Role

PARAMS = {"source": {"path": "/srv/slidelabel/projects/1/slides/2/sources/55e0f4487707ac06-comb.geojson",
                     "format": "auto", "downsample": None},
          "slides": ["/data/lab-a/case 1.svs", "relative/name.svs"], "epoch": 3}


def test_a_viewer_sees_the_names_of_a_jobs_paths_and_the_admin_the_paths(app, client, admin_headers, member_headers,
                                                                          project):
    with app.state.database.session(write=True) as session:
        job = Job(project_id=project["id"], kind="import-segments", key="attack-4", params=PARAMS,
                  state=JobState.failed)
        session.add(job)
        session.flush()
        url = f"/api/v1/projects/{project['id']}/jobs/{job.id}"
    viewer = client.get(url, headers=member_headers(Role.viewer))
    assert viewer.status_code == 200, viewer.text
    assert viewer.json()["params"] == {
        "source": {"path": "55e0f4487707ac06-comb.geojson", "format": "auto", "downsample": None},
        "slides": ["case 1.svs", "relative/name.svs"], "epoch": 3}
    assert "/srv/" not in viewer.text and "/data/" not in viewer.text
    assert client.get(url, headers=admin_headers).json()["params"] == PARAMS
