"""Seventh attack on issue 13: a gallery request waiting for its export turn held a database
connection (15 such took SQLite's pool: 500s, 30 s for everyone); a text body to an import route
was read whole into memory (300 MB: +1.2 GB); a failed slide job told every viewer where the slide
lies on the server."""

from __future__ import annotations

from slidelabel.store.models import Job, JobState, Role

MESSAGE = "/srv/lab-a/slides/sub/t.svs: the slide has no pixel size (um per pixel) in its metadata"


def test_a_gallery_request_holds_no_connection_while_it_waits_for_its_turn(app, client, project, member_headers,
                                                                          slide_row, monkeypatch):
    from slidelabel.server import deps

    owner = member_headers(Role.owner)
    link = client.post(f"/api/v1/projects/{project['id']}/gallery", headers=owner, json={"overlay": "labels"}).json()
    pool, waiting = app.state.database.engine.pool, deps.export_turn_waiting
    seen: list[int] = []

    def watched(holder=None):
        seen.append(pool.checkedout())
        return waiting(holder)

    monkeypatch.setattr(deps, "export_turn_waiting", watched)
    client.get(f"/api/v1/gallery/{link['token']}/slides/{slide_row}/overlay.bin")
    assert seen == [0], f"connections checked out while waiting for the export turn: {seen}"


def test_a_text_body_to_an_import_route_is_refused_past_64_kb(client, project, member_headers, slide_row):
    owner = member_headers(Role.owner)
    body = b'{"path": "' + b"a" * (1 << 20) + b'"}'
    for content_type in ("text/plain", None):
        headers = {**owner, **({"Content-Type": content_type} if content_type else {})}
        response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/features/imported-x",
                               headers=headers, content=body)
        assert response.status_code == 413, response.text
        assert "64 KB" in response.json()["detail"]


def test_a_viewer_reads_a_failed_slide_jobs_message_without_server_paths(app, client, project, admin_headers,
                                                                          member_headers):
    with app.state.database.session(write=True) as session:
        session.add(Job(project_id=project["id"], kind="superpixels", key="attack-7", state=JobState.failed,
                        message=MESSAGE, log=f"attempt 1\n{MESSAGE}\n", params={}))
    url = f"/api/v1/projects/{project['id']}/jobs"
    viewer = client.get(url, headers=member_headers(Role.viewer)).json()[0]
    assert viewer["message"].startswith("t.svs: the slide has no pixel size") and "/srv/" not in str(viewer)
    job = client.get(f"{url}/{viewer['id']}", headers=member_headers(Role.viewer)).json()
    assert "/srv/" not in job["log"] and "t.svs" in job["log"]
    assert client.get(url, headers=admin_headers).json()[0]["message"] == MESSAGE
