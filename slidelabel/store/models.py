"""The sparse, human side of slidelabel in SQL: users, projects, slides, labels, reviews, jobs.

Dense per-superpixel data (label maps, features, predictions) lives in files (see
:mod:`slidelabel.store.layout`); these tables hold who did what. Schema changes go through Alembic
migrations in :mod:`slidelabel.store.migrations`, which a test keeps equal to these classes.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Constraint names that Alembic can refer to on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


#: SQLite hands a deleted row's id to the next row unless the table is AUTOINCREMENT; the ids of
#: these tables name folders and URLs, so they are never reused (PostgreSQL's sequences never do).
NEVER_REUSED = {"sqlite_autoincrement": True}


class Role(enum.StrEnum):
    """A user's role in a project, weakest first."""

    viewer = "viewer"
    annotator = "annotator"
    reviewer = "reviewer"
    owner = "owner"


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class User(Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A disabled account cannot log in and its tokens are refused at the next request."""
    can_create_projects: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Granted by the admin (or by ``Settings.open_project_creation`` for every account)."""
    can_read_slide_folders: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Granted by the admin: may list and add slides from the server's slide folders."""


class Token(Base):
    """A login token; only its SHA-256 is stored, so a database leak gives no session away."""

    __tablename__ = "tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    user: Mapped[User] = relationship()


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    """Unique among the projects of each member (not server-wide: that would tell anyone which
    names other users' projects have)."""
    description: Mapped[str] = mapped_column(Text, default="")
    superpixel_options: Mapped[dict] = mapped_column(JSON, default=dict)
    """:class:`slidelabel.services.superpixels.SuperpixelOptions` as a dict (size as "50um")."""
    extractor: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(100))
    strategy: Mapped[str] = mapped_column(String(100))
    normalisation: Mapped[str] = mapped_column(String(100), server_default="none")
    """How differences of stain and scanner between slides are removed (a name of
    :data:`slidelabel.pipelines.normalisation.NORMALISATIONS`)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    categories: Mapped[list[Category]] = relationship(
        back_populates="project", order_by="Category.position", cascade="all, delete-orphan"
    )


class Membership(Base):
    __tablename__ = "memberships"

    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=20))

    user: Mapped[User] = relationship()


class Category(Base):
    """A tissue class of a project. ``excluded`` ones (glass, artefact) are never trained on nor
    suggested; ``position`` orders the legend and gives the default hotkeys."""

    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("project_id", "name"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    color: Mapped[str] = mapped_column(String(7))
    """``#rrggbb``."""
    hotkey: Mapped[str | None] = mapped_column(String(1), nullable=True)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)

    project: Mapped[Project] = relationship(back_populates="categories")


class CategoryMerge(Base):
    """A category merged into another (:func:`slidelabel.services.projects.merge_categories`):
    the predictions of epochs trained before hold the deleted ``source_id`` (ids are never
    reused), which reads as ``target_id``. One hop: merging the target later moves the row on."""

    __tablename__ = "category_merges"

    source_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"), index=True)


class Slide(Base):
    __tablename__ = "slides"
    __table_args__ = (UniqueConstraint("project_id", "name"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    """Absolute path of the slide file: an upload in the data folder or a file of an allowed folder."""
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    mpp: Mapped[float | None] = mapped_column(Float, nullable=True)
    superpixels: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Number of superpixels once computed."""
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Label(Base):
    """The current label of one superpixel by one user; :class:`LabelEvent` keeps the history."""

    __tablename__ = "labels"
    __table_args__ = (
        UniqueConstraint("user_id", "slide_id", "superpixel", name="uq_labels_user_slide_superpixel"),
        Index("ix_labels_slide_superpixel", "slide_id", "superpixel"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    superpixel: Mapped[int] = mapped_column(Integer)
    """Superpixel id in the slide's label map (1..N)."""
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    """The project's epoch (model version) the user saw when labelling."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LabelEvent(Base):
    """One change of a label: ``category_id`` None is a removal, ``previous_category_id`` None a
    first label."""

    __tablename__ = "label_events"
    __table_args__ = (Index("ix_label_events_slide_superpixel", "slide_id", "superpixel"),
                      Index("ix_label_events_slide_user_id", "slide_id", "user_id", "id"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    superpixel: Mapped[int] = mapped_column(Integer)
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"), nullable=True)
    previous_category_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="SET NULL"), nullable=True
    )
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LabelHistorySize(Base):
    """How many :class:`LabelEvent` rows one user's history of one slide holds: the count its
    quota is checked against (:mod:`slidelabel.services.label_history`)."""

    __tablename__ = "label_history_sizes"

    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger, default=0)


class Review(Base):
    """A reviewer's verdict on a superpixel; it overrides every user's label for training."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("slide_id", "superpixel", name="uq_reviews_slide_superpixel"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    slide_id: Mapped[int] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"))
    superpixel: Mapped[int] = mapped_column(Integer)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Epoch(Base):
    """One trained model of a project and the predictions and ranking made with it."""

    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("project_id", "number"), NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    labels: Mapped[int] = mapped_column(Integer, default=0)
    """Labelled superpixels it was trained on."""
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    """Cross-validated scores and the chosen model."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """Background work run by a Celery worker: its state, progress and log for the API.

    ``key`` identifies the work itself (kind, slide, options): asking again for a finished job
    with the same key returns it instead of running it twice.
    """

    __tablename__ = "jobs"
    # Fair turns (services/jobs.steps_back) look up the queued jobs and each starter's last start.
    __table_args__ = (Index("ix_jobs_state", "state"), Index("ix_jobs_created_by_started_at", "created_by", "started_at"),
                      NEVER_REUSED)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    slide_id: Mapped[int | None] = mapped_column(ForeignKey("slides.id", ondelete="CASCADE"), nullable=True)
    kind: Mapped[str] = mapped_column(String(50))
    key: Mapped[str] = mapped_column(String(255), index=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[JobState] = mapped_column(Enum(JobState, native_enum=False, length=20), default=JobState.queued)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    """0..1."""
    message: Mapped[str] = mapped_column(Text, default="")
    log: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    celery_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """Last sign of life of the worker running it; a running job silent for long is requeued."""
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """When a worker last began running it: its project's turn on its queue (fair turns)."""
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class GalleryOverlay(enum.StrEnum):
    """What a gallery link draws over its slides."""

    labels = "labels"
    predictions = "predictions"


class GalleryLink(Base):
    """A read-only link to a project, or to some of its slides, that opens without an account.

    Only the SHA-256 of the link's token is stored (as for :class:`Token`): a database leak gives
    no link away, and a lost token cannot be shown again, only revoked and replaced.
    """

    __tablename__ = "gallery_links"
    __table_args__ = NEVER_REUSED

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    slide_ids: Mapped[list] = mapped_column(JSON, default=list)
    """Ids of the slides shown; empty: every slide of the project, those added later included."""
    overlay: Mapped[GalleryOverlay] = mapped_column(Enum(GalleryOverlay, native_enum=False, length=20))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
