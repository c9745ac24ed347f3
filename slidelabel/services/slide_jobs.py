"""Job kinds of one slide: its superpixels, then its features, into the project's folders.

``superpixels`` and ``features`` run one step each; ``prepare`` runs both in order. A feature job
needs finished superpixels, so "prepare every slide" cannot submit the two steps side by side:
rather than teach the job queue about dependencies (and a worker to wait on another), a slide's
preparation is one job that runs the two steps itself. Each step skips work that is finished (the
superpixel manifest and the feature array's attributes say so), so preparing a slide that has
superpixels goes straight to its features, and preparing it again is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select

from slidelabel.errors import ConflictError, JobCancelled, ParameterError
from slidelabel.pipelines.features.extract import extract_slide_features
from slidelabel.pipelines.pinned_files import PinnedFile
from slidelabel.services.access import Action
from slidelabel.services.feature_import import remove_unfinished
from slidelabel.services.job_runs import JobContext
from slidelabel.services.jobs import GONE, Sender, job_kind, submit
from slidelabel.services.projects import superpixel_options
from slidelabel.services.segment_import import ALGORITHM as IMPORTED_ALGORITHM
from slidelabel.services.slide_paths import slide_file
from slidelabel.services.superpixels import check_planned_superpixels, compute_slide_superpixels, finished_manifest
from slidelabel.store.database import Database
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Project, Slide
from slidelabel.store.superpixel_files import MANIFEST_FILE, read_manifest

SUPERPIXELS, FEATURES, PREPARE = "superpixels", "features", "prepare"
#: The job kinds whose latest job tells the state of each step of a slide.
STEP_KINDS = {SUPERPIXELS: (SUPERPIXELS, PREPARE), FEATURES: (FEATURES, PREPARE)}


def work_key(kind: str, slide_id: int, options: dict) -> str:
    """The key of a job: the same kind, slide and options are the same work."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    return f"{kind}:{slide_id}:{digest}"


def step_job(kind: str, project: Project, slide: Slide) -> dict:
    """``submit`` arguments of the job ``kind`` (superpixels, features or prepare) of ``slide``
    with the project's current superpixel options and feature extractor."""
    params = {"options": project.superpixel_options}
    if kind != SUPERPIXELS:
        params["extractor"] = project.extractor
    return {"project_id": project.id, "slide_id": slide.id, "kind": kind, "key": work_key(kind, slide.id, params),
            "params": params}


def superpixels_finished(data_dir: Path, project: Project, slide: Slide) -> bool:
    """True when the slide's superpixel folder holds this slide file's superpixels made with the
    project's current options (hashes the file only when it was touched since)."""
    folder = ProjectFiles(data_dir, project.id).superpixels(slide.id)
    return finished_manifest(folder, Path(slide.path), superpixel_options(project.superpixel_options)) is not None


def check_superpixel_options(data_dir: Path | None, project: Project, slide: Slide, *,
                             max_superpixels: int | None) -> None:
    """Before a superpixel or prepare job is queued: :class:`ParameterError` when the project's
    options give ``slide`` a size outside the allowed steps or more than ``max_superpixels``
    superpixels (None: no bound), from the slide's recorded size. Imported segments, which the
    job keeps, are not checked (without ``data_dir`` they are not looked for)."""
    if data_dir is not None and imported_segments(ProjectFiles(data_dir, project.id).superpixels(slide.id)):
        return
    check_planned_superpixels(slide.width, slide.height, slide.mpp, superpixel_options(project.superpixel_options),
                              limit=max_superpixels, slide_name=slide.name)


def submit_slide_job(database: Database, sender: Sender, data_dir: Path, project: Project, slide: Slide, kind: str,
                     *, user_id: int | None, max_superpixels: int | None = None) -> Job:
    """Queue the ``kind`` job of one slide (or return the same work queued, running or done);
    :class:`ConflictError` for features of a slide without finished superpixels, and
    :class:`ParameterError` when the project's options do not fit the slide
    (:func:`check_superpixel_options`; pass ``Settings.max_superpixels_per_slide``)."""
    if kind == FEATURES and not superpixels_finished(data_dir, project, slide):
        raise ConflictError(f"slide {slide.name!r} has no finished superpixels for the project's options; "
                            f"compute them first (POST .../slides/{slide.id}/superpixels or .../jobs/prepare)")
    if kind != FEATURES:
        check_superpixel_options(data_dir, project, slide, max_superpixels=max_superpixels)
    return submit(database, sender, **step_job(kind, project, slide), user_id=user_id)


def submit_prepare(database: Database, sender: Sender, project: Project, slides: Iterable[Slide], *,
                   user_id: int | None, data_dir: Path | None = None, max_superpixels: int | None = None) -> list[Job]:
    """Queue a ``prepare`` job (superpixels, then features) for each slide; none when the
    project's options do not fit one of them (:class:`ParameterError` naming every such slide,
    :func:`check_superpixel_options`; pass ``Settings.data_dir`` and ``max_superpixels_per_slide``)."""
    slides = list(slides)
    refused = []
    for slide in slides:
        try:
            check_superpixel_options(data_dir, project, slide, max_superpixels=max_superpixels)
        except ParameterError as error:
            refused.append(str(error))
    if refused:
        raise ParameterError("; ".join(refused[:3]) + (f"; and {len(refused) - 3} more slides" if len(refused) > 3 else ""))
    return [submit(database, sender, **step_job(PREPARE, project, slide), user_id=user_id) for slide in slides]


def remove_unfinished_features(out_path: Path) -> list[Path]:
    """Remove the scratch folders (``.<name>.zarr.<hex>.tmp``) and rows that killed extractions or
    imports of the feature array ``out_path`` left. Returns what was removed."""
    return remove_unfinished(out_path.parent, out_path.name.removesuffix(".zarr"))


#: Temporary outputs of a slide's jobs, by subfolder of the slide's folder: the scratch files of
#: atomic writes, window caches and label scratch stores (superpixels and imported segments), and
#: unfinished feature arrays and their scratch rows.
_TEMPORARIES = {"superpixels": (".*.tmp*",), "features": (".*.zarr.*.tmp", ".*.rows")}


def sweep_unfinished_outputs(database: Database, data_dir: Path) -> list[Path]:
    """Remove the temporary outputs that killed jobs (a Cancel that had to kill its process, a
    worker killed by the OS or a time limit) left in the folders of every slide with no running
    job: at a worker's start and at the start of every slide job, so that they go away without a
    retry of the killed job. Only what was last changed before this sweep began is removed: a job
    that starts on another worker while it runs keeps its new files. Returns what was removed."""
    # Before the look at running jobs: a job claimed after that look writes only after it.
    started = time.time()
    with database.session() as session:
        busy = set(session.scalars(select(Job.slide_id).where(Job.state == JobState.running)))
    removed = []
    for slide_dir in (data_dir / "projects").glob("*/slides/*"):
        if not slide_dir.name.isdigit() or int(slide_dir.name) in busy:
            continue
        for subfolder, patterns in _TEMPORARIES.items():
            for pattern in patterns:
                removed += [entry for entry in (slide_dir / subfolder).glob(pattern) if _remove_older(entry, started)]
    return removed


def _remove_older(entry: Path, cutoff: float) -> bool:
    """Remove ``entry`` (a file, or a folder with all it holds) where it was last changed before
    ``cutoff`` (a ``time.time()``); what changed since stays. True when it is gone."""
    try:
        info = entry.lstat()
        if not stat.S_ISDIR(info.st_mode):
            if info.st_mtime < cutoff:
                entry.unlink()
            return info.st_mtime < cutoff
        # Every child is visited (no short cut), and the folder goes only when they all went.
        emptied = all([_remove_older(Path(child.path), cutoff) for child in os.scandir(entry)])
        if emptied and info.st_mtime < cutoff:
            entry.rmdir()
            return True
    except FileNotFoundError:
        return True
    except OSError:
        pass
    return False


def imported_segments(folder: Path) -> bool:
    """Whether the finished segments in ``folder`` were imported (``import-segments``) rather
    than computed: a prepare job keeps them and computes its features on them."""
    manifest = read_manifest(folder / MANIFEST_FILE)
    return manifest is not None and manifest.get("algorithm") == IMPORTED_ALGORITHM


def _slide_file(context: JobContext) -> PinnedFile:
    with context.database.session() as session:
        slide = session.get(Slide, context.slide_id)
        if slide is None:
            raise JobCancelled(GONE)
        return slide_file(slide)


def _check_slide_kept(context: JobContext) -> None:
    """After a step wrote its outputs: :class:`JobCancelled` when the slide or its project was
    deleted meanwhile, once what the job wrote is removed. A delete waits for a cancelled job's
    process to end, so this is the backstop for one whose heartbeat fell silent (a database busy
    past ``job_stale_seconds``): no file of a deleted slide stays (ids are never reused)."""
    with context.database.session() as session:
        project_kept = session.get(Project, context.project_id) is not None
        slide_kept = project_kept and session.get(Slide, context.slide_id) is not None
    if not slide_kept:
        files = ProjectFiles(context.settings.data_dir, context.project_id)
        shutil.rmtree(files.slide_dir(context.slide_id) if project_kept else files.root, ignore_errors=True)
        raise JobCancelled(GONE)


def _superpixel_step(context: JobContext, slide: PinnedFile, *, start: float, share: float) -> str:
    """Compute the slide's superpixels, reporting progress in ``[start, start + share]``."""
    folder = ProjectFiles(context.settings.data_dir, context.project_id).superpixels(context.slide_id)
    context.progress(start, "computing superpixels", force=True)

    def progress(stage: str, done: int, total: int) -> None:
        # Clustering and assignment take about as long as each other: half the share each.
        fraction = (0.0 if stage == "cluster" else 0.5) + 0.5 * done / max(total, 1)
        context.progress(start + share * fraction, f"superpixels, {stage}: tile {done} of {total}")

    if imported_segments(folder):
        return "imported segments kept"  # the user's own segments are never recomputed away
    options = superpixel_options(context.params["options"])
    settings = context.settings
    result = compute_slide_superpixels(slide.reader_path, folder, options, progress=progress,
                                       max_superpixels=settings.max_superpixels_per_slide,
                                       cache_bytes=settings.superpixel_cache_mb << 20)
    _check_slide_kept(context)
    with context.database.session(write=True) as session:
        kept = session.get(Slide, context.slide_id)
        if kept is not None:  # else deleted since the check: its files went with it
            kept.superpixels = result.superpixels
    return f"{result.superpixels} superpixels ({result.status})"


def _feature_step(context: JobContext, slide: PinnedFile, *, start: float, share: float) -> str:
    """Compute the features of the slide's finished superpixels, reporting progress in
    ``[start, start + share]``."""
    files = ProjectFiles(context.settings.data_dir, context.project_id)
    folder, extractor = files.superpixels(context.slide_id), context.params["extractor"]
    if not imported_segments(folder) and finished_manifest(
            folder, slide.reader_path, superpixel_options(context.params["options"])) is None:
        raise ConflictError("the slide has no finished superpixels for these options; compute them first")
    context.progress(start, f"computing {extractor} features", force=True)

    def progress(done: int, total: int) -> None:
        context.progress(start + share * done / max(total, 1), f"{extractor} features: tile {done} of {total}")

    out_path = files.features(context.slide_id, extractor)
    remove_unfinished_features(out_path)  # left by an attempt whose worker was killed
    extract_slide_features(slide.reader_path, folder, out_path, extractor=extractor, progress=progress)
    _check_slide_kept(context)
    return f"{extractor} features"


@job_kind(SUPERPIXELS, action=Action.train)
def superpixels(context: JobContext) -> dict:
    """Superpixels of the job's slide with the options it was submitted with; a finished folder
    with the same options is kept (the service checks its manifest)."""
    sweep_unfinished_outputs(context.database, context.settings.data_dir)
    return {"message": _superpixel_step(context, _slide_file(context), start=0.0, share=1.0)}


@job_kind(FEATURES, action=Action.train)
def features(context: JobContext) -> dict:
    """Features of the job's slide with the extractor it was submitted with; an array with the
    same attributes is kept."""
    sweep_unfinished_outputs(context.database, context.settings.data_dir)
    return {"message": _feature_step(context, _slide_file(context), start=0.0, share=1.0)}


@job_kind(PREPARE, action=Action.train)
def prepare(context: JobContext) -> dict:
    """Superpixels, then features of the job's slide, each skipped when finished. The bar gives
    each step half: which one takes longer depends on the extractor."""
    sweep_unfinished_outputs(context.database, context.settings.data_dir)
    slide = _slide_file(context)
    done = _superpixel_step(context, slide, start=0.0, share=0.5)
    return {"message": f"{done}; {_feature_step(context, slide, start=0.5, share=0.5)}"}
