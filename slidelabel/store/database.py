"""Connecting to the database: engines, sessions and migrations to the newest schema.

SQLite (the embedded default) runs in WAL mode so readers never wait for the writer, with foreign
keys on and a generous busy timeout; a write transaction takes the write lock when it begins
(``BEGIN IMMEDIATE``), so two writers queue instead of failing on a lock upgrade. Writers of one
process also queue on a lock of their own (the write turn) before that: SQLite's busy handler polls with sleeps of
up to 100 ms, so under contention a waiting writer can miss the lock for seconds while newcomers
take it; a process lock hands it over in order. The write-ahead log starts over only when a writer
begins after a checkpoint copied all of it and no reader is on its pages; busy writers taking turns
never leave such a moment, so the writer that committed past a bound checkpoints and empties it
before giving its turn on (:class:`_WalBound`). PostgreSQL needs nothing special.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from slidelabel.errors import BusyError, ParameterError

MIGRATIONS = Path(__file__).with_name("migrations")
#: How long a SQLite writer waits for the lock before giving up (ms).
SQLITE_BUSY_MS = 60_000
#: SQLite connections kept open, and opened beyond them at busy times: more than an API process's
#: 40 request threads, each of which may hold one while it waits for the write turn (a SQLite
#: connection costs a file handle and its page cache). SQLAlchemy's 5 + 10 made 60 concurrent
#: writers wait 30 s for a connection and answer 500.
SQLITE_POOL_SIZE, SQLITE_POOL_OVERFLOW = 8, 56
#: Page cache of each SQLite connection (KiB; SQLite's default is 2,000): the file's pages stay in
#: the operating system's cache, shared by every connection, so 64 connections need not keep
#: 128 MB of copies.
SQLITE_CACHE_KIB = 512
#: Bytes the write-ahead log is cut back to after a checkpoint: without a limit it keeps the size
#: of its busiest moment (1.1 GB after an annotator's scripted 100,000-superpixel batches).
SQLITE_WAL_LIMIT_BYTES = 64 * 2**20
#: Past that limit, the writer that committed empties the log (``wal_checkpoint(TRUNCATE)``), the
#: database's writers waiting meanwhile. It waits for readers still on the log's pages up to
#: SQLITE_CHECKPOINT_WAIT_MS (ms); when they kept it from finishing, the next try comes
#: SQLITE_CHECKPOINT_RETRY_S (s) later at the earliest.
SQLITE_CHECKPOINT_WAIT_MS, SQLITE_CHECKPOINT_RETRY_S = 200, 1.0
#: Past SQLITE_WAL_CAP_BYTES it waits up to SQLITE_CAP_WAIT_MS (ms) for them: a read of a
#: 600,000-superpixel slide's labels takes 3 s. A reader holding its snapshot longer still (a slow
#: download) holds writes back for that long once per SQLITE_CAP_RETRY_S (s) at most.
SQLITE_WAL_CAP_BYTES = 2 * SQLITE_WAL_LIMIT_BYTES
SQLITE_CAP_WAIT_MS, SQLITE_CAP_RETRY_S = 5_000, 3.0


#: SQLSTATE of a foreign-key violation (PostgreSQL's drivers); SQLite says it in words only.
_FOREIGN_KEY_VIOLATION = "23503"
_SQLITE_FOREIGN_KEY = "FOREIGN KEY constraint failed"


def foreign_key_violation(error: IntegrityError) -> bool:
    """Whether ``error`` is a write refused because a row it refers to does not exist (deleted by
    another request meanwhile), rather than a unique or other constraint."""
    original = error.orig
    code = getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)
    return code == _FOREIGN_KEY_VIOLATION or _SQLITE_FOREIGN_KEY in str(original)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # The driver's own transaction handling would BEGIN lazily (deferred); slidelabel begins
    # explicitly below.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_LIMIT_BYTES}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """BEGIN, IMMEDIATE for a write transaction, after taking the process's write turn when the
    connection's options carry one (released when the transaction ends: :func:`_sqlite_end`)."""
    options = connection.get_execution_options()
    turn = options.get("write_turn")
    if turn is not None and not turn.acquire(timeout=SQLITE_BUSY_MS / 1000):
        raise BusyError(f"the database stayed busy for {SQLITE_BUSY_MS / 1000:.0f} s; try again")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get("write") else "BEGIN DEFERRED")
    except BaseException:
        if turn is not None:
            turn.release()
        raise
    if turn is not None:
        connection.info["write_turn"] = turn


def _sqlite_end(connection: Connection) -> None:
    turn = connection.info.pop("write_turn", None)
    if turn is not None:
        turn.release()


class _WalBound:
    """Keeps the write-ahead log ``wal`` of a SQLite file near ``SQLITE_WAL_LIMIT_BYTES``.

    SQLite's own checkpoint after each commit copies the log into the database while the next
    writer already appends to it (it has the write turn), so under back-to-back writers the log
    never starts over (2 GB after 45 s of an annotator's two parallel 100,000-superpixel batches).
    Once the log is past the limit, a write transaction's commit therefore happens here, before
    the write turn is given on, and the committing connection checkpoints the log and truncates
    it to nothing: a short wait for readers on its pages first, then, past
    ``SQLITE_WAL_CAP_BYTES``, one as long as a read of a large slide's labels takes (an export
    looping beside a writer grew it to 1.4 GB otherwise). Below the limit, SQLite's checkpoints
    keep running beside the next writer (holding the turn through them cut the writes of two
    parallel batches by a third).
    """

    def __init__(self, wal: Path) -> None:
        self._wal = wal
        # time.monotonic() s of the next try below and above the cap; only the write turn's holder
        # reads and sets them.
        self._retry_at = {False: 0.0, True: 0.0}

    def commit(self, connection: Connection) -> None:
        """SQLAlchemy's commit event (before its own COMMIT, which then has nothing left to do
        when the log is emptied): give the write turn on, after emptying the log if due."""
        try:
            if connection.get_execution_options().get("write"):
                self._empty_when_due(connection)
        finally:
            _sqlite_end(connection)

    def _empty_when_due(self, connection: Connection) -> None:
        size = self._size()
        capped = size > SQLITE_WAL_CAP_BYTES
        if size <= SQLITE_WAL_LIMIT_BYTES or time.monotonic() < self._retry_at[capped]:
            return
        connection.exec_driver_sql("COMMIT")
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_CAP_WAIT_MS if capped else SQLITE_CHECKPOINT_WAIT_MS}")
            busy, pages, _copied = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:  # the transaction is committed: a checkpoint failing is a try
            busy, pages = 1, 0
        finally:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cursor.close()
        # pages -1: another connection's checkpoint was running (SQLite waits for none), which cost
        # no wait; the next commit tries again.
        readers_kept_it = busy and pages != -1
        retry = SQLITE_CAP_RETRY_S if capped else SQLITE_CHECKPOINT_RETRY_S
        self._retry_at[capped] = time.monotonic() + retry if readers_kept_it else 0.0

    def _size(self) -> int:
        try:
            return self._wal.stat().st_size
        except FileNotFoundError:
            return 0


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql://...``); a SQLite file's
    folder is created."""
    try:
        parsed = make_url(url)
    except Exception as error:  # sqlalchemy raises ArgumentError with its own wording
        raise ParameterError(f"{url!r} is not a database URL (e.g. sqlite:///data.sqlite or postgresql://host/db)") from error
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_MS / 1000},
                               pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_OVERFLOW)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "rollback", _sqlite_end)
        in_memory = not parsed.database or parsed.database == ":memory:"
        event.listen(engine, "commit", _sqlite_end if in_memory else _WalBound(Path(f"{parsed.database}-wal")).commit)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction for migrations. On SQLite its foreign keys are off meanwhile
    (Alembic rebuilds tables, and dropping a table with them on deletes every row referring to
    it) and checked before the commit."""
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:  # on the driver's connection: the pragma does nothing inside a transaction
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("a migration left rows referring to missing ones; nothing was changed")
        finally:
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with migration_connection(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; PostgreSQL's row locks need no turns.
        turn = {"write_turn": threading.Lock()} if self.engine.dialect.name == "sqlite" else {}
        self._writes = sessionmaker(self.engine.execution_options(write=True, **turn), expire_on_commit=False)

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session committed on success, rolled back on error. ``write=True`` takes SQLite's
        write lock when its transaction begins (at its first statement, in the thread that runs
        it) until it ends: read-modify-write transactions one at a time per process, in the order
        they asked. A web request's write session so begins in the request's thread and commits on
        the event loop, and no thread waits for the lock while holding one that another needs."""
        with (self._writes if write else self._sessions)() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()
