"""Several processes on one data directory (gunicorn or uvicorn workers): they share the
local tier, one of them syncs, and another takes over when it dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes import FileRemote
from cargohold.remotes.s3 import S3Remote
from testsupport.children import dying_with_parent
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

WORKER = textwrap.dedent(
    """
    import sys, time
    import cargohold
    remote, data_dir, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    hold = cargohold.open(remote, data_dir=data_dir, signal_handlers=False)
    for i in range(count):
        hold.put(f"{name}/{i}", f"{name} {i}".encode())
    hold.flush(60)  # through this process's syncer, or through the one that holds the lock
    print("SYNCING" if hold.status().syncing else "STANDBY", flush=True)
    if sys.argv[5] == "flush":
        print("FLUSHED", flush=True)
    else:
        sys.stdin.readline()  # stay alive until told
    hold.close()
    """
)


def _start(remote: str, data_dir: Path, name: str, count: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        dying_with_parent(
            [sys.executable, "-c", WORKER, remote, str(data_dir), name, str(count), mode]
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_standby_process_flushes_through_the_syncing_one(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    data_dir = tmp_path / "data"
    with cargohold.open(remote.url, data_dir=data_dir, signal_handlers=False) as first:
        first.put("from-first", b"1")
        first.flush(30)
        assert first.status().syncing
        worker = _start(remote.url, data_dir, "w", 25, "flush")
        out, _ = worker.communicate(timeout=120)
        assert out.split() == ["STANDBY", "FLUSHED"]
        assert worker.returncode == 0
        # The standby's writes are in the shared local tier and on the remote.
        assert first.get("w/7") == b"w 7"
        assert {i.key for i in remote.list("w/")} == {f"w/{i}" for i in range(25)}


def test_a_standby_takes_over_when_the_syncing_process_dies(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    data_dir = tmp_path / "data"
    leader = _start(remote.url, data_dir, "leader", 1, "wait")
    assert leader.stdout is not None
    assert leader.stdout.readline().strip() == "SYNCING"
    # resend_after=1: what the dead leader was sending waits 1 s (not 15) before it is resent.
    with cargohold.open(
        remote.url, data_dir=data_dir, signal_handlers=False, resend_after=1
    ) as standby:
        assert not standby.status().syncing
        leader.send_signal(signal.SIGKILL)
        leader.communicate(timeout=30)
        standby.put("after-the-leader-died", b"still synced")
        standby.flush(60)
        assert standby.status().syncing
    assert remote.get("after-the-leader-died") == b"still synced"


SENDING = textwrap.dedent(
    """
    import signal, sys
    import cargohold
    hold = cargohold.open(sys.argv[1], data_dir=sys.argv[2], signal_handlers=False)
    hold.put("k", b"version 1")
    signal.pause()  # the syncer sends "k"; the test kills this process meanwhile
    """
)


def test_a_send_in_flight_at_a_kill_holds_back_only_newer_versions(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """A syncer killed while a request is in flight: the next one may send the same
    version again at once (the same bytes), but a newer version of that key waits for
    ``resend_after``, also across a short clean session, so the late request cannot land
    after it."""
    # The proxy holds the first PUT of "k" until the test releases it: the request is
    # surely in flight at the kill (not merely written down as being sent: the record is
    # made before the request leaves, so a kill then would leave nothing in flight), and
    # it gets no answer before the kill however slowly the test runs.
    release = threading.Event()
    late = Fault(
        status=None, times=1, release=release, match=lambda m, p: m == "PUT" and p.endswith("/k")
    )
    with FaultProxy(seaweedfs.endpoint) as proxy:
        proxy.add(late)
        url = (
            f"s3://{seaweedfs_bucket}/held-{uuid.uuid4().hex[:8]}?endpoint={proxy.endpoint}"
            f"&access_key_id={seaweedfs.access_key}&secret_access_key={seaweedfs.secret_key}"
        )
        data_dir = tmp_path / "data"
        try:
            _kill_while_sending(url, data_dir, late)
            _hold_back_newer_versions(url, data_dir)
        finally:
            release.set()  # the late request of version 1 lands
        late.landed.wait()  # on the remote: nothing of version 1 is in flight any more
        # Once the window is over, version 2 goes, and stays the last.
        with cargohold.open(
            url, data_dir=data_dir, signal_handlers=False, resend_after=0.5
        ) as after:
            after.flush(60)
        check = S3Remote.from_url(url)
        assert check.get("k") == b"version 2"
        assert check.get("other") == b"not held back"


def _kill_while_sending(url: str, data_dir: Path, late: Fault) -> None:
    """Start a process that writes "k", and SIGKILL it (by its PID) once the proxy has
    its PUT of "k" in hand."""
    child = subprocess.Popen(dying_with_parent([sys.executable, "-c", SENDING, url, str(data_dir)]))
    try:
        while not late.taken.wait(0.05):
            assert child.poll() is None, "the writer ended before its PUT reached the remote"
        child.send_signal(signal.SIGKILL)
        assert child.wait(60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _hold_back_newer_versions(url: str, data_dir: Path) -> None:
    """While the killed process's send is in flight: its version goes again at once, a
    newer one waits, in the session after the kill and in a clean one after that."""
    # drain_fraction off: version 2 stays pending (held back) for the whole 600 s window,
    # so with the drain limit the put of "other" would wait or not depending on the speed
    # the resend happened to measure on this machine (with the default resend_after of
    # 15 s, such a wait ends once the window does).
    with cargohold.open(
        url, data_dir=data_dir, signal_handlers=False, resend_after=600, drain_fraction=None
    ) as next_:
        next_.flush(30)  # the same version goes at once
        next_.put("k", b"version 2")
        with pytest.raises(cargohold.TimedOut):
            next_.flush(timeout=1)  # held back: the killed process's send may still land
        next_.put("other", b"not held back", durable=True)  # other keys go at once
        next_.close(flush=False)
    with cargohold.open(url, data_dir=data_dir, signal_handlers=False, resend_after=600) as quick:
        with pytest.raises(cargohold.TimedOut):
            quick.flush(timeout=1)  # a clean session in between did not end the wait
        quick.close(flush=False)
