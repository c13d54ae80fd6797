"""persist_dir with the remote down: a stop ends within the grace and names what remained.

A real process on SeaweedFS behind the fault proxy. The app's SIGTERM handler exits
(``sys.exit``), so the exit hook closes the Hold after the shutdown flush; its main thread
keeps rewriting a file, so the scan thread has changes to push after the signal. Once the
child is set up, the proxy answers every request with 503 (obstore retries those for
``retry_timeout``, 30 s here): before, the scan's puts waited on the remote (write-through
after the signal), ``stop()`` joined the scan thread for up to 30 s and its last scan
waited again, far past the grace of 2 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import proxied_s3_url
from testsupport.children import dying_with_parent
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

CHILD = textwrap.dedent(
    """
    import logging, os, signal, sys, time
    import cargohold
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    url, data_dir, folder = sys.argv[1], sys.argv[2], sys.argv[3]

    def on_sigterm(signum, frame):
        sys.exit(3)  # the app's own handler: an ordinary exit, with exit hooks

    signal.signal(signal.SIGTERM, on_sigterm)
    hold = cargohold.open(
        url, data_dir=data_dir, shutdown_grace=2, retry_timeout=30, drain_fraction=None
    )
    outputs = hold.persist_dir(folder, interval=0.1)
    print("READY", flush=True)
    sys.stdin.readline()  # the test has made the remote unreachable
    with open(os.path.join(folder, "report.txt"), "w") as fh:
        fh.write("the report")
    n = 0
    while True:  # until the signal: a file that keeps changing
        n += 1
        with open(os.path.join(folder, "live.log"), "w") as fh:
            fh.write(f"line {n}")
        if n == 3:
            print("WRITING", flush=True)
        time.sleep(0.05)
    """
)


def test_a_stop_with_the_remote_down_ends_within_the_grace_and_names_what_remained(
    seaweedfs_proxy: FaultProxy, seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = proxied_s3_url(seaweedfs_proxy, seaweedfs, seaweedfs_bucket)
    folder = tmp_path / "outputs"
    proc = subprocess.Popen(
        dying_with_parent([sys.executable, "-c", CHILD, url, str(tmp_path / "data"), str(folder)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "READY"
        seaweedfs_proxy.add(Fault(status=503, times=10**9))  # from now on the remote is down
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "WRITING"
        proc.send_signal(signal.SIGTERM)
        try:
            # Generous (the grace is 2 s): before, this took minutes.
            _, stderr = proc.communicate(timeout=25)
        except subprocess.TimeoutExpired:
            pytest.fail(
                "the process outlived its grace by far with persist_dir and the remote down"
            )
        assert proc.returncode == 3, stderr[-3000:]  # the app's handler ran, and its exit
        unsent = [line for line in stderr.splitlines() if "not on" in line and "outputs" in line]
        assert unsent, stderr[-3000:]
        assert "report.txt" in unsent[-1], unsent
        assert "live.log" in unsent[-1], unsent
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
