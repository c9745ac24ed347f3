"""Projects, their categories and members: the rules the API and the Girder plugin share."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

from sqlalchemy import Integer, delete, func, literal, select, update
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, NotFoundError, ParameterError
from slidelabel.pipelines.features import DEFAULT_EXTRACTOR
from slidelabel.pipelines.models import DEFAULT_MODEL
from slidelabel.pipelines.normalisation import DEFAULT_NORMALISATION
from slidelabel.pipelines.strategies import DEFAULT_STRATEGY
from slidelabel.services import jobs, label_history
from slidelabel.services.names import (
    check_printable_name,
    check_printable_text,
    look_alike,
    look_alike_key,
    shown_input,
)
from slidelabel.services.registries import registry_of
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import (
    Category,
    CategoryMerge,
    Job,
    JobState,
    Label,
    LabelEvent,
    Membership,
    Project,
    Review,
    Role,
    Slide,
    User,
    utcnow,
)

#: Okabe & Ito's palette, distinguishable with every common colour-vision deficiency; black last
#: because overlays are drawn on dark nuclei.
PALETTE = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
#: A project extractor naming features imported from other tools (services/project_imports.py)
#: rather than a registered extractor.
IMPORTED_EXTRACTOR = re.compile(r"^imported-[a-z0-9][a-z0-9_-]{0,54}$")
#: Longest category name (the database column's width).
CATEGORY_NAME_CHARS = 100
#: Longest project name (the database column's width).
PROJECT_NAME_CHARS = 200
#: Most categories of one project. A legend, its hotkeys and a K x K agreement or confusion table
#: are read by people: tissue taxonomies have a few dozen classes at most (BCSS, a large public
#: one, about 20). 255 leaves room for fine ones while bounding what one request does: an import
#: that creates 252 holds the write turn under a second (32,000 unbounded ones held it 80 s), and
#: an agreement table has at most 65,025 cells a pair.
MAX_CATEGORIES = 255
#: Highest category position: a label mask holds position + 1 in a uint8 (services/masks.py).
MAX_POSITION = 254


@dataclass(frozen=True)
class ProjectChoices:
    """What a project computes with, by registry name."""

    extractor: str = DEFAULT_EXTRACTOR
    model: str = DEFAULT_MODEL
    strategy: str = DEFAULT_STRATEGY
    normalisation: str = DEFAULT_NORMALISATION


def check_choices(choices: ProjectChoices) -> None:
    """:class:`ParameterError` naming the registered alternatives for an unknown name (a feature
    extractor may also be ``imported-<name>``, features imported from other tools)."""
    for kind, name in (("features", choices.extractor), ("models", choices.model), ("strategies", choices.strategy),
                       ("normalisations", choices.normalisation)):
        registry = registry_of(kind)
        if name in registry or (kind == "features" and IMPORTED_EXTRACTOR.match(name)):
            continue
        raise ParameterError(f"unknown {registry.kind} {shown_input(name)}; registered: {', '.join(registry)}"
                             + (" or imported-<name> for imported features" if kind == "features" else ""))


def superpixel_options(values: dict) -> SuperpixelOptions:
    """Checked :class:`SuperpixelOptions` from a project's stored dict (or a request's):
    :class:`ParameterError` naming an unknown option, or one out of its range."""
    values = dict(values)
    known = [f.name for f in fields(SuperpixelOptions)]
    unknown = sorted(set(values) - set(known), key=str)
    if unknown:
        raise ParameterError(f"unknown superpixel option {shown_input(str(unknown[0]))}; the options are "
                             f"{', '.join(known)}")
    if "size" in values:
        values["size"] = SuperpixelSize.parse(str(values["size"]))
    return SuperpixelOptions(**values)


@dataclass(frozen=True)
class NewCategory:
    """A category to create: colour and hotkey chosen by position when None (:func:`add_category`)."""

    name: str
    color: str | None = None
    hotkey: str | None = None
    excluded: bool = False


def _name_free(session: Session, name: str, member: User, *, but: int | None = None) -> str:
    """``name`` stripped; :class:`ParameterError` unless printable (as category names and
    usernames, :func:`~slidelabel.services.names.check_printable_name`) of at most
    :data:`PROJECT_NAME_CHARS`, :class:`ConflictError` if another project ``member`` belongs to
    has it. Other users' projects may have it: refusing would tell anyone which names they use."""
    name = check_printable_name(name, what="project name", max_chars=PROJECT_NAME_CHARS)
    clash = (select(Project.id).join(Membership, Membership.project_id == Project.id)
             .where(Membership.user_id == member.id, Project.name == name, Project.id != (but or -1)))
    if session.scalar(clash.limit(1)) is not None:
        raise ConflictError(f"you already have a project named {name!r}; choose another name")
    return name


def create_project(session: Session, owner: User, name: str, *, description: str = "",
                   choices: ProjectChoices = ProjectChoices(), superpixels: dict | None = None,
                   categories: Sequence[NewCategory] = ()) -> Project:
    """A new project owned by ``owner``, with ``categories`` in order; the API, the CLI, the demo
    and the Girder plugin all create projects here."""
    name = _name_free(session, name, owner)
    check_choices(choices)
    options = superpixel_options(superpixels or {})
    project = Project(name=name, description=check_printable_text(description, what="the description"), extractor=choices.extractor, model=choices.model,
                      strategy=choices.strategy, normalisation=choices.normalisation,
                      superpixel_options=options.as_dict())
    session.add(project)
    session.flush()
    session.add(Membership(project_id=project.id, user_id=owner.id, role=Role.owner))
    for category in categories:
        add_category(session, project, category.name, color=category.color, hotkey=category.hotkey,
                     excluded=category.excluded)
    session.refresh(project)
    return project


def update_project(session: Session, project: Project, user: User, *, name: str | None = None,
                   description: str | None = None, choices: dict[str, str] | None = None) -> Project:
    """Rename, describe, or change what ``project`` computes with (``choices``: any of the
    :class:`ProjectChoices` fields by name), as ``user``; names are checked, against ``user``'s
    other projects, before anything changes."""
    changes = choices or {}
    unknown = set(changes) - {f.name for f in fields(ProjectChoices)}
    if unknown:
        raise ParameterError(f"unknown project choices {sorted(unknown)}; known: "
                             f"{', '.join(f.name for f in fields(ProjectChoices))}")
    current = {f.name: getattr(project, f.name) for f in fields(ProjectChoices)}
    check_choices(ProjectChoices(**{**current, **changes}))
    if name is not None:
        project.name = _name_free(session, name, user, but=project.id)
    if description is not None:
        project.description = check_printable_text(description, what="the description")
    for attribute, value in changes.items():
        setattr(project, attribute, value)
    session.flush()
    return project


def members(session: Session, project: Project) -> list[tuple[User, Role]]:
    """The project's members and the roles they act in, by user name: an admin acts as an owner in
    every project (:func:`~slidelabel.services.access.role_in`), whatever role its membership says."""
    rows = session.execute(select(User, Membership.role).join(Membership, User.id == Membership.user_id)
                           .where(Membership.project_id == project.id).order_by(User.username))
    return [(user, Role.owner if user.is_admin else role) for user, role in rows]


#: Rows of a project's labels, label history and reviews deleted per write transaction before
#: the project itself: one transaction of 1.7 million labels kept every other project's writes
#: waiting 7.5 s on SQLite (tenth attack).
DELETE_BATCH_ROWS = 50_000


def delete_project(database: Database, settings: Settings, *, project_id: int) -> None:
    """Remove the project with everything it holds, then its files (superpixels, features,
    models, uploads) once that is committed. :class:`ConflictError` while a job of it is queued
    or running: cancel those first. A cancelled job whose process still runs (it stops at its
    next progress report, or is killed) is waited for, :data:`~jobs.STOP_WAIT_S` at most, then
    refused as running: it must not write into the project's folders after they are removed, and
    Cancel then Delete at once should just work. Its labels, label history and reviews go first, in
    transactions of :data:`DELETE_BATCH_ROWS` (others write in between); a job started meanwhile
    still stops the delete, with the project left without them, as the error says."""
    with database.session() as session:
        if session.get(Project, project_id) is None:
            raise NotFoundError(f"no project {project_id}")
    jobs.wait_stopped(database, Job.project_id == project_id, stale_s=settings.job_stale_seconds)
    with database.session() as session:
        _refuse_active_jobs(session, project_id, "", stale_s=settings.job_stale_seconds)
    for table in (LabelEvent.__table__, Label.__table__, Review.__table__):
        while True:
            with database.session(write=True) as session:
                batch = select(table.c.id).where(table.c.project_id == project_id).limit(DELETE_BATCH_ROWS)
                if not session.execute(delete(table).where(table.c.id.in_(batch))).rowcount:
                    break
    with database.session(write=True) as session:
        project = session.get(Project, project_id)
        if project is None:
            raise NotFoundError(f"no project {project_id}")
        _refuse_active_jobs(session, project_id, " (its labels, their history and reviews are deleted already)",
                            stale_s=settings.job_stale_seconds)
        session.delete(project)
    # After the commit: a failed delete keeps the files; a failed removal leaves files nobody reads,
    # as no later project gets this id.
    files = ProjectFiles(settings.data_dir, project_id)
    for folder in (files.root, files.uploads):
        shutil.rmtree(folder, ignore_errors=True)


def _refuse_active_jobs(session: Session, project_id: int, note: str, *, stale_s: float) -> None:
    """:class:`ConflictError` (ending with ``note``) while a job of the project is queued or
    running, or was cancelled but its process still runs (:func:`jobs.still_stopping`)."""
    active = list(session.scalars(select(Job.id).where(
        Job.project_id == project_id, Job.state.in_([JobState.queued, JobState.running])).order_by(Job.id)))
    if active:
        raise ConflictError(f"jobs {', '.join(map(str, active))} of this project are queued or running; "
                            f"cancel them first{note}")
    stopping = list(session.scalars(select(Job.id).where(
        jobs.still_stopping(Job.project_id == project_id, stale_s=stale_s)).order_by(Job.id)))
    if stopping:
        raise ConflictError(f"{jobs.stopping_message(stopping)}{note}")


def projects_of(session: Session, user: User) -> list[tuple[Project, Role]]:
    """The projects ``user`` belongs to (all of them for an admin), with the user's role."""
    if user.is_admin:
        return [(p, Role.owner) for p in session.scalars(select(Project).order_by(Project.id))]
    rows = session.execute(
        select(Project, Membership.role).join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == user.id).order_by(Project.id)
    )
    return [(project, role) for project, role in rows]


def check_category_name(name: str) -> str:
    """``name`` stripped; :class:`ParameterError` unless it has 1 to :data:`CATEGORY_NAME_CHARS`
    characters, all printable (:func:`~slidelabel.services.names.check_printable_name`: a
    right-to-left override would make a legend read otherwise)."""
    return check_printable_name(name, what="category name", max_chars=CATEGORY_NAME_CHARS)


def room_for_categories(session: Session, project: Project, new: int) -> int:
    """The number of ``project``'s categories, after checking that ``new`` more stay within
    :data:`MAX_CATEGORIES` (else :class:`ParameterError` saying what to do)."""
    existing = session.scalar(select(func.count()).where(Category.project_id == project.id)) or 0
    if existing + new > MAX_CATEGORIES:
        raise ParameterError(
            f"a project has at most {MAX_CATEGORIES} categories; this one has {existing} and {new:,} new would make "
            f"{existing + new:,}: merge or delete categories first, or group the classes into fewer categories")
    return existing


def _check_category(name: str, color: str | None, hotkey: str | None) -> None:
    check_category_name(name)
    if color is not None and not _COLOR.fullmatch(color):
        raise ParameterError(f"colour {shown_input(color)} is not of the form #rrggbb")
    if hotkey is not None and (len(hotkey) != 1 or not hotkey.isprintable() or hotkey.isspace()):
        raise ParameterError(f"hotkey {shown_input(hotkey)} must be one printable character")


def category_ids_by_look(categories: Iterable[Category]) -> dict[str, int]:
    """Category id by the :func:`~slidelabel.services.names.look_alike_key` of its name: a name read
    from a file that looks like a category's ('Tumour', 'TUMOUR' for 'tumour') is that category
    (:func:`_category_name_free` keeps a project's names from looking alike)."""
    return {look_alike_key(category.name): category.id for category in categories}


def _category_name_free(session: Session, project_id: int, name: str, but: int | None = None) -> None:
    """:class:`ConflictError` when another category of the project has ``name`` or one that looks
    like it (:func:`~slidelabel.services.names.look_alike_key`: 'Tumour' and 'Тumour' with a
    Cyrillic 'Т' would be two categories an annotator cannot tell apart)."""
    others = select(Category.name).where(Category.project_id == project_id, Category.id != (but or 0))
    if (clash := look_alike(name, session.scalars(others))) is not None:
        looks = "" if clash == name else f", which looks like {shown_input(name)},"
        raise ConflictError(f"a category named {shown_input(clash)}{looks} exists in this project; choose another name")


def _hotkey_taken(session: Session, project_id: int, hotkey: str | None, but: int | None = None) -> None:
    if hotkey is None:
        return
    clash = session.scalar(select(Category).where(Category.project_id == project_id, Category.hotkey == hotkey,
                                                  Category.id != (but or -1)))
    if clash is not None:
        raise ConflictError(f"hotkey {hotkey!r} is taken by {clash.name!r}")


def _lock_categories(session: Session, project_id: int) -> None:
    """Hold the project's row until the transaction ends, so that category changes of one project
    happen one at a time: SQLite's write transaction excludes other writers already, PostgreSQL
    needs the lock (else two new categories could take one position)."""
    session.scalar(select(Project.id).where(Project.id == project_id).with_for_update())


def _next_position(session: Session, project_id: int) -> int:
    """The position of a new category of the project: after the last one, so that no category
    shares it and none of the others' mask values changes; past :data:`MAX_POSITION` (after
    many merges) the lowest position free (the caller has checked that one is)."""
    taken = set(session.scalars(select(Category.position).where(Category.project_id == project_id)))
    after = max(taken, default=-1) + 1
    if after <= MAX_POSITION:
        return after
    return next(position for position in range(MAX_POSITION + 1) if position not in taken)


def add_category(session: Session, project: Project, name: str, *, color: str | None = None,
                 hotkey: str | None = None, excluded: bool = False) -> Category:
    """A new category, last in the legend, at a position (its label-mask value - 1) no other
    category of the project has (:func:`_next_position`); colour from :data:`PALETTE` and hotkey
    1-9 by position when not given.
    :class:`ParameterError` for a name :func:`check_category_name` refuses, or in a project that
    has :data:`MAX_CATEGORIES` already."""
    _check_category(name, color, hotkey)
    _lock_categories(session, project.id)
    room_for_categories(session, project, 1)
    position = _next_position(session, project.id)
    _category_name_free(session, project.id, name.strip())
    if hotkey is None and position < 9:
        free = str(position + 1)
        taken = set(session.scalars(select(Category.hotkey).where(Category.project_id == project.id)))
        hotkey = free if free not in taken else None
    _hotkey_taken(session, project.id, hotkey)
    category = Category(project_id=project.id, name=name.strip(), color=color or PALETTE[position % len(PALETTE)],
                        hotkey=hotkey, excluded=excluded, position=position)
    session.add(category)
    session.flush()
    return category


def get_category(session: Session, project: Project, category_id: int) -> Category:
    category = session.get(Category, category_id)
    if category is None or category.project_id != project.id:
        raise NotFoundError(f"no category {category_id} in this project")
    return category


def update_category(session: Session, category: Category, *, name: str | None = None, color: str | None = None,
                    hotkey: str | None = None, excluded: bool | None = None) -> Category:
    """Rename, recolour, re-key or (un)exclude a category; labels keep pointing at it. Under the
    project's lock, as :func:`add_category` (on PostgreSQL two renames to look-alike names, or to
    one hotkey, both went through in 3-6 of 15 tries, the twenty-fifth attack)."""
    _check_category(name if name is not None else category.name, color, hotkey)
    _lock_categories(session, category.project_id)
    if name is not None and name.strip() != category.name:
        _category_name_free(session, category.project_id, name.strip(), but=category.id)
        category.name = name.strip()
    _hotkey_taken(session, category.project_id, hotkey, but=category.id)
    for attribute, value in (("color", color), ("hotkey", hotkey), ("excluded", excluded)):
        if value is not None:
            setattr(category, attribute, value)
    return category


def merge_categories(session: Session, source: Category, target: Category, user: User) -> int:
    """Move every label and review of ``source`` to ``target`` and delete ``source``; the moves
    enter the label history (previous category None: the source no longer exists), counted
    against each label's user's history quota of its slide as a stroke's changes are
    (:func:`~slidelabel.services.label_history.count_events`), and the
    predictions of earlier epochs read as ``target`` where they said ``source``
    (:func:`merged_categories`). The other categories keep their positions. Returns the labels
    moved."""
    if source.id == target.id or source.project_id != target.project_id:
        raise ParameterError("merge two different categories of the same project")
    # A stroke locks its slide, then (writing rows that refer to it) the project: the merge locks
    # the slides first too, so that neither waits for the other in a circle.
    slides = _locked_slides(session, source.project_id)
    _lock_categories(session, source.project_id)
    # One hop per merged id: what was merged into the source now reads as the target too.
    session.execute(update(CategoryMerge).where(CategoryMerge.target_id == source.id).values(target_id=target.id))
    session.add(CategoryMerge(source_id=source.id, project_id=source.project_id, target_id=target.id))
    # Set-based: the category may hold millions of labels, and ORM objects of them took minutes
    # and gigabytes while holding the write turn. A user has one label per superpixel, so the
    # moved labels collide with none of the target's; nor do reviews (one per superpixel).
    # The events' previous_category_id is left NULL: deleting the source below sets its id NULL
    # throughout the history anyway (ON DELETE SET NULL); writing it first cost a second update of
    # every new event.
    added = session.execute(select(Label.slide_id, Label.user_id, func.count()).where(Label.category_id == source.id)
                            .group_by(Label.slide_id, Label.user_id)).all()
    labels, events = Label.__table__, LabelEvent.__table__
    history = (select(labels.c.project_id, labels.c.slide_id, labels.c.user_id, labels.c.superpixel,
                      literal(target.id, Integer), labels.c.epoch, literal(utcnow(), events.c.at.type))
               .where(labels.c.category_id == source.id).order_by(labels.c.id))
    moved = session.execute(events.insert().from_select(
        ["project_id", "slide_id", "user_id", "superpixel", "category_id", "epoch", "at"], history)).rowcount
    session.execute(update(Label).where(Label.category_id == source.id).values(category_id=target.id))
    session.execute(update(Review).where(Review.category_id == source.id).values(category_id=target.id))
    for slide_id, user_id, count in added:  # each user's history of each slide, within its quota as a stroke's
        slide = slides.get(slide_id) or session.get(Slide, slide_id, with_for_update={"key_share": True})  # new
        label_history.count_events(session, slide, user_id, count)
    session.delete(source)
    return moved


def _locked_slides(session: Session, project_id: int) -> dict[int, Slide]:
    """The project's slides by id, each row locked as :func:`~slidelabel.services.labels.locked_slide`
    locks it, in the order of their ids (two merges wait for each other, not in a circle)."""
    rows = session.scalars(select(Slide).where(Slide.project_id == project_id).order_by(Slide.id)
                           .with_for_update(key_share=True))
    return {slide.id: slide for slide in rows}


def merged_categories(session: Session, project_id: int) -> dict[int, int]:
    """``{merged category id: the category it now reads as}`` of the project: the ids the
    predictions of epochs trained before a merge hold for categories since merged away
    (:meth:`slidelabel.store.predictions.SlidePredictions.merged`)."""
    rows = session.execute(select(CategoryMerge.source_id, CategoryMerge.target_id)
                           .where(CategoryMerge.project_id == project_id))
    return {source: target for source, target in rows}


def set_member(session: Session, project: Project, username: str, role: Role) -> Membership:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError(f"no user {shown_input(username)}")
    membership = session.get(Membership, (project.id, user.id))
    if membership is not None:
        _keep_an_owner(session, project, membership, role)  # first: the project's need says most
    if user.is_admin and role is not Role.owner:
        raise ConflictError(f"{shown_input(username)} is an admin, an owner of every project whatever its role here; "
                            "the server's admin may withdraw the admin right first (PATCH /users/{id})")
    if membership is None:
        membership = Membership(project_id=project.id, user_id=user.id, role=role)
        session.add(membership)
    else:
        membership.role = role
    session.flush()
    return membership


def remove_member(session: Session, project: Project, user_id: int) -> None:
    membership = session.get(Membership, (project.id, user_id))
    if membership is None:
        raise NotFoundError(f"user {user_id} is not in this project")
    _keep_an_owner(session, project, membership, None)
    session.delete(membership)


def _keep_an_owner(session: Session, project: Project, membership: Membership, new_role: Role | None) -> None:
    if membership.role != Role.owner or new_role == Role.owner:
        return
    owners = session.scalar(select(func.count()).where(Membership.project_id == project.id, Membership.role == Role.owner))
    if owners <= 1:
        raise ConflictError("a project needs an owner: make someone else owner first")
