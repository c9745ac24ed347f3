"""The one configuration object: :class:`Settings`, read from ``SLIDELABEL_*`` variables.

CLI flags override the environment (``slidelabel serve --db ...``); every default is embedded, so
a fresh machine needs no database or broker server: SQLite in the data folder, and Celery over
kombu's SQLAlchemy transport on a second SQLite file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/slidelabel`` or ``~/.local/share/slidelabel``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "slidelabel"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/slidelabel`` or ``~/.cache/slidelabel``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slidelabel"


class Settings(BaseSettings):
    """Where slidelabel keeps its data and how its parts reach each other."""

    model_config = SettingsConfigDict(env_prefix="SLIDELABEL_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    """Uploaded slides, superpixels, features, models, and the embedded database and broker."""
    db: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<data_dir>/slidelabel.sqlite``."""
    broker: str | None = None
    """Celery broker URL; default ``sqla+sqlite:///<data_dir>/broker.sqlite`` (no server)."""
    slide_folders: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Server folders that projects may add slides from; nothing outside them is readable."""
    slide_folder_readers: dict[Path, list[str]] = Field(default_factory=dict)
    """Slide folders shared with chosen accounts (folder -> usernames), besides the admin and the
    accounts granted every folder; JSON, e.g. ``{"/data/lab-a": ["alice", "bob"]}``."""
    upload_limit_mb: int = 20_000
    """Largest slide upload (MB)."""
    max_slide_megapixels: int = Field(default=40_000, ge=1)
    """Most level-0 pixels a slide added to a project may declare (millions)."""
    max_unpyramided_megapixels: int = Field(default=500, ge=1)
    """Most pixels of a slide's smallest stored level (millions): a thumbnail decodes all of it."""
    max_decoded_mb: int = Field(default=128, ge=1)
    """Largest stored strip or tile of a slide, decoded (MB): readers decode each one whole."""
    max_body_mb: int = Field(default=10, ge=1)
    """Largest request body other than a slide upload (MB)."""
    response_cache_mb: int = Field(default=256, ge=0)
    """Memory for rendered tiles and pictures kept by each API process (MB); 0 keeps none."""
    admin_password: str | None = None
    """Password of the ``admin`` user created on first start; printed once when not given."""
    token_hours: float = 24.0 * 14
    """How long a login token lasts (hours)."""
    open_project_creation: bool = False
    """Every account may create projects; otherwise the admin and the accounts it grants it to."""
    login_failures_per_account: int = Field(default=10, ge=1)
    """Failed logins to one account from one client address within ``login_window_s`` before that
    address's logins to it get 429 (the account's owner elsewhere can still log in)."""
    login_failures_per_account_all_addresses: int = Field(default=200, ge=1)
    """Failed logins to one account from all addresses within ``login_window_s`` before all its
    logins get 429: a bound on guessing one password from many addresses."""
    login_failures_per_address: int = Field(default=50, ge=1)
    """Failed logins from one client address within ``login_window_s`` before its logins get 429."""
    login_window_s: float = Field(default=300.0, gt=0)
    """How long failed logins are counted (s), from the first one of a run of failures."""
    job_stale_seconds: float = 90.0
    """A running job whose heartbeat is older than this lost its worker and is requeued: longer
    than SQLite's 60 s wait for its write lock, so that a heartbeat kept waiting behind a long
    write (a large import or merge) does not make a live job look dead (s)."""
    worker_max_memory_mb: int = Field(default=512, ge=0)
    """A worker's pool process resident after a job in more than this (MB, shared pages included)
    is replaced by a fresh one, so memory a job left behind is given back; 0 keeps every process
    (for workers that should keep a loaded foundation model from one job to the next)."""
    max_superpixels_per_slide: int = Field(default=4_000_000, ge=1, le=(1 << 24) - 1)
    """Most superpixels a slide's computed superpixels may have, counted as the seeds of its grid
    (working width / step x working height / step, tissue or not): a job holds about 90 bytes per
    seed in memory (360 MB at the default), and its features and labels grow with the count. The
    superpixel tiles pack ids into 24 bits, which caps it at 16,777,215."""
    superpixel_cache_mb: int = Field(default=8192, ge=0)
    """Most disk a superpixel job's temporary window cache may take (MB, compressed): pass 1 keeps
    the pixels pass 2 needs up to this, and pass 2 reads the rest from the slide again; the cache
    also never leaves its disk with less than 5% (at least 1 GB) free. 0 keeps none."""
    job_time_limit_slide_s: float = Field(default=6 * 3600.0, gt=0)
    """Longest run of a slide job (superpixels, features, prepare), in s; it then stops as failed."""
    job_time_limit_epoch_s: float = Field(default=3600.0, gt=0)
    """Longest run of an epoch job (train, predict, rank), in s; it then stops as failed."""
    request_head_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a client may take to send a request's head (request line and headers), from its
    connection or, on a kept-alive one, from the request's first byte (s); the connection is then
    closed, with 408 if part of a head came."""
    request_body_timeout_s: float = Field(default=60.0, gt=0)
    """Longest a request body may stop arriving while the server is reading it (s), and the window
    over which it must average at least 1 KiB/s (60 KiB at the default); the connection is then
    closed and the route sees a client disconnect."""
    max_connections_per_address: int = Field(default=100, ge=0)
    """Most open connections from one client address to each API process, and most of its requests
    being answered there at once (a request goes on after its client hangs up); past either a new
    one is answered 503. 0: no bound, e.g. behind a reverse proxy that bounds them itself."""
    max_connections: int = Field(default=4096, ge=1)
    """Most open connections to each API process (lowered to leave a quarter of its open-file
    limit to files); at it a new connection replaces the one that has waited longest for a request
    head, else the one whose body arrives slowest (in its body for a window at least), or is
    answered 503 and closed when there is neither."""
    forwarded_allow_ips: str = ""
    """Addresses of reverse proxies whose ``X-Forwarded-For`` header names the client (comma
    separated, ``*`` for any); empty: none, and every client is the address it connects from. A
    trusted header decides whose bounds and login limits a request counts against: trusting it
    from ``127.0.0.1`` let one local client name a new address in each request and escape them
    all (the nineteenth attack: another user's login waited 79 s)."""
    host: str = "127.0.0.1"
    port: int = 8000
    cache: Path = Field(default_factory=default_cache_dir)
    """Downloaded samples (``samples/``) and model weights (``models/<name>/``)."""
    models: Path | None = None
    """A folder of model weights, one subfolder per model (``uni/``, ``sam/``, ...), looked in
    before ``<cache>/models/`` and the Hugging Face cache."""
    foundation_model: str = "uni"
    """The backbone of the ``foundation`` feature extractor: ``uni``, ``uni2-h``, ``phikon`` or
    ``phikon-v2`` (its weights are looked for as ``models`` says)."""
    sam_model: Path | None = None
    """Folder of a Segment Anything model (SAM, SAM-HQ or SAM 2 as ``transformers`` saves them:
    ``config.json``, weights and the processor's config) for the smart tool; default
    ``$SLIDELABEL_MODELS/sam/``, else the Hugging Face cache of facebook/sam-vit-base. Without one
    the smart tool proposes superpixels grown to similar ones."""

    @field_validator("slide_folders", mode="before")
    @classmethod
    def _split_folders(cls, value: object) -> object:
        """``SLIDELABEL_SLIDE_FOLDERS=/a:/b`` as well as a JSON list."""
        if isinstance(value, str):
            return json.loads(value) if value.lstrip().startswith("[") else [p for p in value.split(os.pathsep) if p]
        return value

    @model_validator(mode="after")
    def _shared_folders_are_slide_folders(self) -> Settings:
        folders = {Path(folder).resolve() for folder in self.slide_folders}
        if strays := [str(folder) for folder in self.slide_folder_readers if Path(folder).resolve() not in folders]:
            raise ValueError(f"SLIDELABEL_SLIDE_FOLDER_READERS names {', '.join(strays)}, not among "
                             "SLIDELABEL_SLIDE_FOLDERS: add it there or remove it")
        return self

    @property
    def database_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'slidelabel.sqlite'}"

    @property
    def broker_url(self) -> str:
        return self.broker or f"sqla+sqlite:///{self.data_dir / 'broker.sqlite'}"

    @property
    def embedded_broker(self) -> bool:
        """True when the broker lives in the data folder, so ``serve`` runs the worker itself."""
        return self.broker is None
