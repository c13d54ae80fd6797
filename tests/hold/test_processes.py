"""Several processes on one data directory (gunicorn or uvicorn workers): they share the
local tier, one of them syncs, and another takes over when it dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes import FileRemote
from testsupport.children import die_with_parent

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
        [sys.executable, "-c", WORKER, remote, str(data_dir), name, str(count), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
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


KILLED_WHILE_WRITING = textwrap.dedent(
    """
    import os, sys
    import cargohold
    hold = cargohold.open(sys.argv[1], data_dir=sys.argv[2], signal_handlers=False)
    with hold.syncer.paused():
        hold.put("written-before-the-kill", b"x")
        os._exit(0)  # the session is left unclean: requests may have been in flight
    """
)


def test_a_hold_back_outlives_a_short_clean_session(tmp_path: Path) -> None:
    """After a kill, changes the dead syncer may have been sending wait ``resend_after``.
    A process that opens and closes cleanly inside that window (a CLI command, a worker
    restart) must not end the wait for the next one."""
    remote = FileRemote(tmp_path / "remote")
    data_dir = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_WRITING, remote.url, str(data_dir)], check=True
    )
    with cargohold.open(
        remote.url, data_dir=data_dir, signal_handlers=False, resend_after=6
    ) as quick:
        assert quick.status().pending_count == 1
        quick.close(flush=False)
    with cargohold.open(
        remote.url, data_dir=data_dir, signal_handlers=False, resend_after=6
    ) as later:
        with pytest.raises(cargohold.TimedOut):
            later.flush(timeout=1)  # still held back: the window started in the killed session
        assert later.status().pending_count == 1
        later.close(flush=False)
    with pytest.raises(cargohold.NotFoundError):
        remote.head("written-before-the-kill")
    # Once the window is over, it is sent.
    with cargohold.open(
        remote.url, data_dir=data_dir, signal_handlers=False, resend_after=0.5
    ) as after:
        after.flush(60)
    assert remote.get("written-before-the-kill") == b"x"
