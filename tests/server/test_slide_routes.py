"""Adding slides from server folders and by upload, listing and removing them, through the API."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import update

from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Role, User

SLIDE_NAME = "cmu.svs"


@pytest.fixture
def slide_folder(settings) -> Path:
    return settings.slide_folders[0]


@pytest.fixture
def folder_slide(slide_folder: Path, cmu_slide: Path) -> Path:
    """A copy of the CMU sample in the server's slide folder."""
    return Path(shutil.copy(cmu_slide, slide_folder / SLIDE_NAME))


def slides_url(project: dict) -> str:
    return f"/api/v1/projects/{project['id']}/slides"


def upload(client, project: dict, headers: dict, name: str, content: bytes):
    return client.post(f"{slides_url(project)}/upload", headers=headers,
                       files={"file": (name, content, "application/octet-stream")})


def leftovers(settings, project: dict) -> list[Path]:
    uploads = ProjectFiles(settings.data_dir, project["id"]).uploads
    return sorted(uploads.iterdir()) if uploads.exists() else []


def test_a_slide_of_a_server_folder_is_added_once(client, admin_headers, project, folder_slide):
    response = client.post(slides_url(project), headers=admin_headers, json={"path": str(folder_slide)})
    assert response.status_code == 201, response.text
    [slide] = response.json()["added"]
    assert (slide["name"], slide["width"], slide["height"], slide["mpp"]) == (SLIDE_NAME, 2220, 2967, 0.499)
    assert slide["uploaded"] is False and slide["superpixels"] is None
    again = client.post(slides_url(project), headers=admin_headers, json={"path": str(folder_slide)})
    assert again.status_code == 409 and SLIDE_NAME in again.json()["detail"]
    listed = client.get(slides_url(project), headers=admin_headers).json()
    assert [(s["name"], s["superpixels_job"], s["features_job"]) for s in listed] == [(SLIDE_NAME, None, None)]


def test_paths_outside_the_slide_folders_are_refused(client, admin_headers, project, slide_folder, folder_slide,
                                                      cmu_slide, tmp_path):
    outside = Path(shutil.copy(cmu_slide, tmp_path / "outside.svs"))
    (slide_folder / "link.svs").symlink_to(outside)
    (slide_folder / "linked-folder").symlink_to(tmp_path, target_is_directory=True)
    for path in (str(outside), f"{slide_folder}/../outside.svs", str(slide_folder / "link.svs"),
                 str(slide_folder / "linked-folder" / "outside.svs"), "/etc/passwd", f"{slide_folder}/../*.svs"):
        response = client.post(slides_url(project), headers=admin_headers, json={"path": path})
        assert response.status_code in (403, 422), (path, response.text)
        assert str(slide_folder) in response.json()["detail"] or "'..'" in response.json()["detail"]
    assert client.post(slides_url(project), headers=admin_headers, json={"path": SLIDE_NAME}).status_code == 422
    assert client.get(slides_url(project), headers=admin_headers).json() == []


def test_a_folder_adds_its_readable_slides_and_says_why_others_were_skipped(client, admin_headers, project,
                                                                             slide_folder, folder_slide, tmp_path):
    (slide_folder / "broken.svs").write_bytes(folder_slide.read_bytes()[:50_000])
    (slide_folder / "notes.txt").write_text("not a slide")
    (tmp_path / "secret.svs").write_bytes(b"x")
    (slide_folder / "escape.svs").symlink_to(tmp_path / "secret.svs")
    response = client.post(slides_url(project), headers=admin_headers, json={"path": str(slide_folder)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert [s["name"] for s in body["added"]] == [SLIDE_NAME]
    skipped = {Path(s["path"]).name: s["reason"] for s in body["skipped"]}
    assert set(skipped) == {"broken.svs", "escape.svs"}  # notes.txt is no slide file type
    assert "truncated" in skipped["broken.svs"] and "outside" in skipped["escape.svs"]
    globbed = client.post(slides_url(project), headers=admin_headers, json={"path": f"{slide_folder}/c*.svs"}).json()
    assert globbed["added"] == [] and "named" in globbed["skipped"][0]["reason"]


def test_an_uploaded_slide_is_added_and_nothing_else_stays(client, admin_headers, project, settings, cmu_slide):
    response = upload(client, project, admin_headers, "../sub/upload.svs", cmu_slide.read_bytes())
    assert response.status_code == 201, response.text
    slide = response.json()
    assert (slide["name"], slide["uploaded"], slide["width"]) == ("upload.svs", True, 2220)
    assert [p.name for p in leftovers(settings, project)] == ["upload.svs"]
    assert upload(client, project, admin_headers, "upload.svs", cmu_slide.read_bytes()).status_code == 409
    assert [p.name for p in leftovers(settings, project)] == ["upload.svs"]


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:100_000], "truncated"), (lambda data: b"not a slide at all\n" * 500, "upload.svs")])
def test_a_broken_upload_is_refused_and_leaves_nothing(client, admin_headers, project, settings, cmu_slide,
                                                       damage, message):
    response = upload(client, project, admin_headers, "upload.svs", damage(cmu_slide.read_bytes()))
    assert response.status_code == 422 and message in response.json()["detail"]
    assert leftovers(settings, project) == []
    assert client.get(slides_url(project), headers=admin_headers).json() == []


def test_an_upload_over_the_limit_is_refused_with_413(app, client, admin_headers, project, settings, cmu_slide):
    app.state.settings = settings.model_copy(update={"upload_limit_mb": 1})
    response = upload(client, project, admin_headers, "upload.svs", cmu_slide.read_bytes())
    assert response.status_code == 413 and "1 MB" in response.json()["detail"]
    assert leftovers(settings, project) == []
    assert client.post(f"{slides_url(project)}/upload", headers=admin_headers, content=b"raw").status_code == 422


def test_an_upload_of_undeclared_size_is_stopped_at_the_limit(app, client, admin_headers, project, settings,
                                                               cmu_slide):
    app.state.settings = settings.model_copy(update={"upload_limit_mb": 1})
    boundary, data, chunk = "slidelabel-test", cmu_slide.read_bytes(), 64 << 10
    headers = {**admin_headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}

    def body():  # a generator: sent chunked, without a Content-Length
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.svs"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield from (data[start : start + chunk] for start in range(0, len(data), chunk))
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(f"{slides_url(project)}/upload", headers=headers, content=body())
    assert response.status_code == 413, response.text
    assert leftovers(settings, project) == []
    garbled = client.post(f"{slides_url(project)}/upload", headers=headers, content=b"--elsewhere\r\n" * 10)
    assert garbled.status_code == 422 and "'file'" in garbled.json()["detail"]


def test_removing_slides_keeps_files_of_server_folders(client, admin_headers, project, settings, folder_slide,
                                                       cmu_slide):
    added = client.post(slides_url(project), headers=admin_headers, json={"path": str(folder_slide)}).json()
    uploaded = upload(client, project, admin_headers, "upload.svs", cmu_slide.read_bytes()).json()
    files = ProjectFiles(settings.data_dir, project["id"])
    for slide in (added["added"][0], uploaded):
        files.superpixels(slide["id"]).mkdir(parents=True)
        assert client.delete(f"{slides_url(project)}/{slide['id']}", headers=admin_headers).status_code == 204
        assert not files.slide_dir(slide["id"]).exists()
    assert folder_slide.exists() and leftovers(settings, project) == []
    assert client.get(slides_url(project), headers=admin_headers).json() == []
    assert client.delete(f"{slides_url(project)}/{uploaded['id']}", headers=admin_headers).status_code == 404


@pytest.mark.parametrize("role, can_view, can_add", [
    (None, False, False), (Role.viewer, True, False), (Role.annotator, True, False), (Role.owner, True, True)])
def test_roles(app, client, project, member_headers, folder_slide, role, can_view, can_add):
    headers = member_headers(role)
    with app.state.database.session(write=True) as session:  # every account may read the folders: roles decide
        session.execute(update(User).values(can_read_slide_folders=True))
    assert client.get(slides_url(project), headers=headers).status_code == (200 if can_view else 404)
    response = client.post(slides_url(project), headers=headers, json={"path": str(folder_slide)})
    assert response.status_code == (201 if can_add else 403 if can_view else 404)
    assert len(client.get("/api/v1/slide-folders", headers=headers).json()) == 1


def test_the_slide_folders_list_their_slide_files(client, admin_headers, slide_folder, folder_slide):
    (slide_folder / "sub").mkdir()
    shutil.copy(folder_slide, slide_folder / "sub" / "deeper.svs")
    (slide_folder / "notes.txt").write_text("not a slide")
    [listing] = client.get("/api/v1/slide-folders", headers=admin_headers).json()
    assert listing["path"] == str(slide_folder.resolve()) and not listing["truncated"]
    assert [Path(s["path"]).relative_to(slide_folder.resolve()).as_posix() for s in listing["slides"]] == [
        SLIDE_NAME, "sub/deeper.svs"]
    assert listing["slides"][0]["size_bytes"] == folder_slide.stat().st_size


def test_a_slide_file_authorised_by_the_caller_is_added_without_a_slide_folder(app, client, admin_headers, project,
                                                                               cmu_slide, tmp_path):
    """``add_slide_file`` (the Girder plugin's hook) reads the file in place, outside any slide
    folder, and refuses what is no slide and a taken name."""
    from slidelabel.errors import ConflictError, SlideError
    from slidelabel.services.slides import add_slide_file

    database = app.state.database
    slide = add_slide_file(database, project["id"], "item.svs", cmu_slide)
    assert (slide.path, slide.uploaded, slide.width) == (str(cmu_slide.resolve()), False, 2220)
    listed = client.get(slides_url(project), headers=admin_headers).json()
    assert [s["name"] for s in listed] == ["item.svs"]
    with pytest.raises(ConflictError):
        add_slide_file(database, project["id"], "item.svs", cmu_slide)
    not_a_slide = tmp_path / "notes.svs"
    not_a_slide.write_text("no pixels here")
    with pytest.raises(SlideError):
        add_slide_file(database, project["id"], "notes.svs", not_a_slide)


def test_links_out_are_skipped_alike_whatever_lies_behind_them(client, admin_headers, project, slide_folder, tmp_path):
    """A folder's link out of the slide folders is skipped with the same reason whether what it
    leads to is a file, a folder or nothing: before, only links to existing files were listed, so
    adding the folder told whether a path outside existed (twenty-second attack, low)."""
    (tmp_path / "exists.svs").write_bytes(b"x")
    (tmp_path / "a-folder.svs").mkdir()
    for name, target in [("file.svs", "exists.svs"), ("folder.svs", "a-folder.svs"), ("missing.svs", "missing.svs")]:
        (slide_folder / name).symlink_to(tmp_path / target)
    for path in [str(slide_folder), f"{slide_folder}/*.svs"]:
        response = client.post(slides_url(project), headers=admin_headers, json={"path": path})
        assert response.status_code == 201, response.text
        skipped = {Path(s["path"]).name: s["reason"] for s in response.json()["skipped"]}
        assert {skipped[name] for name in ["file.svs", "folder.svs", "missing.svs"]} == {
            "it links to a file or folder outside the slide folders you may read"}, (path, skipped)
