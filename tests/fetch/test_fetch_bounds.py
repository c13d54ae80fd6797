"""What the download cache keeps per URL stays bounded however many URLs it sees, and its
downloads share one HTTP client per Hold (never a parent's after a fork)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold
from cargohold.fetch import _state, remove_stale_partials
from cargohold.remotes import MemoryRemote
from testsupport.children import line_child
from testsupport.origin import Origin


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as served:
        yield served


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"fetch-bounds-{uuid.uuid4().hex}"
    with cargohold.open(f"memory://{name}", data_dir=tmp_path / "data", signal_handlers=False) as h:
        yield h
    MemoryRemote.forget(name)


def test_many_urls_leave_no_locks_or_lock_files(origin: Origin, hold: Hold) -> None:
    urls = [origin.put(f"/many/{i}.bin", f"asset {i}".encode()) for i in range(60)]
    # Threads fetching the same URLs at once: the locks are in use, then all dropped.
    errors: list[BaseException] = []

    def fetch_all() -> None:
        try:
            for url in urls:
                hold.fetch(url)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fetch_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(origin.gets(f"/many/{i}.bin") == 1 for i in range(60))  # single-flight kept
    for url in urls:  # revalidated: each takes the locks again
        assert hold.fetch(url, max_age=0).read_bytes().startswith(b"asset ")
    state = _state(hold)
    assert len(state.locks) == 0
    assert list((hold.local.root / "fetch-locks").glob("*")) == []


def test_downloads_share_one_client(origin: Origin, hold: Hold) -> None:
    for i in range(20):
        url = origin.put(f"/shared/{i}.bin", b"x" * 1000)
        assert hold.fetch(url).read_bytes() == b"x" * 1000
    assert origin.connections == 1  # one keep-alive connection for every download
    client = _state(hold).client(hold)
    hold.close()
    assert client.is_closed


def test_a_forked_child_makes_its_own_client(origin: Origin, hold: Hold) -> None:
    """The child never sends on the parent's connections (they are the parent's sockets);
    it asks only for the client, so nothing else of the Hold is used across the fork."""
    hold.fetch(origin.put("/before-fork.bin", b"parent"))
    parent_client = _state(hold).client(hold)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether it got a fresh client, and exit at once
        try:
            child_client = _state(hold).client(hold)
            ok = child_client is not parent_client and not child_client.is_closed
            os.write(write, b"fresh" if ok else b"same")
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        said = answer.read()
    _, status = os.waitpid(pid, 0)
    assert (said, os.waitstatus_to_exitcode(status)) == (b"fresh", 0)
    assert _state(hold).client(hold) is parent_client  # the parent's own, still open
    assert hold.fetch(origin.put("/after-fork.bin", b"again")).read_bytes() == b"again"


FETCHER = """
import sys
import cargohold
hold = cargohold.open(sys.argv[1], data_dir=sys.argv[2], signal_handlers=False)
print("READY", flush=True)
hold.fetch(sys.argv[3])
"""


def test_gc_removes_the_lock_file_of_a_killed_fetch_only(
    origin: Origin, hold: Hold, tmp_path: Path
) -> None:
    """A process killed mid-download leaves its lock file (no one to remove it); the
    collector removes it, but never the lock file of a fetch under way."""
    url = origin.put("/slow/video.mp4", b"v" * 200_000)
    origin.slow("/slow/video.mp4", 60.0)
    locks = hold.local.root / "fetch-locks"
    with line_child(FETCHER, hold.remote.url, str(tmp_path / "data"), url) as child:
        # Not "once the file is there": the child creates the file, then locks it, and
        # a collector run between the two removes it (by protocol: the child then locks
        # a new one). The child asks the origin only while it holds the lock.
        while origin.gets("/slow/video.mp4") == 0:
            assert child.poll() is None, "the child ended before it began the download"
            time.sleep(0.05)
        remove_stale_partials(hold)
        assert len(list(locks.glob("*.lock"))) == 1  # held: kept
        child.kill()
        child.wait(30)
    assert len(list(locks.glob("*.lock"))) == 1  # left behind by the killed process
    remove_stale_partials(hold)
    assert list(locks.glob("*.lock")) == []
