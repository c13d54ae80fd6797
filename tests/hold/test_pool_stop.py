"""A ``multiprocessing.Pool`` (fork) writing through its parent's Hold, stopped by a
SIGTERM to the parent only (issue 14: the pool trials of tests/processes lost
acknowledged writes on a loaded machine). Real forks, a real signal, a real SeaweedFS.

The trials there hit two interleavings by chance; these tests force each one. The hook
that forces it is ``Hold.sync_paused()`` in the process that syncs: with no batch going out,
"acknowledged before the remote has it" and "backlog built before the rate was measured"
are facts, not races a fast machine wins.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import cargohold
from cargohold.errors import StorageFull
from tests.conftest import s3_url
from tests.hold.test_fork import _wait_child
from testsupport.servers import SeaweedFS

# Run as its own process: the SIGTERM it sends itself changes signal state for good.
_AFTER_PARENTS_STOP = textwrap.dedent(
    """
    import os, signal, sys, time
    import cargohold
    from cargohold.errors import NotFoundError, TimedOut

    url, data_dir = sys.argv[1], sys.argv[2]
    stops = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stops.append(signum))  # survives
    # A write-through put waits request_timeout + retry_timeout (6 s) for the remote: the
    # paused child's times out after that; the syncing child's needs the parent's syncer,
    # which looks for other processes' writes once a second, to send it within that.
    hold = cargohold.open(url, data_dir=data_dir, shutdown_grace=10, request_timeout=1,
                          retry_timeout=5)
    hold.put("parent/before", b"p")
    hold.flush(30)  # so this process holds sync.lock: the children only stand by
    assert hold.status().syncing

    def child(key, go):
        os.read(go, 1)  # until the parent's stop was handled
        try:
            hold.put(key, b"written after the parent's stop")
        except TimedOut:
            os._exit(2)  # not acknowledged: right, nothing reached the remote
        try:
            hold.remote.head(key)
        except NotFoundError:
            os._exit(3)  # acknowledged, and not on the remote: the loss
        os._exit(0)

    children = []
    for key in ("child/paused", "child/syncing"):
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            child(key, go_read)
        children.append((pid, go_write))

    os.kill(os.getpid(), signal.SIGTERM)  # the platform stops the parent only
    deadline = time.monotonic() + 30
    while not stops and time.monotonic() < deadline:
        time.sleep(0.01)  # cargohold flushes, then hands the signal to the app's handler
    assert stops, "the app's SIGTERM handler never ran"

    (paused, go_paused), (syncing, go_syncing) = children
    with hold.sync_paused():  # the hook: nothing reaches the remote meanwhile
        os.write(go_paused, b"1")
        print("paused", os.waitstatus_to_exitcode(os.waitpid(paused, 0)[1]), flush=True)
    os.write(go_syncing, b"1")
    print("syncing", os.waitstatus_to_exitcode(os.waitpid(syncing, 0)[1]), flush=True)
    hold.close()
    """
)


@pytest.fixture
def url(seaweedfs: SeaweedFS, seaweedfs_bucket: str) -> str:
    return s3_url(seaweedfs, seaweedfs_bucket, f"pool-stop-{uuid.uuid4().hex[:8]}")


def test_a_forked_worker_acknowledges_nothing_unsent_after_the_parents_stop(
    url: str, tmp_path: Path
) -> None:
    """A pool's workers are not signalled when the platform stops the parent; they go on
    writing until the parent's handler terminates them, after its flush. A put of theirs
    after the parent's signal must return only once the remote has it: with nothing
    syncing it times out (exit 2) instead of being acknowledged (3, the loss); with the
    parent syncing it returns (0)."""
    script = tmp_path / "parent.py"
    script.write_text(_AFTER_PARENTS_STOP)
    done = subprocess.run(
        [sys.executable, str(script), url, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["paused", "2", "syncing", "0"], done.stderr


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_before_the_rate_is_measured_workers_together_keep_one_batch(
    url: str, tmp_path: Path
) -> None:
    """Until a batch has measured the remote, the backlog is held to one batch, counted
    over every process writing to the data directory: two pool workers that each counted
    their own writes (and two batches) built four batches before the first one ended,
    which a loaded machine did not send within a 3 s grace."""
    hold = cargohold.open(
        url,
        data_dir=tmp_path / "data",
        signal_handlers=False,
        shutdown_grace=10,
        sync_batch=4,
        backpressure="raise",
    )
    try:
        with hold.sync_paused():  # the hook: no batch ends, so nothing is measured
            go_read, go_write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 1
                try:
                    os.read(go_read, 1)  # until the parent wrote its share
                    hold.put("worker/0", b"w")  # the 4th change: one batch
                    try:
                        hold.put("worker/1", b"w")  # the 5th
                        code = 3  # accepted past one batch
                    except StorageFull:
                        code = 0
                finally:
                    os._exit(code)
            for i in range(3):
                hold.put(f"parent/{i}", b"p")
            os.write(go_write, b"1")
            assert _wait_child(pid) == 0
        hold.flush(30)  # the syncer again: all four go, and then the rate is known
        assert sorted(info.key for info in hold.list()) == [
            "parent/0",
            "parent/1",
            "parent/2",
            "worker/0",
        ]
    finally:
        hold.close()
