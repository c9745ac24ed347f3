"""Job kinds of one slide: its superpixels, then its features, into the project's folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy.orm import Session

from slidelabel.services.jobs import JobContext, job_kind
from slidelabel.services.projects import superpixel_options
from slidelabel.services.superpixels import compute_slide_superpixels
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Project, Slide


def work_key(kind: str, slide_id: int, options: dict) -> str:
    """The key of a job: the same kind, slide and options are the same work."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    return f"{kind}:{slide_id}:{digest}"


def superpixel_job(session: Session, project: Project, slide: Slide) -> dict:
    """``submit`` arguments of the superpixel job of ``slide``."""
    return {"project_id": project.id, "slide_id": slide.id, "kind": "superpixels",
            "key": work_key("superpixels", slide.id, project.superpixel_options),
            "params": {"options": project.superpixel_options}}


@job_kind("superpixels")
def superpixels(context: JobContext) -> dict:
    """Superpixels of the job's slide with the options it was submitted with; a finished folder
    with the same options is kept (the service checks its manifest)."""
    with context.database.session() as session:
        slide = session.get(Slide, context.slide_id)
        path = slide.path
    folder = ProjectFiles(context.settings.data_dir, context.project_id).superpixels(context.slide_id)
    options = superpixel_options(context.params["options"])
    context.progress(0.0, "computing superpixels", force=True)

    def progress(stage: str, done: int, total: int) -> None:
        # Clustering and assignment take about as long as each other: half the bar each.
        context.progress((0.0 if stage == "cluster" else 0.5) + 0.5 * done / max(total, 1),
                         f"{stage}: tile {done} of {total}")

    result = compute_slide_superpixels(Path(path), folder, options, progress=progress)
    with context.database.session(write=True) as session:
        session.get(Slide, context.slide_id).superpixels = result.superpixels
    return {"message": f"{result.superpixels} superpixels ({result.status})"}
