"""A remote that goes away mid-workload, and a platform that stops the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes.s3 import S3Remote
from tests.conftest import private_seaweedfs, s3_url
from testsupport.children import dying_with_parent
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.holds import write_through_an_outage
from testsupport.servers import SeaweedFS


@pytest.fixture(scope="module")
def own_seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS of this module's own, since its tests stop it."""
    yield from private_seaweedfs("outage")


def test_writes_continue_through_an_outage_and_nothing_is_lost(
    own_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    url = s3_url(own_seaweedfs, "outage")
    hold = cargohold.open(
        url,
        data_dir=tmp_path,
        signal_handlers=False,
        connect_timeout=1,
        retry_timeout=2,
        max_retries=2,
    )
    run = write_through_an_outage(hold, own_seaweedfs.kill, own_seaweedfs.start)
    assert not run.errors, run.errors
    assert run.during_outage, "puts must keep succeeding while the remote is down"
    assert run.status is not None
    assert run.status.pending_count > 0
    assert run.status.last_error is not None
    hold.flush(120)
    check = S3Remote.from_url(url)
    for key, value in run.written.items():
        assert check.get(key) == value, key
    assert hold.status().pending_count == 0
    hold.close()


CHILD = textwrap.dedent(
    """
    import logging, signal, sys, time
    import cargohold
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    url, data_dir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "app-handler":
        def app_handler(signum, frame):
            print("APP HANDLER RAN", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, app_handler)
    hold = cargohold.open(url, data_dir=data_dir, shutdown_grace=float(sys.argv[4]))
    for i in range(20):
        hold.put(f"s/{i}", f"value {i}".encode() * 1000)
    print("PENDING", hold.status().pending_count, flush=True)
    while True:
        time.sleep(0.1)
    """
)


def _child(url: str, data_dir: Path, mode: str, grace: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        dying_with_parent([sys.executable, "-c", CHILD, url, str(data_dir), mode, str(grace)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["PENDING"], line
    assert int(line[1]) > 0, "the test needs writes still pending when SIGTERM arrives"
    return proc


@pytest.fixture
def slow_remote(seaweedfs: SeaweedFS, seaweedfs_bucket: str) -> Iterator[str]:
    """The test bucket behind a proxy that delays each PUT by 0.2 s, so writes are
    still pending when the signal arrives."""
    with FaultProxy(seaweedfs.endpoint) as proxy:
        proxy.add(Fault(status=None, times=10_000, delay=0.2, match=lambda m, p: m == "PUT"))
        prefix = f"sig-{uuid.uuid4().hex[:8]}"
        yield (
            f"s3://{seaweedfs_bucket}/{prefix}?endpoint={proxy.endpoint}"
            f"&access_key_id={seaweedfs.access_key}&secret_access_key={seaweedfs.secret_key}"
        )


def _remote_keys(url: str) -> set[str]:
    return {info.key for info in S3Remote.from_url(url).list()}


def test_sigterm_flushes_pending_writes_then_exits_as_before(
    slow_remote: str, tmp_path: Path
) -> None:
    proc = _child(slow_remote, tmp_path, "default", grace=30)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, stderr  # the default action still happened
    assert "flushed" in stderr
    assert _remote_keys(slow_remote) == {f"s/{i}" for i in range(20)}


def test_sigterm_chains_to_the_apps_own_handler(slow_remote: str, tmp_path: Path) -> None:
    proc = _child(slow_remote, tmp_path, "app-handler", grace=30)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert "APP HANDLER RAN" in stdout
    assert proc.returncode == 0, stderr
    assert _remote_keys(slow_remote) == {f"s/{i}" for i in range(20)}


def test_sigint_flushes_too(slow_remote: str, tmp_path: Path) -> None:
    proc = _child(slow_remote, tmp_path, "default", grace=30)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in stderr  # Python's own SIGINT behaviour, after the flush
    assert _remote_keys(slow_remote) == {f"s/{i}" for i in range(20)}


def test_a_grace_too_short_logs_what_remains(tmp_path: Path) -> None:
    unreachable = "s3://nowhere/x?endpoint=http://127.0.0.1:9&access_key_id=K&secret_access_key=S"
    proc = _child(unreachable, tmp_path, "default", grace=1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)  # a flush that ignored its budget would hang here
    assert proc.returncode == -signal.SIGTERM
    assert "did not reach" in stderr
    assert "20 write(s)" in stderr
    # Nothing is lost: the journal is still on disk for the next start.
    with _reopen(tmp_path, unreachable) as hold:
        assert hold.status().pending_count == 20


def _reopen(data_dir: Path, url: str) -> cargohold.Hold:
    return cargohold.open(url, data_dir=data_dir, signal_handlers=False, retry_timeout=1)


def test_exit_without_close_flushes(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    code = textwrap.dedent(
        f"""
        import cargohold
        hold = cargohold.open({url!r}, data_dir={str(tmp_path)!r})
        for i in range(10):
            hold.put(f"exit/{{i}}", b"x" * 5000)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=dict(os.environ))
    assert _remote_keys(url) == {f"exit/{i}" for i in range(10)}
