"""The fork gate: no thread of this process is inside an SQLite call at the instant of
fork(), so a child never inherits one of SQLite's process-global mutexes held (issue 14:
a Pool worker blocked for good on a lock its parent's reader thread held at the fork).

Real os.fork(), children stopped by pid; a thread is held inside SQLite by a progress
handler (called by SQLite from inside sqlite3_step) that waits on an Event.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

import cargohold
from cargohold import _index
from cargohold.local import LocalTier

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX"),
    # Python 3.12+ warns about fork() in a process with threads: the very case under test.
    pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork.*:DeprecationWarning"),
]

CHILD_DEADLINE = 60  # seconds; a child still running then is SIGKILLed and the test fails


def _in_child(check: Callable[[], None]) -> int:
    """Fork; the child runs ``check`` and exits 0 if it passed, 1 otherwise (traceback on
    stderr). Returns its exit code; a child that outlives the deadline is killed by pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            check()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    done = threading.Event()
    killer = threading.Timer(CHILD_DEADLINE, lambda: done.is_set() or os.kill(pid, signal.SIGKILL))
    killer.start()
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        done.set()
        killer.cancel()
    assert not os.WIFSIGNALED(status), f"the child hung or crashed (signal {os.WTERMSIG(status)})"
    return os.waitstatus_to_exitcode(status)


def _child_works(hold: cargohold.Hold) -> None:
    assert hold.get("parent/seed") == b"seed"
    for i in range(20):
        hold.put(f"child/{i}", f"c{i}".encode())
    hold.put("child/big", b"B" * 100_000)  # a blob file
    for i in range(20):
        assert hold.get(f"child/{i}") == f"c{i}".encode()
    with pytest.raises(FileNotFoundError):  # a miss: the index, then the remote
        hold.get("missing")
    hold.flush()
    assert hold.status().pending_count == 0


def test_a_fork_waits_for_a_thread_inside_an_sqlite_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_index, "_FORK_WAIT", 60.0)  # whatever this machine's load
    with cargohold.open("memory://fork-gate", data_dir=tmp_path, signal_handlers=False) as hold:
        hold.put("parent/seed", b"seed")
        hold.flush()
        inside, release = threading.Event(), threading.Event()
        state = {"armed": False, "released": False}

        def hold_inside_sqlite() -> int:
            # SQLite calls this from inside sqlite3_step: this thread is inside SQLite.
            if state["armed"]:
                state["armed"] = False
                inside.set()
                assert release.wait(60)
                state["released"] = True  # still inside the call that sqlite3_step made
            return 0

        def reader() -> None:
            tier = hold.local
            tier._index.conn().set_progress_handler(hold_inside_sqlite, 1)
            state["armed"] = True
            assert tier.entry("parent/seed") is not None  # a read, past the hot-row table

        thread = threading.Thread(target=reader)
        thread.start()
        assert inside.wait(30)
        # The reader is let go once the fork waits for it at the gate (never by the test).
        gate = _index._GATE
        original = gate._wait_for_leavers
        waited_for: list[set[int]] = []  # the threads inside, each time the fork waits

        def wait_for_leavers(timeout: float) -> None:
            waited_for.append(set(gate._inside))
            release.set()
            original(timeout)

        monkeypatch.setattr(gate, "_wait_for_leavers", wait_for_leavers)

        def child() -> None:
            # The fork happened once the reader was out of SQLite, not while inside.
            assert state["released"]
            _child_works(hold)

        assert _in_child(child) == 0
        assert thread.ident in waited_for[0]  # the fork did wait, for the reader
        thread.join()
        assert hold.get("parent/seed") == b"seed"
        hold.put("parent/after", b"after")
        assert hold.get("parent/after") == b"after"


def test_a_fork_from_inside_a_section_does_not_wait_for_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The forking thread inside a section (a fork from inside one, or a signal handler that
    forks there): the gate waits for other threads only, and the child can leave it."""
    monkeypatch.setattr(_index, "_FORK_WAIT", 60.0)
    gate = _index._GATE
    with cargohold.open(
        "memory://fork-gate-self", data_dir=tmp_path, signal_handlers=False
    ) as hold:
        hold.put("parent/seed", b"seed")
        with hold.local._index.reading() as conn:
            assert conn.execute("SELECT count(*) FROM objects").fetchone() is not None

            def child() -> None:
                _child_works(hold)

            code = _in_child(child)
        assert code == 0
        # Had it waited for itself, it would have given up after _FORK_WAIT and said so.
        assert "inside an SQLite call" not in caplog.text
        assert threading.get_ident() not in gate._inside  # and it left its section
        hold.put("parent/after", b"after")
        assert hold.get("parent/after") == b"after"


def test_a_get_from_the_hot_row_table_does_not_touch_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _index._GATE
    entered: list[int] = []
    enter = gate.enter
    me = threading.get_ident()

    def counting_enter() -> int:
        if threading.get_ident() == me:  # not the syncer's own reads and writes
            entered.append(1)
        return enter()

    with cargohold.open("memory://fork-gate-hot", data_dir=tmp_path, signal_handlers=False) as hold:
        tier = hold.local
        hold.put("hot", b"value")
        assert tier.lookup("hot") is not None  # now in the table, if it can be mapped
        assert tier._hot.generation() is not None  # this platform maps the WAL header
        monkeypatch.setattr(gate, "enter", counting_enter)
        assert tier.lookup("hot") is not None
        assert entered == []  # answered from memory: SQLite was not asked
        assert tier.lookup("missing") is None
        assert entered == [1]  # a miss asks SQLite, inside the gate


def test_forks_while_threads_read_and_write_never_leave_a_child_stuck(tmp_path: Path) -> None:
    """Issue 14 as it happened: threads reading (and one writing) without pause while the
    process forks again and again. Before the gate, a few children in a hundred hung here on
    a loaded machine, on a mutex of SQLite's held by a parent thread at the fork; a child
    still running at the deadline is killed by pid and fails the test."""
    tier = LocalTier(tmp_path / "data")
    try:
        for i in range(100):
            tier.write(f"k{i}", b"v" * 50, metadata={}, content_type="application/octet-stream")
        stop = threading.Event()

        def use_the_tier(n: int) -> None:
            i = 0
            while not stop.is_set():
                assert tier.lookup(f"missing/{i % 50}") is None  # always asks SQLite
                assert tier.entry(f"k{i % 100}") is not None
                if n == 0 and i % 10 == 0:
                    tier.write(f"w{i % 50}", b"w", metadata={}, content_type="text/plain")
                i += 1

        threads = [threading.Thread(target=use_the_tier, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            for k in range(60):

                def child(k: int = k) -> None:
                    assert tier.entry("k1") is not None
                    tier.write(f"child/{k}", b"c", metadata={}, content_type="text/plain")
                    assert tier.lookup(f"child/{k}") is not None

                assert _in_child(child) == 0
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert len(list(tier.entries("child/"))) == 60
    finally:
        tier.close()
