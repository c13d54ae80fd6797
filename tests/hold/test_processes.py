"""Several processes on one data directory (gunicorn or uvicorn workers): they share the
local tier, one of them syncs, and another takes over when it dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
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


KILLED_WHILE_SENDING = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import cargohold
    hold = cargohold.open(sys.argv[1], data_dir=sys.argv[2], signal_handlers=False)
    hold.put("k", b"version 1")
    # Killed once the syncer has written down that it is sending "k" (the proxy holds
    # that request back, so it is in flight at the kill).
    while "k" not in json.loads(hold.local.info_value("sync_session") or "{}").get("sending", {}):
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_send_in_flight_at_a_kill_holds_back_only_newer_versions(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """A syncer killed while a request is in flight: the next one may send the same
    version again at once (the same bytes), but a newer version of that key waits for
    ``resend_after``, also across a short clean session, so the late request cannot land
    after it."""
    with FaultProxy(seaweedfs.endpoint) as proxy:
        late = Fault(
            status=None, times=1, delay=3, match=lambda m, p: m == "PUT" and p.endswith("/k")
        )
        proxy.add(late)
        url = (
            f"s3://{seaweedfs_bucket}/held-{uuid.uuid4().hex[:8]}?endpoint={proxy.endpoint}"
            f"&access_key_id={seaweedfs.access_key}&secret_access_key={seaweedfs.secret_key}"
        )
        data_dir = tmp_path / "data"
        killed = subprocess.run(
            dying_with_parent([sys.executable, "-c", KILLED_WHILE_SENDING, url, str(data_dir)]),
            timeout=60,
        )
        assert killed.returncode == -signal.SIGKILL
        with cargohold.open(
            url, data_dir=data_dir, signal_handlers=False, resend_after=600
        ) as next_:
            next_.flush(30)  # the same version goes at once
            next_.put("k", b"version 2")
            with pytest.raises(cargohold.TimedOut):
                next_.flush(timeout=1)  # held back: the killed process's send may still land
            next_.put("other", b"not held back", durable=True)  # other keys go at once
            next_.close(flush=False)
        with cargohold.open(
            url, data_dir=data_dir, signal_handlers=False, resend_after=600
        ) as quick:
            with pytest.raises(cargohold.TimedOut):
                quick.flush(timeout=1)  # a clean session in between did not end the wait
            quick.close(flush=False)
        # The late request of version 1 lands (the proxy forwards it after its delay).
        while sum(1 for m, path, _ in proxy.requests if m == "PUT" and path.endswith("/k")) < 2:
            time.sleep(0.05)
        # Once the window is over, version 2 goes, and stays the last.
        with cargohold.open(
            url, data_dir=data_dir, signal_handlers=False, resend_after=0.5
        ) as after:
            after.flush(60)
        check = S3Remote.from_url(url)
        assert check.get("k") == b"version 2"
        assert check.get("other") == b"not held back"
