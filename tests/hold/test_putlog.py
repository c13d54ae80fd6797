"""The put log (cargohold._putlog): a tier alone on its data directory makes each put safe
with one append, applies the records to the index in batches, and loses nothing when it is
killed, when its log ends in a torn record, or when another process opens the directory."""

from __future__ import annotations

import errno
import os
import signal
import textwrap
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import cargohold
from cargohold import _putlog
from cargohold import local as local_module
from cargohold.errors import NotFoundError, PreconditionFailed
from cargohold.hold import Hold
from cargohold.local import local_etag
from testsupport.children import ask, line_child

CHILD = textwrap.dedent(
    """
    import sys
    import cargohold
    remote, data_dir, hold_syncer = sys.argv[1], sys.argv[2], sys.argv[3] == "held"
    hold = cargohold.open(remote, data_dir=data_dir, signal_handlers=False)
    if hold_syncer:
        hold.syncer.paused().__enter__()  # nothing applied by the syncer: only by reads
    print("READY", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "put":
            hold.put(command[1], command[2].encode())
            print("DONE", flush=True)
        elif command[0] == "big":
            hold.put(command[1], command[2].encode() * 100_000)
            print("DONE", flush=True)
        elif command[0] == "delete":
            hold.delete(command[1])
            print("DONE", flush=True)
        elif command[0] == "get":
            try:
                print(hold.get(command[1]).decode()[:40], flush=True)
            except FileNotFoundError:
                print("MISSING", flush=True)
        elif command[0] == "solo":
            print(hold.local._solo, flush=True)
    hold.close()
    """
)


def _open(tmp_path: Path) -> Hold:
    return cargohold.open(
        f"file://{tmp_path / 'remote'}", data_dir=tmp_path / "data", signal_handlers=False
    )


def _child(tmp_path: Path, *, syncer: str = "running") -> Any:
    """A process on the same data directory, told what to do line by line; stopped by its
    PID if the test ends first."""
    return line_child(CHILD, f"file://{tmp_path / 'remote'}", str(tmp_path / "data"), syncer)


def test_a_lone_tier_appends_puts_and_reads_them_back_before_they_are_applied(
    tmp_path: Path,
) -> None:
    with _open(tmp_path) as hold, hold.syncer.paused():
        assert hold.local._solo
        hold.put("a", b"one", metadata={"owner": "ana"})
        hold.put("big", b"b" * 100_000)
        hold.delete("gone")
        assert len(hold.local._records) == 3  # in the log, not yet in the index
        assert hold.get("a") == b"one"
        assert hold.get("big") == b"b" * 100_000
        with pytest.raises(NotFoundError):
            hold.get("gone")
        assert hold.head("a").metadata == {"owner": "ana"}  # a read of the index applies
        assert hold.local._records == []
        assert hold.status().pending_count == 3
    with _open(tmp_path) as hold:
        hold.flush(30)
        assert hold.remote.get("a") == b"one"
        assert hold.remote.get("big") == b"b" * 100_000


def test_logged_writes_survive_sigkill_before_they_are_applied(tmp_path: Path) -> None:
    with _child(tmp_path, syncer="held") as proc:
        for i in range(50):
            assert ask(proc, f"put k{i} value-{i}") == "DONE"
        assert ask(proc, "big large x") == "DONE"
        assert ask(proc, "delete k7") == "DONE"
        assert ask(proc, "solo") == "True"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with _open(tmp_path) as hold:
        assert [hold.get(f"k{i}") for i in range(50) if i != 7] == [
            f"value-{i}".encode() for i in range(50) if i != 7
        ]
        with pytest.raises(NotFoundError):
            hold.get("k7")
        assert hold.get("large") == b"x" * 100_000
        assert hold.head("large").size == 100_000  # a blob's record carries its size
        assert hold.status().pending_bytes >= 100_000
        hold.flush(30)
        assert hold.remote.get("k49") == b"value-49"
        assert hold.remote.get("large") == b"x" * 100_000
        assert hold.status().pending_count == 0


def test_a_torn_record_at_the_end_is_cut_off_and_later_writes_survive(tmp_path: Path) -> None:
    with _child(tmp_path, syncer="held") as proc:
        for i in range(10):
            assert ask(proc, f"put k{i} v{i}") == "DONE"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    log_file = tmp_path / "data" / "local" / "putlog"
    whole = _putlog.encode_record("torn", 5, 1, b"torn!", None, None, "text/plain", 1.0, False)
    with log_file.open("ab") as fh:
        fh.write(whole[:-3])  # what power loss in the middle of a write leaves
    with _open(tmp_path) as hold, hold.syncer.paused():
        assert [hold.get(f"k{i}") for i in range(10)] == [f"v{i}".encode() for i in range(10)]
        with pytest.raises(NotFoundError):
            hold.get("torn")
        hold.put("after", b"the restart")
    with _open(tmp_path) as hold:
        assert hold.get("after") == b"the restart"
        assert hold.get("k9") == b"v9"


def test_a_process_opening_beside_the_owner_sees_its_writes_and_is_seen(tmp_path: Path) -> None:
    with _open(tmp_path) as hold, hold.syncer.paused():
        hold.put("before", b"logged before the other came")
        assert hold.local._records  # not applied: only in the log
        with _child(tmp_path) as proc:
            assert ask(proc, "get before") == "logged before the other came"
            assert ask(proc, "solo") == "False"
            # The owner notices at its next put, applies what it holds, and from then on
            # writes to the index like the other process.
            hold.put("during", b"written after the other came")
            assert not hold.local._solo
            assert ask(proc, "get during") == "written after the other came"
            assert ask(proc, "put theirs from-the-child") == "DONE"
            assert hold.get("theirs") == b"from-the-child"
            hold.delete("before")
            assert ask(proc, "get before") == "MISSING"
    with _open(tmp_path) as hold:
        assert hold.local._solo  # alone again: the log is used again
        assert hold.get("during") == b"written after the other came"


def test_an_owner_that_only_reads_notices_the_other_process(tmp_path: Path) -> None:
    with _open(tmp_path) as hold, hold.syncer.paused():
        hold.put("doc", b"mine")
        with _child(tmp_path) as proc:
            assert ask(proc, "put doc theirs") == "DONE"
            assert hold.get("doc") == b"theirs"  # not the logged copy held in memory
            assert not hold.local._solo


def test_each_logged_write_is_applied_once_whoever_applies_it(tmp_path: Path) -> None:
    with _open(tmp_path) as hold, hold.syncer.paused():
        for value in (b"1", b"2", b"3"):
            info = hold.put("doc", value)
        with _child(tmp_path) as proc:
            assert ask(proc, "get doc") == "3"  # the other process applied all three
        # ... and this one applied none again: the row has the version the last put gave.
        assert local_etag(hold.local.entry("doc")) == info.etag
    with _open(tmp_path) as hold:
        # The local etag the put returned names the version the index gave it.
        hold.put("doc", b"4", if_match=info.etag)
        assert hold.get("doc") == b"4"
        with pytest.raises(PreconditionFailed):
            hold.put("doc", b"5", if_match=info.etag)


def test_the_log_starts_again_once_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_module, "_LOG_ROTATE_AT", 8 * 1024)
    with _open(tmp_path) as hold:
        for i in range(200):
            hold.put(f"k{i}", os.urandom(1024))
            if i % 20 == 0:
                hold.flush(30)
        hold.flush(30)
        log_file = hold.local.root / "putlog"
        assert log_file.stat().st_size < 40 * 1024  # 200 KiB went through it
    with _open(tmp_path) as hold:
        assert len(list(hold.list(""))) == 200


def test_a_put_past_the_bound_applies_the_log_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "_LOG_APPLY_AT", 10)
    with _open(tmp_path) as hold, hold.syncer.paused():
        for i in range(35):
            hold.put(f"k{i}", b"v")
            assert len(hold.local._records) < 10
        assert [hold.get(f"k{i}") for i in range(35)] == [b"v"] * 35


def test_without_file_locks_every_write_goes_to_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A mock, and it says so: some network filesystems refuse flock (ENOLCK), which no
    # filesystem on this machine can be made to do.
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_putlog, "flock", no_locks)
    with caplog.at_level("INFO", logger="cargohold.local"), _open(tmp_path) as hold:
        assert not hold.local._solo
        hold.put("doc", b"direct")
        assert hold.local._records == []
        assert hold.get("doc") == b"direct"
        hold.flush(30)
        assert hold.remote.get("doc") == b"direct"
    assert "cannot lock files" in caplog.text


def test_a_read_while_another_thread_applies_the_log_still_sees_every_write(
    tmp_path: Path,
) -> None:
    with _open(tmp_path) as hold, hold.syncer.paused():
        stop = threading.Event()

        def apply_all_the_time() -> None:
            while not stop.is_set():
                hold.local.totals()  # applies whatever is logged

        applier = threading.Thread(target=apply_all_the_time)
        applier.start()
        try:
            for i in range(300):
                hold.put(f"k{i}", b"v")
                assert hold.local.entry(f"k{i}") is not None, i
                assert hold.get(f"k{i}") == b"v"
        finally:
            stop.set()
            applier.join()


def test_a_child_after_fork_does_not_append_and_the_parent_stops(tmp_path: Path) -> None:
    with _open(tmp_path) as hold, hold.syncer.paused():
        hold.put("before", b"logged")
        read, write = os.pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns of fork() beside threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report, never run the test's own clean-up
            state = f"{hold.local._solo} {hold.local._log.owner} {hold.local._log.watching()}"
            os.write(write, state.encode())
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        assert os.read(read, 100).decode() == "False False True"
        os.close(read)
        assert status == 0
        hold.put("after", b"written to the index")  # the parent sees the child joined
        assert not hold.local._solo
        assert hold.local._records == []
        assert hold.get("before") == b"logged"


def test_a_log_that_cannot_be_replaced_stops_being_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A mock, and it says so: a filesystem that refuses the rename of a new log file.
    def refuse(self: _putlog.PutLog) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(local_module, "_LOG_ROTATE_AT", 1024)
    with _open(tmp_path) as hold:
        monkeypatch.setattr(_putlog.PutLog, "replace_with_new", refuse)
        for i in range(20):
            hold.put(f"k{i}", b"x" * 200)
        hold.flush(30)
        assert not hold.local._solo
        hold.put("later", b"to the index")
        assert hold.local._records == []
    assert "cannot start a new put log" in caplog.text
    monkeypatch.undo()
    with _open(tmp_path) as hold:
        assert [hold.get(f"k{i}") for i in range(20)] == [b"x" * 200] * 20
        assert hold.get("later") == b"to the index"


def test_a_clock_set_back_still_gives_puts_the_versions_they_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(tmp_path) as hold:
        hold.put("doc", b"written while the clock was right")
        hold.flush(30)
    # A mock, and it says so: the local tier's clock an hour behind the one that wrote
    # the index (an NTP correction, a restored VM), which this machine's clock cannot be
    # made to do without moving every other process's clock too.
    real = time.time
    monkeypatch.setattr(
        local_module,
        "time",
        SimpleNamespace(time=lambda: real() - 3600, monotonic=time.monotonic, sleep=time.sleep),
    )
    with _open(tmp_path) as hold:
        assert hold.local._solo
        info = hold.put("doc", b"written after the clock went back")
        assert hold.head("doc").etag == info.etag  # the version the put returned
        hold.put("doc", b"conditional", if_match=info.etag)  # no false conflict
        durable = hold.put("doc", b"durable", durable=True)
        assert not durable.etag.startswith("L")  # the remote's etag, as promised
        assert hold.get("doc") == b"durable"


def test_a_tier_alone_again_appends_to_the_log_again(tmp_path: Path) -> None:
    remote, data = f"file://{tmp_path / 'remote'}", str(tmp_path / "data")
    with _open(tmp_path) as hold:
        with line_child(CHILD, remote, data, "running", clean_exit=True) as proc:
            hold.put("during", b"written beside the other process")
            assert not hold.local._solo
            hold.syncer._housekeeping()  # the syncer's idle upkeep tries to take it back
            assert not hold.local._solo  # not while the other is open
        hold.syncer._housekeeping()
        assert hold.local._solo  # the other closed: alone again
        hold.put("after", b"logged again")
        assert hold.local._overlay
        with line_child(CHILD, remote, data, "running", clean_exit=True) as proc:
            assert ask(proc, "get after") == "logged again"
            assert ask(proc, "get during") == "written beside the other process"
            assert ask(proc, "put theirs t") == "DONE"
            assert hold.get("theirs") == b"t"
            hold.put("later", b"noticed the join")  # and from here on, to SQLite
            assert not hold.local._solo
            assert ask(proc, "get later") == "noticed the join"
    with _open(tmp_path) as hold:
        assert hold.get("after") == b"logged again"
        assert hold.get("later") == b"noticed the join"
