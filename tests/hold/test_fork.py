"""A Hold opened before fork(): the child and the parent both keep working (gunicorn
--preload, multiprocessing with fork, Celery prefork). Real forks, a real SeaweedFS."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import uuid
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes.s3 import S3Remote
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS

# A child that hangs must not hang the suite: it is killed after this many seconds.
CHILD_DEADLINE = 60


def _open(url: str, data_dir: Path) -> cargohold.Hold:
    return cargohold.open(url, data_dir=data_dir, signal_handlers=False, shutdown_grace=10)


def _wait_child(pid: int) -> int:
    """The child's exit code; SIGKILLs it (and fails) if it outlives the deadline."""
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


def _in_child(work: object) -> int:
    """Fork; in the child run ``work()`` and exit 0 if it returned, 1 if it raised."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            work()  # type: ignore[operator]
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    return _wait_child(pid)


@pytest.fixture
def url(seaweedfs: SeaweedFS, seaweedfs_bucket: str) -> str:
    return s3_url(seaweedfs, seaweedfs_bucket)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_reads_writes_and_flushes_and_the_parent_goes_on(
    url: str, tmp_path: Path
) -> None:
    hold = _open(url, tmp_path)
    hold.put("before/local", b"written before the fork")
    hold.flush(30)
    # Written to the remote behind the Hold's back: the child must read it through.
    S3Remote.from_url(url).put("before/remote-only", b"only on the remote")
    hold.put("before/pending", b"x" * 300_000)  # the syncer is likely busy at the fork

    def child() -> None:
        assert hold.get("before/local") == b"written before the fork"
        assert hold.get("before/remote-only") == b"only on the remote"
        for i in range(50):
            hold.put(f"child/{i}", f"from the child {i}".encode() * 50)
        hold.delete("before/local")
        hold.flush(30)
        hold.close()

    assert _in_child(child) == 0
    # The parent is unaffected: its syncer, connections and client still work.
    hold.put("parent/after", b"after the fork")
    hold.flush(30)
    assert hold.get("child/7") == b"from the child 7" * 50  # the shared local tier
    check = S3Remote.from_url(url)
    keys = {info.key for info in check.list()}
    assert {f"child/{i}" for i in range(50)} <= keys
    assert {"parent/after", "before/pending", "before/remote-only"} <= keys
    assert "before/local" not in keys
    assert check.get("child/49") == b"from the child 49" * 50
    hold.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_while_the_syncer_is_sending(url: str, tmp_path: Path) -> None:
    """The syncer thread may hold locks at the moment of fork(); the child must not wait
    for them, nor apply or lose what the parent journaled."""
    hold = _open(url, tmp_path)
    for round_ in range(3):
        for i in range(300):
            hold.put(f"burst/{round_}/{i}", os.urandom(2048))

        def child(round_: int = round_) -> None:
            hold.put(f"child/{round_}", b"child")
            assert hold.get(f"burst/{round_}/299")
            hold.flush(30)

        assert _in_child(child) == 0
    hold.flush(60)
    keys = {info.key for info in S3Remote.from_url(url).list()}
    expected = {f"burst/{r}/{i}" for r in range(3) for i in range(300)}
    assert expected | {f"child/{r}" for r in range(3)} <= keys
    assert hold.status().pending_count == 0
    hold.close()


_pool_hold: cargohold.Hold | None = None


def _pool_write(n: int) -> str:
    assert _pool_hold is not None
    key = f"pool/{n}-{uuid.uuid4().hex[:6]}"
    _pool_hold.put(key, f"worker {os.getpid()} wrote {n}".encode())
    _pool_hold.flush(30)
    return key


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_multiprocessing_pool_with_fork(url: str, tmp_path: Path) -> None:
    global _pool_hold
    _pool_hold = _open(url, tmp_path)
    _pool_hold.put("pool/parent", b"parent")
    try:
        with multiprocessing.get_context("fork").Pool(3) as pool:
            keys = pool.map(_pool_write, range(24), chunksize=2)
        _pool_hold.flush(30)
        check = S3Remote.from_url(url)
        listed = {info.key for info in check.list()}
        assert set(keys) | {"pool/parent"} <= listed
        for key in keys:
            n = int(key.split("/")[1].split("-")[0])
            assert check.get(key).endswith(f"wrote {n}".encode())
    finally:
        _pool_hold.close()
        _pool_hold = None
