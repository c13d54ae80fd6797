"""Rows read or written lately are answered from memory (cargohold._hot_rows) only while
nothing else changed the index: a write by this thread, another thread or another process
is seen by the very next get."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold._hot_rows import MAX_VALUE, HotRows
from cargohold.errors import NotFoundError
from cargohold.hold import Hold
from cargohold.local import _ENTRIES_PAGE, LocalTier
from testsupport.children import ask, line_child

WRITER = textwrap.dedent(
    """
    import sys
    import cargohold
    remote, data_dir, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with cargohold.open(remote, data_dir=data_dir, signal_handlers=False) as hold:
        print("READY", flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[0] == "put":
                hold.put(key, command[1].encode())
            elif command[0] == "count":
                for i in range(1, count + 1):
                    hold.put(key, str(i).encode())
            elif command[0] == "delete":
                hold.delete(key)
            print("DONE", flush=True)
    """
)


def _writer(remote: str, data_dir: Path, key: str, count: int = 0) -> Any:
    """A process writing ``key`` on the same data directory when told; it exits cleanly
    at the end (and is killed by its PID if the test failed first)."""
    return line_child(WRITER, remote, str(data_dir), key, str(count), clean_exit=True)


def _tell(proc: subprocess.Popen[str], command: str) -> None:
    assert ask(proc, command) == "DONE"


def _held_in_memory(hold: Hold, key: str) -> Any:
    """The row the table of rows read lately holds for ``key`` now (after noticing any new
    commit), or None."""
    hot = hold.local._hot
    return None if hot.generation() is None else hot.get(key)


@contextlib.contextmanager
def _queries(hold: Hold) -> Iterator[list[str]]:
    """The SQL statements this thread's connection to the index runs in the block."""
    seen: list[str] = []
    conn = hold.local._index.conn()
    conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


def _open(tmp_path: Path) -> Hold:
    """A Hold on ``tmp_path/data`` with a file remote beside it (the same for every call)."""
    return cargohold.open(
        f"file://{tmp_path / 'remote'}", data_dir=tmp_path / "data", signal_handlers=False
    )


@pytest.fixture
def hold(tmp_path: Path) -> Hold:
    with _open(tmp_path) as opened:
        yield opened


def test_a_key_read_again_is_answered_from_memory(hold: Hold) -> None:
    hold.put("doc", b"one")
    assert hold.get("doc") == b"one"
    assert hold.local._hot.enabled
    assert _held_in_memory(hold, "doc")
    assert hold.get("doc") == b"one"


def test_what_this_process_writes_is_read_back_from_memory(hold: Hold) -> None:
    """A put tells the table the row it committed, so reading back what was just written
    (the write-back pattern) asks SQLite nothing, and keeps the rows read before."""
    hold.put("read", b"earlier")
    assert hold.get("read") == b"earlier"
    for i in range(50):
        hold.put(f"doc{i}", f"value {i}".encode())
    hold.delete("doc7")
    with _queries(hold) as queries:
        assert [hold.get(f"doc{i}") for i in range(50) if i != 7] == [
            f"value {i}".encode() for i in range(50) if i != 7
        ]
        assert hold.get("read") == b"earlier"
    assert queries == []
    with pytest.raises(NotFoundError):
        hold.get("doc7")
    big = b"b" * (MAX_VALUE + 1)  # a blob file: its row is held, its bytes are not
    hold.put("big", big)
    row = _held_in_memory(hold, "big")
    assert row is not None
    assert row[0] is None
    assert row[1] is not None
    with _queries(hold) as queries:
        assert hold.get("big") == big
    assert queries == []


def test_this_threads_and_other_threads_writes_are_seen_at_once(hold: Hold) -> None:
    hold.put("doc", b"one")
    assert hold.get("doc") == b"one"
    hold.put("doc", b"two")
    assert _held_in_memory(hold, "doc")[0] == b"two"
    assert hold.get("doc") == b"two"

    writer = threading.Thread(target=hold.put, args=("doc", b"three"))
    writer.start()
    writer.join()
    assert hold.get("doc") == b"three"

    hold.delete("doc")
    with pytest.raises(NotFoundError):
        hold.get("doc")


def test_another_processes_write_and_delete_are_seen_at_once(tmp_path: Path, hold: Hold) -> None:
    hold.put("doc", b"mine")
    assert hold.get("doc") == b"mine"
    assert _held_in_memory(hold, "doc")
    with _writer(f"file://{tmp_path / 'remote'}", tmp_path / "data", "doc") as proc:
        _tell(proc, "put theirs")
        assert hold.get("doc") == b"theirs"
        assert hold.get("doc") == b"theirs"
        _tell(proc, "delete")
        with pytest.raises(NotFoundError):
            hold.get("doc")


def _poll_while_another_process_counts(
    tmp_path: Path, hold: Hold, count: int, also: Callable[[int], object] = lambda _: None
) -> None:
    """Read ``counter`` while a writer process counts it up to ``count``: the values read
    rise, never fall, and end on the last one. ``also(i)`` runs after each read."""
    hold.put("counter", b"0")
    seen = [0]
    with _writer(f"file://{tmp_path / 'remote'}", tmp_path / "data", "counter", count) as proc:
        done = threading.Event()
        threading.Thread(target=lambda: (_tell(proc, "count"), done.set()), daemon=True).start()
        while not done.is_set():
            value = int(hold.get("counter"))
            assert value >= seen[-1], f"read {value} after {seen[-1]}"
            seen.append(value)
            also(len(seen))
        assert int(hold.get("counter")) == count
    assert len(set(seen)) > 2  # it did read while the count rose


def test_reads_never_go_back_while_another_process_writes(tmp_path: Path, hold: Hold) -> None:
    """No row read before another process's commit is served after it."""
    _poll_while_another_process_counts(tmp_path, hold, 400)


def test_own_writes_racing_another_processes_writes_never_hide_them(
    tmp_path: Path, hold: Hold
) -> None:
    """While this process writes other keys (each write telling the table its row) and
    another process counts a key up, reads of that key still never go back."""
    for i in range(64):
        hold.put(f"mine/{i}", b"-")
    stop = threading.Event()

    def write_mine() -> None:
        i = 0
        while not stop.wait(0.0002):  # a put every fraction of a millisecond, GIL to spare
            hold.put(f"mine/{i % 64}", str(i).encode())
            i += 1

    mine = threading.Thread(target=write_mine)
    mine.start()
    try:
        _poll_while_another_process_counts(
            tmp_path, hold, 1000, also=lambda i: hold.get(f"mine/{i % 64}")
        )
    finally:
        stop.set()
        mine.join()


def _index(database: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k PRIMARY KEY, v)")
    return conn


def test_a_carried_commit_keeps_the_table_and_anothers_commit_empties_it(tmp_path: Path) -> None:
    """carry() keeps rows across a commit only when the header's commit counter moved by
    exactly one (that commit); a commit by another connection in between, or before,
    means the rows may be stale, and none of them is served."""
    database = tmp_path / "index.sqlite3"
    mine, theirs = _index(database), _index(database)
    hot = HotRows(database)
    generation = hot.generation()
    assert generation is not None
    hot.put("old", generation, (b"kept", None))

    before = hot.snapshot()
    mine.execute("INSERT INTO t VALUES ('new', 1)")
    hot.carry(before, hot.snapshot(), {"new": (b"1", None)})
    assert hot.generation() is not None
    assert hot.get("old") == (b"kept", None)
    assert hot.get("new") == (b"1", None)

    before = hot.snapshot()
    theirs.execute("INSERT INTO t VALUES ('other', 2)")  # lands between the snapshots
    mine.execute("INSERT OR REPLACE INTO t VALUES ('new', 3)")
    hot.carry(before, hot.snapshot(), {"new": (b"3", None)})
    assert hot.generation() is not None
    assert hot.get("old") is None
    assert hot.get("new") is None

    theirs.execute("INSERT INTO t VALUES ('before', 4)")  # lands before this commit
    hot.put("old", hot.generation(), (b"kept", None))  # type: ignore[arg-type]
    theirs.execute("INSERT INTO t VALUES ('unseen', 5)")
    before = hot.snapshot()
    mine.execute("INSERT OR REPLACE INTO t VALUES ('new', 6)")
    hot.carry(before, hot.snapshot(), {"new": (b"6", None)})
    assert hot.generation() is not None
    assert hot.get("old") is None  # read before 'unseen': dropped
    assert hot.get("new") == (b"6", None)  # the one row known at the new header
    hot.close()
    mine.close()
    theirs.close()


def test_a_carried_transaction_commits_even_when_it_rewrites_the_same_values(hold: Hold) -> None:
    """SQLite counts an UPDATE of a row to the values it holds as a change but commits
    nothing; a carried transaction must still commit, or a commit by another process at
    that moment would pass for its own (see LocalTier._writing)."""
    hold.put("doc", b"x")
    hold.local.flush_access_times()
    accessed = hold.local.lookup("doc")[4]  # type: ignore[index]
    hot = hold.local._hot
    with hold.syncer.paused():  # no commit of its own between the two snapshots
        before = hot.snapshot()
        hold.local._touched["doc"] = accessed - 100  # max(accessed, older) == accessed
        hold.local.flush_access_times()
        after = hot.snapshot()
    assert before is not None
    assert after is not None
    assert (
        int.from_bytes(after[8:12], sys.byteorder)
        == int.from_bytes(before[8:12], sys.byteorder) + 1
    )
    assert hold.local.lookup("doc")[4] == accessed  # type: ignore[index]


def test_a_lookup_racing_a_carried_commit_does_not_keep_its_older_row(tmp_path: Path) -> None:
    database = tmp_path / "index.sqlite3"
    conn = _index(database)
    hot = HotRows(database)
    generation = hot.generation()  # a lookup starts...
    assert generation is not None
    before = hot.snapshot()
    conn.execute("INSERT INTO t VALUES ('k', 'new')")
    hot.carry(before, hot.snapshot(), {"k": (b"new", None)})
    hot.put("k", generation, (b"old", None))  # ...and ends with what it read before
    assert hot.get("k") == (b"new", None)
    hot.close()
    conn.close()


def test_the_table_is_bounded_by_rows_and_bytes(tmp_path: Path) -> None:
    database = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    hot = HotRows(database, max_rows=3, max_bytes=1000)
    generation = hot.generation()
    assert generation is not None
    for i in range(5):
        hot.put(f"k{i}", generation, (b"x" * 10, None))
    assert [k for k in ("k0", "k1", "k2", "k3", "k4") if hot.get(k)] == [
        "k2",
        "k3",
        "k4",
    ]
    hot.put("big", generation, (b"x" * 985, None))  # 985 + 10 + 10 > 1000: two old rows go
    assert hot.get("big") is not None
    assert [k for k in ("k2", "k3", "k4") if hot.get(k)] == ["k4"]
    hot.put("huge", generation, (b"x" * (MAX_VALUE + 1), None))
    assert hot.get("huge") is None

    conn.execute("INSERT INTO t VALUES (1)")  # any commit starts a new generation
    newer = hot.generation()
    assert newer != generation
    assert hot.get("big") is None
    hot.put("late", generation, (b"x", None))  # read before the commit: not kept
    assert hot.get("late") is None
    hot.close()
    assert hot.generation() is None
    conn.close()


def test_without_a_shared_memory_file_every_lookup_asks_sqlite(tmp_path: Path) -> None:
    hot = HotRows(tmp_path / "no-such-index.sqlite3")
    assert not hot.enabled
    assert hot.generation() is None


LOCK_PROBE = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    try:
        # SQLite's "in use" lock on a -shm file: byte 128 (UNIX_SHM_DMS), held shared by
        # every process with the index open. Exclusive is granted only if none holds it.
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
    except OSError:
        print("HELD")
    else:
        print("FREE")
    """
)


def test_reading_the_header_keeps_sqlites_locks(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops the process's POSIX locks on it; the header
    map must not do that to SQLite's lock on the -shm file, or another process would take
    the index for unused and rebuild its shared memory under this one."""
    shm = tmp_path / "data" / "local" / "index.sqlite3-shm"
    for _ in range(2):  # a second Hold on the same directory, then closing the first
        with _open(tmp_path) as hold:
            hold.put("doc", b"one")
            assert hold.get("doc") == b"one"
            assert hold.local._hot.enabled
            assert shm.exists(), list(shm.parent.iterdir())
            probe = subprocess.run(
                [sys.executable, "-c", LOCK_PROBE, str(shm)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert probe.stdout.strip() == "HELD"


def test_opening_and_closing_holds_does_not_pile_up_descriptors(tmp_path: Path) -> None:
    """A process that opens and closes Holds on one data directory again and again keeps
    at most the current -shm file open: SQLite removes the file when the last connection
    closes, and its map goes the next time the directory is opened."""

    def open_files() -> int:
        return sum(1 for _ in Path("/proc/self/fd").iterdir())

    def cycle() -> None:
        with _open(tmp_path) as hold:
            hold.put("doc", b"x")
            assert hold.get("doc") == b"x"
            assert hold.local._hot.enabled

    cycle()
    before = open_files()
    for _ in range(20):
        cycle()
    assert open_files() <= before + 2


def test_a_listing_left_half_read_does_not_pin_old_rows(tmp_path: Path) -> None:
    """A thread part-way through LocalTier.entries() holds no read open between pages, so
    its lookups see (and share) rows as of the last commit, not as of the listing's start."""
    local = LocalTier(tmp_path / "local")
    local.write("a", b"1", metadata={}, content_type="x")
    local.write("k", b"old", metadata={}, content_type="x")
    opened, deleted = threading.Event(), threading.Event()
    seen: list[Any] = []

    def list_and_look() -> None:
        listing = local.entries("")
        next(listing)
        opened.set()
        deleted.wait()
        seen.append(local.lookup("k"))
        seen.append([e.key for e in listing])

    reader = threading.Thread(target=list_and_look)
    reader.start()
    try:
        opened.wait(30)
        local.delete("k")
        assert local.lookup("k") is None
    finally:
        deleted.set()
        reader.join()
    assert seen[0] is None
    assert local.lookup("k") is None
    local.close()


def test_a_listing_reads_every_page(tmp_path: Path) -> None:
    local = LocalTier(tmp_path / "local")
    keys = [f"p/{i:05d}" for i in range(2 * _ENTRIES_PAGE + 3)]
    for key in keys:
        local.write(key, b"x", metadata={}, content_type="x")
    local.write("q", b"x", metadata={}, content_type="x")
    assert [e.key for e in local.entries("p/")] == keys
    assert [e.key for e in local.entries("")] == [*keys, "q"]
    assert [e.key for e in local.entries("", pending_only=True)] == [*keys, "q"]
    local.close()


def test_the_table_never_waits_for_its_lock(tmp_path: Path) -> None:
    """A signal handler runs on the thread it interrupted, which may be inside the table
    holding its lock: a lookup or write there must go on without the table, not wait for
    itself. The lock held on this very thread stands for that frame (a blocking acquire
    would hang this test)."""
    tier, other = LocalTier(tmp_path / "data"), LocalTier(tmp_path / "data")
    try:
        tier.write("k", b"one", metadata={}, content_type="text/plain")
        assert tier.lookup("k") is not None
        with tier._hot._lock:
            other.write("k", b"two", metadata={}, content_type="text/plain")  # a new header
            row = tier.lookup("k")
            assert row is not None
            assert row[0] == b"two"
            tier.write("j", b"three", metadata={}, content_type="text/plain")  # no carry
            row = tier.lookup("j")
            assert row is not None
            assert row[0] == b"three"
        other.write("k", b"four", metadata={}, content_type="text/plain")
        row = tier.lookup("k")
        assert row is not None
        assert row[0] == b"four"
        assert tier.data(tier.entry("j")) == b"three"  # type: ignore[arg-type]
    finally:
        tier.close()
        other.close()
