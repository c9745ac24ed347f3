"""``serve --demo``: a project on the real sample slide, created once and reused."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from slidelabel.services.demo_project import DEMO_CATEGORIES, create_demo_project, demo_settings
from slidelabel.services.sample_data import sample_slide
from slidelabel.settings import Settings
from slidelabel.store.database import Database, migrate
from slidelabel.store.models import Category, Job, Slide


class Recorder:
    def __init__(self) -> None:
        self.sent: list = []

    def send_task(self, name: str, args: list, queue: str) -> None:
        self.sent.append(args)


def test_the_demo_project_holds_the_sample_and_is_prepared_once(tmp_path: Path):
    settings = demo_settings(Settings(data_dir=tmp_path))
    assert sample_slide().parent in settings.slide_folders
    database = Database(settings.database_url)
    migrate(database.engine)
    sender = Recorder()
    first = create_demo_project(database, sender, settings)
    again = create_demo_project(database, sender, settings)
    assert again.project_id == first.project_id
    with database.session() as session:
        slides = list(session.scalars(select(Slide).where(Slide.project_id == first.project_id)))
        categories = list(session.scalars(select(Category).where(Category.project_id == first.project_id)))
        jobs = list(session.scalars(select(Job)))
    assert [s.path for s in slides] == [str(sample_slide().resolve())]
    assert slides[0].width == 2220 and slides[0].height == 2967
    assert [(c.name, c.excluded) for c in categories] == list(DEMO_CATEGORIES)
    assert [j.kind for j in jobs] == ["prepare"] and len(sender.sent) == 1
    database.dispose()
