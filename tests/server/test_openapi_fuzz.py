"""No 5xx for any input the API's own OpenAPI document allows: schemathesis generates requests
for every operation (a fixed set of examples, derandomised, so CI sees what this machine saw) as
the project's owner, an annotator and an outsider."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from slidelabel.server.app import create_app
from slidelabel.services.accounts import create_user, ensure_admin
from slidelabel.settings import Settings
from slidelabel.store.models import Membership, Role

ADMIN_PASSWORD = "fuzz-admin-password"
PASSWORD = "fuzz-user-password"
EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path):
    """An app with a project holding the CMU slide, and headers of its owner, an annotator and
    an outsider."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "slides").mkdir()
    shutil.copy(cmu_slide, root / "slides" / cmu_slide.name)
    config = Settings(data_dir=root / "data", db=f"sqlite:///{root / 'db.sqlite'}", broker="memory://",
                      slide_folders=[root / "slides"], admin_password=ADMIN_PASSWORD)
    app = create_app(config)
    client = TestClient(app)

    def login(username: str, password: str) -> dict[str, str]:
        response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    with app.state.database.session(write=True) as session:
        ensure_admin(session, ADMIN_PASSWORD)
    owner = login("admin", ADMIN_PASSWORD)
    project = client.post("/api/v1/projects", headers=owner, json={
        "name": "fuzzed", "extractor": "color", "categories": [{"name": "tumour"}, {"name": "stroma"}]}).json()
    added = client.post(f"/api/v1/projects/{project['id']}/slides", headers=owner,
                        json={"path": str(root / "slides" / cmu_slide.name)})
    assert added.status_code == 201, added.text
    headers = {"owner": owner}
    for name, role in (("annotator", Role.annotator), ("outsider", None)):
        username = f"{name}-{secrets.token_hex(3)}"
        with app.state.database.session(write=True) as session:
            user = create_user(session, username, PASSWORD)
            if role is not None:
                session.add(Membership(project_id=project["id"], user_id=user.id, role=role))
        headers[name] = login(username, PASSWORD)
    yield app, headers
    app.state.database.dispose()


def test_no_input_the_schema_allows_gets_a_server_error(fuzzed):
    app, headers = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations, calls = 0, 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/auth/logout"):
            continue  # it would end the three tokens, and every later request would be a 401
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call_as_everyone(case) -> None:
            nonlocal calls
            # Outsider and annotator first: the owner's example may delete what they would reach.
            for who in ("outsider", "annotator", "owner"):
                response = case.call(headers=headers[who])
                calls += 1
                if response.status_code >= 500:
                    failures.append(f"{who}: {case.method} {case.formatted_path} -> {response.status_code}: "
                                    f"{response.text[:300]}")

        call_as_everyone()
    print(f"\n{calls} requests over {operations} operations, {len(failures)} server errors")
    assert operations > 50 and calls > 3 * operations and not failures, "\n".join(failures[:20])
