"""The local tier across fork(): a child that uses an inherited LocalTier works (its own
connections and locks), and the parent is unaffected; nothing is lost or applied twice.

Real os.fork() and multiprocessing's fork start method, no mocks.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from cargohold import _index
from cargohold.local import LocalTier

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX"),
    # Python 3.12+ warns about fork() in a process with threads; forking with threads is
    # the very case under test.
    pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork.*:DeprecationWarning"),
]

BIG = b"B" * 100_000  # over INLINE_MAX: a blob file


def _write(tier: LocalTier, key: str, value: bytes) -> None:
    tier.write(key, value, metadata={}, content_type="application/octet-stream")


def _value(tier: LocalTier, key: str) -> bytes | None:
    entry = tier.entry(key)
    return None if entry is None or entry.deleted else tier.data(entry)


def _in_child(check: Callable[[], None]) -> int:
    """Fork; the child runs ``check`` and exits 0 if it passed (1 with the traceback on
    stderr otherwise), never returning into pytest. Returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            check()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _integrity(root: Path) -> str:
    conn = sqlite3.connect(root / "index.sqlite3")
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_a_child_forked_while_another_thread_holds_the_write_lock(tmp_path: Path) -> None:
    root = tmp_path / "data"
    tier = LocalTier(root)
    try:
        for i in range(50):
            _write(tier, f"parent/{i}", f"p{i}".encode())
        _write(tier, "parent/big", BIG)
        assert tier.lookup("parent/0") is not None  # the hot-row table holds rows now
        inherited = list(tier._index._connections)

        # Another thread of the parent has a connection of its own and holds the tier's
        # write lock at the moment of the fork: in the child that lock would never be
        # released, and that connection must never be used.
        held, release = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            assert tier.entry("parent/1") is not None
            with tier._index._write_lock:
                held.set()
                release.wait(60)

        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert held.wait(30)
        inherited = list(tier._index._connections)
        assert len(inherited) == 2

        def child() -> None:
            for i in range(50):
                assert _value(tier, f"parent/{i}") == f"p{i}".encode()
            assert _value(tier, "parent/big") == BIG
            for i in range(50):
                _write(tier, f"child/{i}", f"c{i}".encode())
            _write(tier, "child/big", BIG + b"c")
            tier.delete("parent/1")
            assert _value(tier, "child/7") == b"c7"
            assert tier.lookup("child/7") is not None
            assert tier.lookup("parent/1") is None
            # Fresh connections; the inherited ones kept, never closed.
            assert all(conn not in tier._index._connections for conn in inherited)
            assert all(any(conn is kept for kept in _index._ABANDONED) for conn in inherited)
            tier.close()  # closes the child's own connections only

        pid = _in_child(child)
        release.set()
        holder.join()
        for i in range(20):  # the parent goes on meanwhile
            _write(tier, f"parent/after/{i}", f"a{i}".encode())
        assert _exit_code(pid) == 0

        # The parent sees everything the child wrote, through its own connections.
        for i in range(50):
            assert _value(tier, f"child/{i}") == f"c{i}".encode()
        assert _value(tier, "child/big") == BIG + b"c"
        assert _value(tier, "parent/1") is None
        assert tier.lookup("parent/1") is None
        for i in range(20):
            assert _value(tier, f"parent/after/{i}") == f"a{i}".encode()
        # Nothing lost, nothing applied twice: one row per key, each written once (version
        # 1), parent/1 written then deleted (version 2).
        versions = {entry.key: entry.version for entry in tier.entries("")}
        assert len(versions) == 50 + 1 + 50 + 1 + 20
        assert versions.pop("parent/1") == 2
        assert set(versions.values()) == {1}
        totals = tier.totals()
        assert totals.pending_count == len(versions) + 1
        _write(tier, "parent/last", b"still writing")
        assert _value(tier, "parent/last") == b"still writing"
    finally:
        tier.close()
    assert _integrity(root) == "ok"


def test_a_fork_waits_for_another_threads_transaction_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread inside a write transaction at the fork holds SQLite's WAL write lock, and
    SQLite keeps that in process memory: the child's connections would find it held by a
    sibling for good ("database is locked"). So the fork waits for the transaction to end."""
    monkeypatch.setattr(_index, "_FORK_WAIT", 60.0)  # whatever this machine's load
    monkeypatch.setattr(_index, "_BUSY_TIMEOUT_MS", 3000)  # fail fast if it did not wait
    root = tmp_path / "data"
    tier = LocalTier(root)
    try:
        _write(tier, "parent/seed", b"seed")
        inside, go_on = threading.Event(), threading.Event()

        def transaction() -> None:
            with tier._index.transaction({}) as conn:
                conn.execute("INSERT OR REPLACE INTO info VALUES ('held', 'yes')")
                inside.set()
                go_on.wait(60)  # set by the fork's own wait below, never by the test

        holder = threading.Thread(target=transaction)
        holder.start()
        assert inside.wait(30)
        # The holder ends its transaction once the fork has begun waiting for it.
        original = _index.Index.before_fork

        def before_fork(index: _index.Index) -> None:
            go_on.set()
            original(index)

        monkeypatch.setattr(_index.Index, "before_fork", before_fork)

        def child() -> None:
            assert tier.info_value("held") == "yes"
            _write(tier, "child/one", b"1")
            assert _value(tier, "child/one") == b"1"

        pid = _in_child(child)
        holder.join()
        assert _exit_code(pid) == 0
        assert _value(tier, "child/one") == b"1"
    finally:
        tier.close()
    assert _integrity(root) == "ok"


_SHARED: LocalTier | None = None  # inherited by the pool's workers through fork


def _worker(n: int) -> int:
    tier = _SHARED
    assert tier is not None
    assert _value(tier, "parent/seed") == b"seed"
    for i in range(25):
        _write(tier, f"worker/{n}/{i}", f"w{n}.{i}".encode())
    _write(tier, f"worker/{n}/big", BIG + bytes([n]))
    for i in range(25):
        assert _value(tier, f"worker/{n}/{i}") == f"w{n}.{i}".encode()
    return n


def test_multiprocessing_workers_forked_from_a_parent_with_an_open_tier(tmp_path: Path) -> None:
    global _SHARED
    root = tmp_path / "data"
    tier = LocalTier(root)
    _SHARED = tier
    try:
        _write(tier, "parent/seed", b"seed")
        assert tier.lookup("parent/seed") is not None
        reader_stop = threading.Event()

        def read_meanwhile() -> None:  # a parent thread using the tier while workers fork
            while not reader_stop.is_set():
                assert _value(tier, "parent/seed") == b"seed"

        reader = threading.Thread(target=read_meanwhile)
        reader.start()
        try:
            pool = multiprocessing.get_context("fork").Pool(3)
            try:
                done = pool.map(_worker, range(6))
            finally:
                pool.close()
                pool.join()
        finally:
            reader_stop.set()
            reader.join()
        assert sorted(done) == list(range(6))
        for n in range(6):
            for i in range(25):
                assert _value(tier, f"worker/{n}/{i}") == f"w{n}.{i}".encode()
            assert _value(tier, f"worker/{n}/big") == BIG + bytes([n])
        versions = [entry.version for entry in tier.entries("")]
        assert len(versions) == 1 + 6 * 26
        assert set(versions) == {1}
        assert tier.totals().pending_count == 1 + 6 * 26
    finally:
        _SHARED = None
        tier.close()
    assert _integrity(root) == "ok"
