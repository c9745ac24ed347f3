"""An epoch applied to a server folder of slides, as jobs spread over every worker.

A *cohort* job lists the slide files of the folder and submits one ``cohort-slide`` job per
slide, which runs :func:`slidelabel.services.cohort.predict_slide` with the epoch's model file into
``<project>/cohorts/<cohort>/<slide stem>/``; Celery hands the slides to whichever workers are
free. The cohort job stays running after it has submitted them (:data:`jobs.WAITING`): each slide
job, when it ends, sets the cohort's progress to the share of slides that ended and, after the
last one, ends the cohort as done, saying how many slides failed (a bad slide fails its own job
only). Cancelling the cohort stops its slide jobs at their next progress report.

The cohort's folder is named by its work (epoch, folder, formats, superpixel options), not by the
job, so a retried cohort resumes: slides whose predictions are finished are skipped, and a slide
job rerun after its worker died resumes from its finished superpixels and features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from slidelabel.errors import (
    JobCancelled,
    NotFoundError,
    ParameterError,
    PermissionDeniedError,
    SlideError,
    SlidelabelError,
)
from slidelabel.services import cohort
from slidelabel.services.access import Action
from slidelabel.services.batch import output_names
from slidelabel.services.epochs import get_epoch, model_file
from slidelabel.services.job_runs import JobContext
from slidelabel.services.jobs import WAITING, Sender, dispatch, job_kind, submit
from slidelabel.services.names import shown_input
from slidelabel.services.projects import superpixel_options
from slidelabel.services.slide_folders import browse_folders, require_readable_folders, resolve_in_folders
from slidelabel.settings import Settings
from slidelabel.store.atomic import remove_temporaries
from slidelabel.store.database import Database
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Project, User
from slidelabel.store.superpixel_files import read_manifest

logger = logging.getLogger(__name__)

COHORT, COHORT_SLIDE = "cohort", "cohort-slide"
#: Optional exports of each slide, besides its mask TIFF and predictions table.
FORMATS = ("geojson", "annotation")
#: A slide's files that may be downloaded, by the name the API uses.
DOWNLOADS = {"mask": cohort.MASK_FILE, "table": cohort.TABLE_FILE, "geojson": cohort.GEOJSON_FILE,
             "annotation": cohort.ANNOTATION_FILE}
#: Seconds between a slide job's looks at whether its cohort was cancelled.
CANCEL_CHECK_S = 2.0
#: Share of a slide job's progress bar per stage of :func:`cohort.predict_slide` (start, share).
_STAGES = {"cluster": (0.0, 0.25), "assign": (0.25, 0.25), "features": (0.5, 0.4), "predicting": (0.9, 0.1)}


def cohort_dir(data_dir: Path, project_id: int, out: str) -> Path:
    """The folder of one cohort's slide folders."""
    return ProjectFiles(data_dir, project_id).root / "cohorts" / out


def start_cohort(database: Database, sender: Sender, settings: Settings, *, project: Project, user: User, epoch: int,
                 folder: str, formats: list[str]) -> Job:
    """Submit the cohort job applying epoch ``epoch`` of ``project`` to the slide files under
    ``folder`` (recursively), a server folder ``user`` may read; the same work queued, running or
    done is returned instead.

    Raises :class:`PermissionDeniedError` for a folder ``user`` may not read, :class:`ParameterError`
    for one that is no folder, an unknown format or a model on features this server cannot compute,
    :class:`NotFoundError` for an unknown epoch.
    """
    resolved = resolve_in_folders(folder, require_readable_folders(user, settings))
    if not resolved.is_dir():
        raise ParameterError(f"{folder} is not a folder; give a slide folder (GET /slide-folders lists them)")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ParameterError(f"unknown format {shown_input(unknown[0])}; the formats are {', '.join(FORMATS)}")
    with database.session() as session:
        number = get_epoch(session, project.id, epoch).number
        cohort.open_cohort_model(model_file(session, settings.data_dir, project.id, number))
    work = {"epoch": number, "folder": str(resolved), "formats": sorted(set(formats)),
            "options": dict(project.superpixel_options)}
    digest = hashlib.sha256(json.dumps(work, sort_keys=True).encode()).hexdigest()[:16]
    return submit(database, sender, project_id=project.id, kind=COHORT, key=f"{COHORT}:{digest}",
                  params={**work, "out": digest}, user_id=user.id)


def folder_slides(user: User, settings: Settings, folder: Path) -> list[Path]:
    """The slide files under ``folder`` that ``user`` may read, as the folder browser lists them."""
    return [slide.path for listing in browse_folders(user, settings) for slide in listing.slides
            if slide.path.is_relative_to(folder) or slide.path.resolve().is_relative_to(folder)]


def _child_key(parent_id: int, index: int) -> str:
    return f"{COHORT_SLIDE}:{parent_id}:{index}"


def _children_pattern(parent_id: int) -> str:
    return f"{COHORT_SLIDE}:{parent_id}:%"


@job_kind(COHORT, action=Action.manage)
def run_cohort(context: JobContext) -> dict:
    """List the folder's slides and submit a slide job for each (those already submitted by an
    earlier attempt are sent again only while queued); the cohort then waits for them."""
    if context.sender is None:
        raise SlidelabelError("a cohort job submits jobs, so it runs on a worker")
    folder = Path(context.params["folder"])
    with context.database.session() as session:
        job = session.get(Job, context.job_id)
        user = session.get(User, job.created_by) if job.created_by is not None else None
    if user is None:
        raise PermissionDeniedError("the account that started this cohort is gone; start it again")
    slides = folder_slides(user, context.settings, folder)
    if not slides:
        raise ParameterError(f"{folder} holds no slide files this account may read")
    names = output_names(slides)
    queued = _create_children(context, [(str(slide), names[slide]) for slide in slides])
    for child_id in queued:
        dispatch(context.database, context.sender, child_id)
    return {WAITING: True, "message": f"0 of {len(slides)} slides"}


def _create_children(context: JobContext, slides: list[tuple[str, str]]) -> list[int]:
    """Rows of the slide jobs, all in one transaction (so no slide job that ends early can find
    its cohort's count incomplete); ids of those still queued."""
    with context.database.session(write=True) as session:
        existing = set(session.scalars(select(Job.key).where(Job.key.like(_children_pattern(context.job_id)))))
        starter = session.scalar(select(Job.created_by).where(Job.id == context.job_id))  # their turns on the queue
        for index, (slide, name) in enumerate(slides):
            key = _child_key(context.job_id, index)
            if key not in existing:
                params = {"cohort": context.job_id, "slide": slide, "name": name,
                          **{field: context.params[field] for field in ("epoch", "formats", "options", "out")}}
                session.add(Job(project_id=context.project_id, kind=COHORT_SLIDE, key=key, params=params,
                                created_by=starter))
        session.flush()
        return list(session.scalars(select(Job.id).where(Job.key.like(_children_pattern(context.job_id)),
                                                         Job.state == JobState.queued).order_by(Job.id)))


def _cohort_state(database: Database, parent_id: int) -> JobState | None:
    with database.session() as session:
        return session.scalar(select(Job.state).where(Job.id == parent_id))


def _settle(database: Database, child_id: int) -> None:
    """A slide job ended: set its cohort's progress, and end the cohort after its last slide (a
    slide retried after its cohort ended updates the cohort's count once it ends). The cohort's
    row is locked first, so that two slide jobs ending at once count in turn."""
    with database.session(write=True) as session:
        parent_id = session.get(Job, child_id).params["cohort"]
        parent = session.get(Job, parent_id, with_for_update=True)
        if parent is None or parent.state not in (JobState.running, JobState.done):
            return
        states = Counter(job.state for job in latest_children(session, parent_id))
        total = sum(states.values())
        ended = states[JobState.done] + states[JobState.failed] + states[JobState.cancelled]
        failed = ended - states[JobState.done]
        if ended < total:
            if parent.state == JobState.running:
                parent.progress = ended / max(total, 1)
                parent.message = f"{ended} of {total} slides" + (f" ({failed} failed)" if failed else "")
            return
        parent.progress = 1.0
        parent.state = JobState.done
        parent.message = f"{total} slides: {states[JobState.done]} done, {failed} failed"


def latest_children(session: Session, parent_id: int) -> list[Job]:
    """The cohort's slide jobs in slide order, the latest of each slide (a retried slide has several)."""
    latest = (select(func.max(Job.id)).where(Job.key.like(_children_pattern(parent_id))).group_by(Job.key))
    return sorted(session.scalars(select(Job).where(Job.id.in_(latest))),
                  key=lambda job: int(job.key.rsplit(":", 1)[1]))


@job_kind(COHORT_SLIDE, on_end=_settle, action=Action.manage)
def run_cohort_slide(context: JobContext) -> dict:
    """Predict one slide of a cohort; a slide that cannot be read fails this job only."""
    params = context.params
    checked = [0.0]

    def cancelled() -> None:
        if time.monotonic() - checked[0] >= CANCEL_CHECK_S:
            checked[0] = time.monotonic()
            if _cohort_state(context.database, params["cohort"]) == JobState.cancelled:
                raise JobCancelled("the cohort was cancelled")

    def progress(stage: str, done: int, total: int) -> None:
        cancelled()
        start, share = _STAGES.get(stage, (0.0, 0.0))
        context.progress(start + share * done / max(total, 1), f"{stage} {done} of {total}")

    cancelled()
    with context.database.session() as session:
        model_path = model_file(session, context.settings.data_dir, context.project_id, params["epoch"])
    model = cohort.open_cohort_model(model_path)
    options = cohort.PredictOptions(superpixel_options(params["options"]), geojson="geojson" in params["formats"],
                                    annotation="annotation" in params["formats"])
    slide = Path(params["slide"])
    folder = cohort_dir(context.settings.data_dir, context.project_id, params["out"]) / params["name"]
    try:
        if not slide.is_file():
            raise SlideError(slide, "no such file")
        # This job alone writes the folder, and an earlier attempt's process is dead (its job
        # was requeued for a silent heartbeat): what that attempt left is garbage.
        remove_temporaries(folder)
        result = cohort.predict_slide(slide, folder, model, options, progress=progress)
    except SlidelabelError:
        raise
    except Exception as error:  # an unforeseen file problem: this slide fails, the cohort goes on
        context.log(traceback.format_exc())
        raise SlideError(slide, f"unexpected {type(error).__name__}: {error}") from None
    return {"message": f"{result.superpixels} superpixels ({result.status})"}


@dataclass(frozen=True)
class CohortSlide:
    """One slide of a cohort: its ``name`` (folder), ``slide`` file, latest ``job`` and, once
    predicted, superpixels per predicted category and the files there are."""

    name: str
    slide: str
    job: Job
    counts: dict[str, int]
    files: list[str]


def find_cohort(session: Session, project_id: int, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project_id or job.kind != COHORT:
        raise NotFoundError(f"no cohort job {job_id} in this project")
    return job


def cohort_slides(session: Session, data_dir: Path, project_id: int, job_id: int) -> list[CohortSlide]:
    """The slides of a cohort job with their state and, when predicted, their counts per category."""
    parent = find_cohort(session, project_id, job_id)
    root = cohort_dir(data_dir, project_id, parent.params["out"])
    found = []
    for job in latest_children(session, job_id):
        counts, files = {}, []
        folder = root / job.params["name"]
        manifest = read_manifest(folder / cohort.MANIFEST_FILE) if job.state == JobState.done else None
        if manifest is not None:
            files = [name for name, file in DOWNLOADS.items() if file in manifest.get("files", [])]
            table = pq.read_table(folder / cohort.TABLE_FILE, columns=["predicted"])
            counts = {str(k): int(v) for k, v in Counter(table.column("predicted").drop_null().to_pylist()).items()}
        found.append(CohortSlide(job.params["name"], job.params["slide"], job, counts, files))
    return found


def cohort_file(session: Session, data_dir: Path, project_id: int, job_id: int, name: str, what: str) -> Path:
    """The file ``what`` (a key of :data:`DOWNLOADS`) of the cohort slide ``name``, once predicted."""
    if what not in DOWNLOADS:
        raise NotFoundError(f"no file {shown_input(what)}; the files are {', '.join(DOWNLOADS)}")
    parent = find_cohort(session, project_id, job_id)
    names = {job.params["name"] for job in latest_children(session, job_id)}
    if name not in names:
        raise NotFoundError(f"no slide {shown_input(name)} in cohort {job_id}")
    folder = cohort_dir(data_dir, project_id, parent.params["out"]) / name
    manifest = read_manifest(folder / cohort.MANIFEST_FILE)
    if manifest is None or DOWNLOADS[what] not in manifest.get("files", []):
        raise NotFoundError(f"slide {shown_input(name)} of cohort {job_id} has no {what} (yet)")
    return folder / DOWNLOADS[what]
