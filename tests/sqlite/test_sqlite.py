"""hold.sqlite on a file remote, with real SQLite: the WAL reader, a round trip to a new
data directory, restore at a time, the writer's lease, and bad input."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.errors import (
    ConfigError,
    ConflictError,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    TimedOut,
)
from cargohold.hold import Hold
from cargohold.sqlite import restore
from cargohold.sqlite._wal import read_committed, read_header


def open_hold(tmp_path: Path, data: str, **settings: object) -> Hold:
    return cargohold.open(
        (tmp_path / "remote").as_uri(),
        data_dir=tmp_path / data,
        signal_handlers=False,
        lease_ttl=settings.pop("lease_ttl", 1.0),
        **settings,
    )


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    with open_hold(tmp_path, "a") as opened:
        yield opened


def insert(path: Path, *values: int) -> None:
    con = sqlite3.connect(path)
    try:
        for value in values:
            with con:
                con.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v TEXT)")
                con.execute("INSERT INTO t (n, v) VALUES (?, ?)", (value, f"row {value}"))
    finally:
        con.close()


def rows(path: Path) -> list[int]:
    con = sqlite3.connect(path)
    try:
        return [n for (n,) in con.execute("SELECT n FROM t ORDER BY n")]
    finally:
        con.close()


def in_forked_child(body: Callable[[], bool]) -> bool:
    """Run ``body`` in a forked child and return what it returned (False if it raised)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() else 3
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    return answer == b"\x00"


def remote_keys(tmp_path: Path) -> list[str]:
    root = tmp_path / "remote"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_the_wal_reader_takes_whole_transactions_with_a_valid_checksum_chain(
    tmp_path: Path,
) -> None:
    db = tmp_path / "w.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)")
    for n in range(5):
        con.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 100))
    wal = Path(f"{db}-wal")
    start = read_header(wal)
    assert start is not None
    chunk = read_committed(wal, start, max_bytes=1 << 30)
    assert chunk is not None
    assert chunk.commits == 6  # the CREATE TABLE and five inserts
    # A torn last frame (one byte of its page changed) breaks the chain: the last
    # transaction is not taken, every earlier one is.
    data = bytearray(wal.read_bytes())
    data[-10] ^= 0xFF
    wal.write_bytes(bytes(data))
    torn = read_committed(wal, start, max_bytes=1 << 30)
    assert torn is not None
    assert torn.commits == 5
    assert torn.end.frames < chunk.end.frames
    con.close()


def test_a_database_comes_back_in_a_new_data_directory(tmp_path: Path) -> None:
    with open_hold(tmp_path, "a") as first:
        path = first.sqlite("app.db")
        insert(path, 1, 2, 3)
        first.flush()
        status = first.sqlite_status("app.db")
        assert status.writer
        assert status.pending_transactions == 0
        assert status.lag_seconds == 0
        generation = status.generation
    with open_hold(tmp_path, "b") as second:  # a new container: nothing local
        path = second.sqlite("app.db")
        assert rows(path) == [1, 2, 3]
        insert(path, 4)
        second.flush()
        assert second.sqlite_status("app.db").generation > generation
    dest = tmp_path / "restored.db"
    report = restore(cargohold.open_remote((tmp_path / "remote").as_uri()), "app.db", dest)
    assert rows(dest) == [1, 2, 3, 4]
    assert report.generation > generation


def test_pending_transactions_are_reported_until_shipped(hold: Hold) -> None:
    path = hold.sqlite("app.db", interval=3600)  # only flush ships here
    insert(path, 1, 2)
    status = hold.sqlite_status("app.db")
    assert status.pending_transactions == 3  # the table, then two rows
    assert status.lag_seconds >= 0
    hold.flush()
    assert hold.sqlite_status("app.db").pending_transactions == 0


def test_restore_at_a_time_gives_the_state_shipped_by_then(tmp_path: Path, hold: Hold) -> None:
    path = hold.sqlite("app.db", interval=3600)
    insert(path, 1, 2)
    hold.flush()
    between = time.time()
    insert(path, 3)
    hold.flush()
    remote = hold.remote
    restore(remote, "app.db", tmp_path / "then.db", at=between)
    restore(remote, "app.db", tmp_path / "now.db")
    assert rows(tmp_path / "then.db") == [1, 2]
    assert rows(tmp_path / "now.db") == [1, 2, 3]
    with pytest.raises(NotFoundError, match="no state that old"):
        restore(remote, "app.db", tmp_path / "never.db", at=between - 3600)
    with pytest.raises(InvalidInput, match="already exists"):
        restore(remote, "app.db", tmp_path / "now.db")


def test_many_transactions_survive_the_replicators_own_checkpoints(
    tmp_path: Path, hold: Hold
) -> None:
    path = hold.sqlite("app.db", interval=3600)
    con = sqlite3.connect(path)
    for n in range(1, 601):
        with con:
            con.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v TEXT)")
            con.execute("INSERT INTO t VALUES (?, ?)", (n, "y" * 3000))  # a page and more each
        if n % 50 == 0:
            hold.flush()  # ships, and checkpoints past 1000 frames: the WAL restarts
    con.close()
    hold.flush()
    restore(hold.remote, "app.db", tmp_path / "copy.db")
    assert rows(tmp_path / "copy.db") == list(range(1, 601))


def test_a_corrupt_segment_is_an_integrity_error_and_nothing_is_written(
    tmp_path: Path, hold: Hold
) -> None:
    path = hold.sqlite("app.db", interval=3600)
    insert(path, 1, 2)
    hold.flush()
    segment = next(p for p in (tmp_path / "remote").rglob("*") if "/wal/" in p.as_posix())
    # Damage the stored object on the volume, as a failing disk would (no server
    # produces this on demand).
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF
    segment.write_bytes(bytes(data))
    dest = tmp_path / "out.db"
    with pytest.raises(IntegrityError, match="damaged") as caught:
        restore(hold.remote, "app.db", dest)
    assert "/wal/" in str(caught.value.key)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.db")] == []


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path, hold: Hold) -> None:
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    with pytest.raises(InvalidInput, match="not an SQLite database"):
        hold.sqlite("notes.db", path=text)
    assert text.read_text() == "not a database"
    assert remote_keys(tmp_path) == []


def test_a_rollback_journal_database_is_switched_to_wal(tmp_path: Path, hold: Hold) -> None:
    db = tmp_path / "old.db"
    insert(db, 1)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()
    hold.sqlite("old.db", path=db)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_a_database_held_in_exclusive_rollback_mode_is_refused_with_the_reason(
    tmp_path: Path, hold: Hold
) -> None:
    db = tmp_path / "busy.db"
    insert(db, 1)
    other = sqlite3.connect(db)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("SELECT * FROM t").fetchall()  # takes the exclusive lock's shared half
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ConfigError, match="WAL"):
            hold.sqlite("busy.db", path=db, wait=0)
    finally:
        other.rollback()
        other.close()


def test_a_remote_holding_another_database_under_the_name_is_refused(
    tmp_path: Path, hold: Hold
) -> None:
    path = hold.sqlite("app.db")
    insert(path, 1)
    hold.flush()
    before = remote_keys(tmp_path)
    with open_hold(tmp_path, "b") as other:
        mine = tmp_path / "mine.db"
        insert(mine, 7)
        hold.close()  # the first gives the lease up: the refusal is about the data
        with pytest.raises(ConflictError, match="different database"):
            other.sqlite("app.db", path=mine)
    assert rows(mine) == [7]
    assert [k for k in remote_keys(tmp_path) if "lease" not in k] == [
        k for k in before if "lease" not in k
    ]


def test_a_second_writer_waits_for_the_lease_and_names_the_holder(
    tmp_path: Path, hold: Hold
) -> None:
    hold.sqlite("app.db")
    with (
        open_hold(tmp_path, "b") as other,
        pytest.raises(TimedOut, match="written by another instance"),
    ):
        other.sqlite("app.db", wait=0.2)


def test_bad_names_are_refused(hold: Hold) -> None:
    with pytest.raises(InvalidInput, match="letters, digits"):
        hold.sqlite("../escape.db")
    with pytest.raises(InvalidInput, match="interval"):
        hold.sqlite("app.db", interval=0)


@pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX")
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork.*:DeprecationWarning")
def test_a_forked_child_does_not_replicate_and_its_commits_are_shipped_by_the_parent(
    tmp_path: Path, hold: Hold
) -> None:
    path = hold.sqlite("app.db", interval=3600)
    insert(path, 1)
    hold.flush()

    def child() -> bool:  # a gunicorn --preload worker, say
        status = hold.sqlite_status("app.db")
        insert(path, 2)  # with a connection of its own, as SQLite requires
        return not status.writer

    assert in_forked_child(child)
    assert hold.sqlite_status("app.db").writer
    hold.flush()  # the parent ships what the child committed
    restore(hold.remote, "app.db", tmp_path / "both.db")
    assert rows(tmp_path / "both.db") == [1, 2]
