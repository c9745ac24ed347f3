"""The embedded SQLite database: concurrent writers of one process take turns, none fails."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from slidelabel.errors import BusyError
from slidelabel.store import database as database_module
from slidelabel.store.database import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'test.sqlite'}")
    with db.session(write=True) as session:
        session.execute(text("CREATE TABLE counter (n INTEGER)"))
        session.execute(text("INSERT INTO counter VALUES (0)"))
    yield db
    db.dispose()


def test_twenty_threads_incrementing_lose_no_write(db: Database):
    def increment() -> None:
        for _ in range(10):
            with db.session(write=True) as session:  # read-modify-write: needs the write lock from the start
                n = session.execute(text("SELECT n FROM counter")).scalar_one()
                session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    threads = [threading.Thread(target=increment) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with db.session() as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 200


def test_readers_do_not_wait_for_a_writer(db: Database):
    with db.session(write=True) as writer:
        writer.execute(text("UPDATE counter SET n = 5"))
        with db.session() as reader:  # WAL: the reader sees the last committed value at once
            assert reader.execute(text("SELECT n FROM counter")).scalar_one() == 0


def test_a_writer_kept_waiting_too_long_gets_a_busy_error(db: Database, monkeypatch):
    monkeypatch.setattr(database_module, "SQLITE_BUSY_MS", 50)
    outcome: list[BaseException] = []

    def second_writer() -> None:
        try:
            with db.session(write=True) as session:
                session.execute(text("SELECT 1"))  # the transaction, and the wait for the turn, begin here
        except BusyError as error:
            outcome.append(error)

    with db.session(write=True) as session:
        session.execute(text("SELECT 1"))
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
    assert len(outcome) == 1 and "busy" in str(outcome[0])


def test_a_write_that_fails_or_times_out_gives_the_turn_back(db: Database, monkeypatch):
    monkeypatch.setattr(database_module, "SQLITE_BUSY_MS", 50)
    with pytest.raises(ZeroDivisionError), db.session(write=True) as session:
        session.execute(text("SELECT 1"))
        1 / 0
    outcome: list[str] = []

    def writer() -> None:
        try:
            with db.session(write=True) as session:
                session.execute(text("SELECT 1"))
            outcome.append("wrote")
        except BusyError:
            outcome.append("busy")

    with db.session(write=True) as session:
        session.execute(text("SELECT 1"))
        late = threading.Thread(target=writer)
        late.start()
        late.join()
    writer()
    assert outcome == ["busy", "wrote"]


def test_the_wal_file_is_cut_back_after_a_large_write(db: Database, tmp_path: Path):
    """A burst of writes grew the WAL file to 1.1 GB and it kept that size; now it is truncated
    to SQLITE_WAL_LIMIT_BYTES at the next checkpoint."""
    wal = tmp_path / "test.sqlite-wal"
    limit = database_module.SQLITE_WAL_LIMIT_BYTES
    with db.session(write=True) as session:
        session.execute(text("CREATE TABLE blob (data BLOB)"))
    with db.session(write=True) as session:  # a transaction larger than the limit, all in the WAL
        for _ in range(2 * limit // 2**20 + 8):
            session.execute(text("INSERT INTO blob VALUES (randomblob(1048576))"))
    grown = wal.stat().st_size
    with db.session() as session:  # what SQLite does by itself after 1,000 pages
        session.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))
    with db.session(write=True) as session:  # the next writer starts the log over, cut back
        session.execute(text("UPDATE counter SET n = 1"))
    assert grown > 2 * limit
    assert wal.stat().st_size <= limit, f"the WAL stays at {wal.stat().st_size / 2**20:.0f} MB"
