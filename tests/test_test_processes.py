"""Processes the tests start die with the test run, even one killed outright (a CI
timeout, a SIGKILL): the kernel sends them SIGKILL when their parent dies
(``testsupport.children.die_with_parent``), which no server can ignore or hang in."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from testsupport.servers import SeaweedFS

ROOT = Path(__file__).resolve().parents[1]

# A pytest-like parent: starts a real SeaweedFS, and a throwaway server that ignores
# SIGTERM (as a hung weed, or a filer, may), prints their PIDs, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from testsupport.children import dying_with_parent
    from testsupport.servers import SeaweedFS

    stubborn = subprocess.Popen(
        dying_with_parent([sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('up', flush=True); time.sleep(600)"]),
        stdout=subprocess.PIPE, text=True,
    )
    assert stubborn.stdout.readline().strip() == "up"
    weed = SeaweedFS().start()
    print(weed.pid, stubborn.pid, weed.workdir, flush=True)
    time.sleep(600)
    """
)


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (dead, waiting for whoever reaps orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_gone(pids: list[int], seconds: float = 20.0) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = [pid for pid in pids if not _gone(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if not _gone(pid)]
    return alive


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_servers_die_with_a_killed_test_run(how: signal.Signals) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    workdir: Path | None = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().split()
        assert len(line) == 3, line
        pids = [int(pid) for pid in line[:2]]
        workdir = Path(line[2])
        assert not any(_gone(pid) for pid in pids)  # both running
        parent.send_signal(how)
        parent.wait(30)
        assert _wait_gone(pids) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(30)
        if parent.stdout is not None:
            parent.stdout.close()
        for pid in pids:  # never leave one behind, even when the test fails
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def test_a_server_whose_port_another_process_took_starts_on_new_ports() -> None:
    """Ports are picked by binding port 0 and closing it; another test worker may take one
    before the server binds it (seen in a run with two workers): the first start tries
    new ports instead of failing the test."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = SeaweedFS()
        server.ports["filer.port"] = taken.getsockname()[1]
        with server:
            assert server.ports["filer.port"] != taken.getsockname()[1]
            bucket = server.make_bucket()
            assert bucket
