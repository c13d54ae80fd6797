"""Stop signals reach the main thread: every thread cargohold starts blocks SIGTERM, SIGINT
and SIGHUP (see cargohold._threads), so the kernel never hands one to a thread on which
Python only sets a flag while the main thread sits in a C-level read.

Real processes on SeaweedFS: the child reports every thread's signal mask (from /proc),
then blocks its main thread in ``os.read`` of a pipe while its syncer is busy sending;
SIGTERM must flush and end it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cargohold.remotes.s3 import S3Remote
from tests.conftest import proxied_s3_url
from testsupport.children import dying_with_parent
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/task")

COUNT = 20

# Opens a Hold with a persist_dir scan thread, reads through once from the main thread,
# writes COUNT values, prints "THREAD name open-signals" for every thread but the main
# one (Python's name for it, else the kernel's), then "PENDING n", and blocks its main thread in a read of stdin (a C-level read:
# no bytecode runs until a signal interrupts it or a byte comes).
CHILD = textwrap.dedent(
    """
    import logging, os, signal, sys, threading
    import cargohold
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    url, data_dir, folder, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    hold = cargohold.open(
        url, data_dir=data_dir, shutdown_grace=20, sync_concurrency=1, drain_fraction=None
    )
    hold.persist_dir(folder, interval=0.2)
    try:
        hold.get("never-written")
    except FileNotFoundError:
        pass
    for i in range(count):
        hold.put(f"s/{i}", f"value {i}".encode() * 1000)
    stop = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    python_names = {thread.native_id: thread.name for thread in threading.enumerate()}
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        if int(tid) == os.getpid():
            continue
        with open(f"/proc/self/task/{tid}/status") as fh:
            status = dict(line.split(":", 1) for line in fh.read().splitlines())
        blocked = int(status["SigBlk"].strip(), 16)
        opened = [s.name for s in stop if not blocked >> (s - 1) & 1]
        name = python_names.get(int(tid), status["Name"].strip()).replace(" ", "_")
        print("THREAD", name, ",".join(opened) or "-", flush=True)
    print("PENDING", hold.status().pending_count, flush=True)
    os.read(0, 1)
    """
)


def test_sigterm_reaches_a_main_thread_blocked_in_a_read_while_the_syncer_sends(
    seaweedfs_proxy: FaultProxy, seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    # Every PUT waits a little, so the syncer is in the middle of sending at the signal.
    seaweedfs_proxy.add(Fault(status=None, times=10**6, delay=0.1, match=lambda m, p: m == "PUT"))
    url = proxied_s3_url(seaweedfs_proxy, seaweedfs, seaweedfs_bucket)
    proc = subprocess.Popen(
        dying_with_parent(
            [
                sys.executable,
                "-c",
                CHILD,
                url,
                str(tmp_path / "data"),
                str(tmp_path / "outputs"),
                str(COUNT),
            ]
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        threads: list[tuple[str, str]] = []
        line = proc.stdout.readline().split()
        while line[:1] == ["THREAD"]:
            threads.append((line[1], line[2]))
            line = proc.stdout.readline().split()
        assert line[:1] == ["PENDING"], (line, threads)
        assert int(line[1]) > 0, "the test needs writes still pending when the signal comes"
        names = {name for name, _ in threads}
        assert {"cargohold-sync", "cargohold-shutdown"} <= names, threads
        assert any(name.startswith("cargohold-persist") for name in names), threads
        open_to_signals = [(name, opened) for name, opened in threads if opened != "-"]
        assert open_to_signals == [], "threads the kernel may give a stop signal to"

        proc.send_signal(signal.SIGTERM)
        try:
            # Generous: the grace is 20 s; what matters is that it ends on its own.
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not end a process whose main thread was in a read")
        assert proc.returncode == -signal.SIGTERM, stderr[-3000:]
        assert "flushed to" in stderr, stderr[-3000:]
        remote = S3Remote.from_url(url)
        try:
            assert {info.key for info in remote.list("s/")} == {f"s/{i}" for i in range(COUNT)}
        finally:
            remote.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
