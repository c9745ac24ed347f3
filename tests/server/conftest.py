"""Fixtures of the API tests: a real app on a real database, a client and users per role.

``database_url`` runs each test on SQLite and, in the modules marked ``postgresql``, when a
PostgreSQL server answers on 127.0.0.1:5432 (or ``SLIDELABEL_TEST_POSTGRES``), on a fresh
PostgreSQL database of its own.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from slidelabel.server.app import create_app
from slidelabel.services import accounts
from slidelabel.services.accounts import create_user, ensure_admin
from slidelabel.services.superpixels import SuperpixelOptions, compute_slide_superpixels
from slidelabel.settings import Settings
from slidelabel.store.database import Database, migrate
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Membership, Role, Slide

POSTGRES = os.environ.get("SLIDELABEL_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
ADMIN_PASSWORD = "admin-password"
PASSWORD = "user-password"


def _postgres_reachable() -> bool:
    try:
        with create_engine(POSTGRES, connect_args={"connect_timeout": 2}).connect():
            return True
    except Exception:
        return False


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its smallest cost: the tests log in hundreds of times, and the cost parameters
    travel inside each hash, so verification is the same code."""
    monkeypatch.setattr(accounts, "_HASHER", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test copies it (migrating every test's database takes
    longer than most tests)."""
    path = tmp_path_factory.mktemp("template") / "slidelabel.sqlite"
    database = Database(f"sqlite:///{path}")
    migrate(database.engine)
    database.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str | None]:
    """A PostgreSQL database migrated once, the template of each test's database; None when no
    server answers."""
    if not _postgres_reachable():
        yield None
        return
    name = f"slidelabel_template_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database(POSTGRES.rsplit("/", 1)[0] + f"/{name}")
    migrate(database.engine)
    database.dispose()
    yield name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of the API runs on SQLite, and also on PostgreSQL where its module is marked
    ``postgresql``: the modules about what the database itself does (concurrent writes and their
    locks, deletes, merges, queries over labels, reviews, predictions and jobs). The others test
    routes and rules that do not depend on the database, and each PostgreSQL run costs a database
    of its own (the suite's time: CI has 30 minutes)."""
    if "database_url" not in metafunc.fixturenames or any(
            "database_url" in str(marker.args[0]) for marker in metafunc.definition.iter_markers("parametrize")):
        return
    on_postgresql = metafunc.definition.get_closest_marker("postgresql") is not None
    metafunc.parametrize("database_url", ["sqlite", "postgresql"] if on_postgresql else ["sqlite"], indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path,
                 postgres_template: str | None) -> Iterator[str]:
    """A migrated database of the test's own: a copy of the SQLite template, or a new PostgreSQL
    database made from its template and dropped after (see :func:`pytest_generate_tests`)."""
    if request.param == "sqlite":
        shutil.copyfile(sqlite_template, tmp_path / "slidelabel.sqlite")
        yield f"sqlite:///{tmp_path / 'slidelabel.sqlite'}"
        return
    if postgres_template is None:
        pytest.skip(f"no PostgreSQL server at {POSTGRES}")
    name = f"slidelabel_test_{secrets.token_hex(6)}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    slide_folder = tmp_path / "slides"
    slide_folder.mkdir()
    return Settings(data_dir=tmp_path / "data", db=database_url, broker="memory://",
                    slide_folders=[slide_folder], admin_password=ADMIN_PASSWORD)


@pytest.fixture
def app(settings: Settings):
    app = create_app(settings)
    with app.state.database.session(write=True) as session:
        ensure_admin(session, settings.admin_password)
    yield app
    app.state.database.dispose()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def free_port() -> int:
    """A TCP port of 127.0.0.1 no one listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


@pytest.fixture
def admin_headers(client: TestClient) -> dict[str, str]:
    return login(client, "admin", ADMIN_PASSWORD)


@pytest.fixture
def project(client: TestClient, admin_headers: dict[str, str]) -> dict:
    """A project with categories tumour, stroma and an excluded glass, on ``color`` features (the
    cheapest to compute: the tests link or make them)."""
    response = client.post("/api/v1/projects", headers=admin_headers, json={
        "name": "breast", "extractor": "color", "categories": [{"name": "tumour"}, {"name": "stroma"}, {"name": "glass", "excluded": True}]})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def member_headers(app, client: TestClient, project: dict) -> Callable[[Role | None], dict[str, str]]:
    """Headers of a new user with ``role`` in ``project`` (None: a user outside it)."""

    def make(role: Role | None) -> dict[str, str]:
        username = f"{role.value if role else 'outsider'}-{secrets.token_hex(3)}"
        with app.state.database.session(write=True) as session:
            user = create_user(session, username, PASSWORD)
            if role is not None:
                session.add(Membership(project_id=project["id"], user_id=user.id, role=role))
        return login(client, username, PASSWORD)

    return make


@pytest.fixture
def slide_row(app, project: dict, cmu_slide: Path) -> int:
    """A slide row of ``project`` pointing at the CMU sample, as if its 1000 superpixels were
    computed (no files): for tests of labels that need no pixels."""
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499, superpixels=1000)
        session.add(slide)
        session.flush()
        return slide.id


class StubSender:
    """Records what would have been sent to Celery."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list, str]] = []

    def send_task(self, name: str, args: list, queue: str) -> object:
        self.sent.append((name, args, queue))
        return None


@pytest.fixture
def sender(app) -> StubSender:
    """The app's Celery replaced by a :class:`StubSender`: jobs are submitted, never run."""
    app.state.celery = StubSender()
    return app.state.celery


@pytest.fixture(scope="session")
def cmu_superpixels(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """The CMU sample's superpixels at the project defaults (10x: working downsample 2), computed
    once for every test that copies them into its project."""
    folder = tmp_path_factory.mktemp("cmu-superpixels") / "cmu"
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions())
    return folder


@pytest.fixture
def slide_url(app, project: dict, slide_row: int, cmu_superpixels: Path) -> str:
    """``slide_row`` with the CMU sample's superpixels: its API URL."""
    shutil.copytree(cmu_superpixels, ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row))
    return f"/api/v1/projects/{project['id']}/slides/{slide_row}"


@contextmanager
def every_export_turn_taken() -> Iterator[None]:
    """The API process's export turns all held, as by other users' exports being built."""
    from slidelabel.services import exports

    held = [exports._EXPORTERS.take_now() for _ in range(exports.EXPORTERS)]
    assert all(held)
    try:
        yield
    finally:
        for _ in held:
            exports._EXPORTERS.give_back()
