"""Slides of a project: added from the server's slide folders
(:mod:`~slidelabel.services.slide_folders`) or uploaded, listed, removed.

An upload is streamed to a hidden file in the project's upload folder, checked and opened as a
slide, and renamed to its name only then, so a refused upload leaves nothing behind. Removing a
slide removes what slidelabel made of it, never a file of a server folder.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from anyio import to_thread
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from slidelabel.errors import (
    ConflictError,
    NotFoundError,
    ParameterError,
    SlideError,
    SlidelabelError,
)
from slidelabel.pipelines.pinned_files import pin_file
from slidelabel.pipelines.slide_files import MEGAPIXEL, SlideLimits, check_slide_limits
from slidelabel.pipelines.slides import SlideInfo, open_slide
from slidelabel.services.jobs import still_stopping, stopping_message, wait_stopped
from slidelabel.services.slide_folders import (
    allowed_folders,
    expand_pattern,
    inside,
    link_out,
    name_problem,
    named,
    resolve_in_folders,
)
from slidelabel.services.slide_jobs import STEP_KINDS
from slidelabel.services.uploads import MB, UploadReceiver
from slidelabel.settings import Settings
from slidelabel.store.database import Database, foreign_key_violation
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Job, JobState, Slide

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Skipped:
    """A file of a folder or pattern that was not added, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Added:
    slides: list[Slide]
    skipped: list[Skipped]


@dataclass(frozen=True)
class SlideStatus:
    """A slide with the latest job of each of its steps (superpixels, features), if any."""

    slide: Slide
    jobs: dict[str, Job | None]


#: The kind of the project's epoch jobs (:mod:`slidelabel.services.epochs`), which read every slide.
EPOCH_KIND = "epoch"


def slide_limits(settings: Settings) -> SlideLimits:
    """What the server lets a slide declare, from its settings."""
    return SlideLimits(max_pixels=settings.max_slide_megapixels * MEGAPIXEL,
                       max_unpyramided_pixels=settings.max_unpyramided_megapixels * MEGAPIXEL,
                       max_chunk_bytes=settings.max_decoded_mb * MB)


def _describe(path: Path, name: str, limits: SlideLimits, *, uploaded: bool = False) -> SlideInfo:
    """Check the slide's declared size against ``limits`` (headers only), then open it to check
    that it is readable; errors name the file as ``name``. The file is pinned first
    (:func:`~slidelabel.pipelines.pinned_files.pin_file`; a server folder's reached without links,
    an upload alone, with none of the other uploads beside it): a FIFO or link swapped in after
    the caller's checks is never opened."""
    pinned = None  # held while the file is read: its link goes with it
    try:
        pinned = pin_file(path, links=uploaded, siblings=not uploaded)
        check_slide_limits(pinned.reader_path, limits)
        with open_slide(pinned.reader_path) as slide:
            return slide.info
    except SlideError as error:
        message = str(error).removeprefix(f"{error.path}: ")
        raise type(error)(name, message.replace(str(pinned.reader_path), name) if pinned else message) from None


def _insert(session: Session, project_id: int, name: str, path: Path, info: SlideInfo, *, uploaded: bool) -> Slide:
    """Add the slide row; :class:`ConflictError` when the project has a slide of that name."""
    taken = f"the project has a slide named {name!r}; remove it first or rename the file"
    if session.scalar(select(Slide.id).where(Slide.project_id == project_id, Slide.name == name)) is not None:
        raise ConflictError(taken)
    slide = Slide(project_id=project_id, name=name, path=str(path), uploaded=uploaded, width=info.width,
                  height=info.height, mpp=info.mpp)
    session.add(slide)
    try:
        session.flush()
    except IntegrityError as error:
        if foreign_key_violation(error):  # the project was deleted meanwhile: the API answers 404
            raise
        raise ConflictError(taken) from None  # added by a concurrent request since the check
    return slide


def add_slide_file(database: Database, project_id: int, name: str, path: Path, *,
                   limits: SlideLimits = SlideLimits()) -> Slide:
    """Add the slide file at ``path`` as ``name``, for a caller that has authorised the path itself
    (the Girder plugin adds the files of Girder items the user may read); no slide-folder check.

    Raises :class:`SlideError` when the file is no readable slide or declares more than
    ``limits`` allow, and :class:`ConflictError` for a taken name.
    """
    path = Path(path).resolve()
    info = _describe(path, name, limits)
    with database.session(write=True) as session:
        return _insert(session, project_id, name, path, info, uploaded=False)


def add_from_server(database: Database, settings: Settings, project_id: int, raw: str, *,
                    folders: list[Path] | None = None) -> Added:
    """Add the slide at ``raw``, or every slide file of a folder or glob pattern, inside
    ``folders`` (resolved; default all the server's slide folders, for callers acting as the
    server: routes pass the caller's :func:`require_readable_folders`).

    A single file that cannot be added raises (:class:`PermissionDeniedError` outside the slide
    folders, :class:`SlideError` when unreadable, :class:`ConflictError` for a taken name); the
    files of a folder or pattern that cannot be added are returned as :class:`Skipped`.
    """
    folders, limits = allowed_folders(settings) if folders is None else folders, slide_limits(settings)
    resolved = resolve_in_folders(raw, folders) if not glob.has_magic(raw) else None
    if resolved is not None and not resolved.is_dir():
        if problem := name_problem(Path(raw)):
            raise ParameterError(f"{named(Path(raw))}: {problem}")
        info = _describe(resolved, raw, limits)
        with database.session(write=True) as session:
            return Added([_insert(session, project_id, Path(raw).name, resolved, info, uploaded=False)], [])
    added, skipped, seen, links_out = [], [], set(), set()
    for path in expand_pattern(raw, folders):
        if problem := name_problem(path):
            skipped.append(Skipped(named(path), problem))
            continue
        target = path.resolve()
        if not inside(target, folders):
            link = link_out(path, folders)  # named, not what lies behind it: another folder's content
            if link not in links_out:
                links_out.add(link)
                skipped.append(Skipped(str(link), "it links to a file or folder outside the slide folders you may read"))
            continue
        if target in seen:
            skipped.append(Skipped(str(path), "the same file as another match (a link)"))
            continue
        seen.add(target)
        try:
            info = _describe(target, str(path), limits)
            with database.session(write=True) as session:
                added.append(_insert(session, project_id, path.name, target, info, uploaded=False))
        except SlidelabelError as error:
            skipped.append(Skipped(str(path), str(error)))
    return Added(added, skipped)


def _add_upload(database: Database, files: ProjectFiles, project_id: int, name: str, received: Path,
                limits: SlideLimits) -> Slide:
    info = _describe(received, name, limits, uploaded=True)
    final, moved = files.uploads / name, False
    try:
        with database.session(write=True) as session:
            slide = _insert(session, project_id, name, final, info, uploaded=True)
            # Renamed only once the row holds the name, so two uploads of one name never swap files.
            os.replace(received, final)
            moved = True
    except BaseException:
        if moved:  # the commit failed
            final.unlink(missing_ok=True)
        raise
    return slide


async def receive_upload(chunks: AsyncIterable[bytes], *, content_type: str, content_length: str | None,
                         database: Database, settings: Settings, project_id: int, user_id: int | None = None) -> Slide:
    """Stream an uploaded slide into the project's upload folder and add it to the project, as one
    of the uploads of ``user_id`` arriving at once (:data:`~slidelabel.services.uploads.UPLOADS_PER_HOLDER`).

    Raises :class:`TooLargeError` past :attr:`Settings.upload_limit_mb`, :class:`SlideError` when
    the file is no readable slide and :class:`ConflictError` for a taken name; in each case no
    file is left behind.
    """
    files = ProjectFiles(settings.data_dir, project_id)
    declared = int(content_length) if content_length and content_length.isdigit() else None
    receiver = UploadReceiver(content_type, files.uploads, limit_bytes=settings.upload_limit_mb * MB,
                              declared_bytes=declared, holder=user_id)
    try:
        async for chunk in chunks:
            receiver.feed(chunk)
        name, received = receiver.finish()
        return await to_thread.run_sync(_add_upload, database, files, project_id, name, received,
                                         slide_limits(settings))
    finally:
        receiver.discard()


def get_slide(session: Session, project_id: int, slide_id: int) -> Slide:
    slide = session.get(Slide, slide_id)
    if slide is None or slide.project_id != project_id:
        raise NotFoundError(f"no slide {slide_id} in this project")
    return slide


def slides_of(session: Session, project_id: int) -> list[Slide]:
    """The project's slides by name."""
    return list(session.scalars(select(Slide).where(Slide.project_id == project_id).order_by(Slide.name)))


def list_slides(session: Session, project_id: int) -> list[SlideStatus]:
    """The project's slides by name, each with the latest job of each step."""
    kinds = {kind for kinds in STEP_KINDS.values() for kind in kinds}
    latest_ids = (select(func.max(Job.id)).where(Job.project_id == project_id, Job.kind.in_(kinds))
                  .group_by(Job.slide_id, Job.kind))
    jobs: dict[int, list[Job]] = {}
    for job in session.scalars(select(Job).where(Job.id.in_(latest_ids)).order_by(Job.id)):
        jobs.setdefault(job.slide_id, []).append(job)

    def latest(slide_id: int, step: str) -> Job | None:
        return max((job for job in jobs.get(slide_id, []) if job.kind in STEP_KINDS[step]), key=lambda j: j.id,
                   default=None)

    return [SlideStatus(slide, {step: latest(slide.id, step) for step in STEP_KINDS})
            for slide in slides_of(session, project_id)]


def delete_slide(database: Database, settings: Settings, project_id: int, slide_id: int) -> None:
    """Remove the slide, its labels and jobs, and its files under the data folder: superpixels,
    features, predictions, and the slide file itself if it was uploaded. :class:`ConflictError`
    while a job of the slide, or an epoch of the project (it reads every slide's labels and
    features, and writes every slide's predictions), is queued or running. Such a job that was
    cancelled but whose process still runs is waited for (:data:`~slidelabel.services.jobs.STOP_WAIT_S` at most), then
    refused as running, as :func:`~slidelabel.services.projects.delete_project` does."""
    files = ProjectFiles(settings.data_dir, project_id)
    reading = or_(Job.slide_id == slide_id, (Job.project_id == project_id) & (Job.kind == EPOCH_KIND))
    with database.session() as session:
        get_slide(session, project_id, slide_id)
    wait_stopped(database, reading, stale_s=settings.job_stale_seconds)
    with database.session(write=True) as session:
        slide = get_slide(session, project_id, slide_id)
        active = list(session.scalars(select(Job.id).where(
            reading, Job.state.in_([JobState.queued, JobState.running])).order_by(Job.id)))
        if active:
            raise ConflictError(f"jobs {', '.join(map(str, active))} reading this slide are queued or running; "
                                "cancel them first")
        stopping = list(session.scalars(select(Job.id).where(
            still_stopping(reading, stale_s=settings.job_stale_seconds)).order_by(Job.id)))
        if stopping:
            raise ConflictError(stopping_message(stopping))
        epochs = session.scalars(select(Epoch.number).where(Epoch.project_id == project_id))
        remove = [files.predictions(number, slide_id) for number in epochs]
        if slide.uploaded and Path(slide.path).resolve().is_relative_to(files.uploads.resolve()):
            remove.append(Path(slide.path))
        session.delete(slide)
    # After the commit: a failed delete keeps the files, a failed removal only leaves files unread.
    shutil.rmtree(files.slide_dir(slide_id), ignore_errors=True)
    for path in remove:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            logger.warning("could not remove %s of deleted slide %s", path, slide_id, exc_info=True)
