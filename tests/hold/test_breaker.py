"""Attacks on the shutdown and fork promises (issue 14) that found a real problem.

Each test is a real process; what counts is what the remote holds afterwards (never the
old data directory) and how the process ended.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cargohold
from cargohold.remotes.file import FileRemote
from cargohold.remotes.s3 import S3Remote
from tests.conftest import proxied_s3_url, s3_url
from testsupport.children import dying_with_parent
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

# Writers on non-daemon threads go on putting while the main thread ends: the interpreter's
# exit closes the Hold (cargohold's exit hook runs before threading joins such threads),
# so puts land during close(). Each writes "try" before and "done" after a put returns.
CLOSE_WHILE_WRITING = textwrap.dedent(
    """
    import os, sys, threading, time
    import cargohold

    remote, data_dir, acked_path = sys.argv[1], sys.argv[2], sys.argv[3]
    hold = cargohold.open(remote, data_dir=data_dir, shutdown_grace=10)
    acked = os.open(acked_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def writer(t):
        i = 0
        while True:
            key = f"t{t}/{i % 50}"
            os.write(acked, f"try {key} {i}\\n".encode())
            try:
                hold.put(key, f"{i}".encode() * 200)
            except cargohold.errors.CargoholdError as exc:
                os.write(acked, f"stop {key} {type(exc).__name__}\\n".encode())
                return
            os.write(acked, f"done {key} {i}\\n".encode())
            i += 1

    for t in range(4):
        threading.Thread(target=writer, args=(t,)).start()
    time.sleep(1.0)
    # The main thread ends here; the writers do not.
    """
)


def _allowed(lines: list[str]) -> dict[str, set[bytes | None]]:
    """Per key: the last acknowledged value, or the one put begun and not acknowledged."""
    done: dict[str, bytes] = {}
    trying: dict[str, bytes] = {}
    for line in lines:
        phase, key, rest = line.split(maxsplit=2)
        if phase == "try":
            trying[key] = rest.encode() * 200
        elif phase == "done":
            done[key] = rest.encode() * 200
            trying.pop(key, None)
    allowed: dict[str, set[bytes | None]] = {key: {value} for key, value in done.items()}
    for key, value in trying.items():
        allowed.setdefault(key, {None}).add(value)
    return allowed


def test_puts_acknowledged_while_the_exit_closes_the_hold_reach_the_remote(
    tmp_path: Path,
) -> None:
    remote_dir = tmp_path / "remote"
    acked = tmp_path / "acked"
    proc = subprocess.run(
        dying_with_parent(
            [
                sys.executable,
                "-c",
                CLOSE_WHILE_WRITING,
                remote_dir.as_uri(),
                str(tmp_path / "data"),
                str(acked),
            ]
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = acked.read_text().split("\n")[:-1]
    assert sum(line.startswith("done") for line in lines) > 50  # the writers did write
    remote = FileRemote(remote_dir)
    held = {info.key for info in remote.list()}
    wrong = {}
    for key, allowed in _allowed(lines).items():
        value = remote.get(key) if key in held else None
        if value not in allowed:
            wrong[key] = None if value is None else value[:8]
    assert not wrong, (len(wrong), sorted(wrong.items())[:5], proc.stderr[-2000:])
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])


# The main thread ends while a non-daemon thread goes on (a server's loop on a thread of
# its own, a queue consumer): the exit hook closed the Hold, and threading has marked the
# main thread stopped while it waits for that thread. The platform's SIGTERM then comes.
MAIN_RETURNED = textwrap.dedent(
    """
    import sys, threading, time
    import cargohold

    hold = cargohold.open(sys.argv[1], data_dir=sys.argv[2], shutdown_grace=2)
    hold.put("k", b"v")

    def worker():
        while threading.main_thread().is_alive():
            time.sleep(0.01)
        print("MAIN-RETURNED", flush=True)
        while True:
            time.sleep(0.05)

    threading.Thread(target=worker).start()
    """
)


def test_sigterm_after_the_main_thread_returned_still_ends_the_process(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        dying_with_parent(
            [
                sys.executable,
                "-c",
                MAIN_RETURNED,
                (tmp_path / "remote").as_uri(),
                str(tmp_path / "data"),
            ]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "MAIN-RETURNED"
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)  # grace 2 s: still running here means SIGTERM was lost
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGTERM, proc.stderr.read()[-2000:] if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert FileRemote(tmp_path / "remote").get("k") == b"v"


# A main thread writing flat out to an S3 remote that is fast at first (the drain rate is
# measured on it) and then turns slow; SIGTERM once the slow spell has lasted a while.
SLOWING_WRITER = textwrap.dedent(
    """
    import os, sys
    import cargohold

    remote, data_dir, acked_path = sys.argv[1], sys.argv[2], sys.argv[3]
    hold = cargohold.open(remote, data_dir=data_dir, shutdown_grace=4)
    acked = os.open(acked_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    i = 0
    while True:
        hold.put(f"w/{i}", b"x" * 2000)
        os.write(acked, f"w/{i}\\n".encode())
        i += 1
    """
)


def _acked(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_a_remote_that_turns_slow_still_drains_every_acknowledged_write_at_sigterm(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    prefix = f"slowing-{uuid.uuid4().hex[:8]}"
    acked = tmp_path / "acked"
    with FaultProxy(seaweedfs.endpoint) as proxy:
        url = proxied_s3_url(proxy, seaweedfs, seaweedfs_bucket, prefix)
        proc = subprocess.Popen(
            dying_with_parent(
                [sys.executable, "-c", SLOWING_WRITER, url, str(tmp_path / "data"), str(acked)]
            ),
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Fast for a while (thousands of writes measured), then each PUT 0.1 s late (a
            # remote that turns 10x slower or more just before the signal loses the backlog
            # allowed at the old rate: no estimate can see that coming).
            # The writer goes at the remote's drain rate (the backlog limit holds it there),
            # which on a loaded two-core machine may be 150 writes/s or less: wait for the
            # count, not for a time that assumes a speed (30 s here failed under load).
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if len(_acked(acked)) > 5000 or proc.poll() is not None:
                    break
                time.sleep(0.05)
            assert len(_acked(acked)) > 5000, "the writer did not get going"
            proxy.add(Fault(status=None, times=10**9, delay=0.1, match=lambda m, p: m == "PUT"))
            time.sleep(3)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == -signal.SIGTERM, stderr[-2000:]
    held = {
        info.key for info in S3Remote.from_url(s3_url(seaweedfs, seaweedfs_bucket, prefix)).list()
    }
    missing = [key for key in _acked(acked) if key not in held]
    assert not missing, (len(missing), len(_acked(acked)), missing[:3], stderr[-1500:])


def test_a_timed_out_attempt_that_lands_late_does_not_overwrite_a_newer_version(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """The first PUT of ``k`` reaches the server 4 s late (the proxy forwards it after its
    delay), past the client's request timeout of 1 s: the remote layer retries it and the
    retry is answered at once. A newer version written afterwards must still be the one
    the remote holds once the late attempt has landed."""
    prefix = f"late-{uuid.uuid4().hex[:8]}"
    with FaultProxy(seaweedfs.endpoint) as proxy:
        proxy.add(
            Fault(status=None, times=1, delay=4, match=lambda m, p: m == "PUT" and p.endswith("/k"))
        )
        url = proxied_s3_url(proxy, seaweedfs, seaweedfs_bucket, prefix)
        with cargohold.open(
            url, data_dir=tmp_path / "data", signal_handlers=False, request_timeout=1
        ) as hold:
            hold.put("k", b"version 1")
            hold.flush(60)
            hold.put("k", b"version 2", durable=True)
            hold.flush(60)
        # Until the late attempt has been forwarded (three PUTs of k in all).
        for _ in range(400):
            if sum(1 for m, p, _ in proxy.requests if m == "PUT" and p.endswith("/k")) >= 3:
                break
            time.sleep(0.05)
        puts = [r for r in proxy.requests if r[0] == "PUT" and r[1].endswith("/k")]
    check = S3Remote.from_url(s3_url(seaweedfs, seaweedfs_bucket, prefix))
    assert check.get("k") == b"version 2", puts


def test_a_newer_version_written_while_the_syncer_picks_its_batch_still_waits(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """As above, with version 2 written at the worst moment: after the syncer has looked
    at which keys must wait (``k`` then clean) and before it reads the journal for its
    next batch. The interleaving is forced by running the put inside the syncer's own
    journal read (a hook, since no server can be made to produce a thread schedule); the
    rows read must be checked again, or version 2 goes out at once and the late attempt
    of version 1 lands after it (this failed about 1 run in 5 under load)."""
    prefix = f"race-{uuid.uuid4().hex[:8]}"
    with FaultProxy(seaweedfs.endpoint) as proxy:
        proxy.add(
            Fault(status=None, times=1, delay=4, match=lambda m, p: m == "PUT" and p.endswith("/k"))
        )
        url = proxied_s3_url(proxy, seaweedfs, seaweedfs_bucket, prefix)
        with cargohold.open(
            url, data_dir=tmp_path / "data", signal_handlers=False, request_timeout=1
        ) as hold:
            written = threading.Event()
            read_journal = hold.local.pending

            def pending(*args: Any, **kwargs: Any) -> Any:
                entry = hold.local.entry("k")
                if not written.is_set() and entry is not None and not entry.pending:
                    hold.put("k", b"version 2")  # version 1 is on the remote by now
                    written.set()
                return read_journal(*args, **kwargs)

            hold.local.pending = pending  # type: ignore[method-assign]
            hold.put("k", b"version 1")
            hold.flush(60)
            assert written.wait(30), "the syncer never read the journal after version 1"
            hold.flush(60)
        for _ in range(400):
            if sum(1 for m, p, _ in proxy.requests if m == "PUT" and p.endswith("/k")) >= 3:
                break
            time.sleep(0.05)
        puts = [r for r in proxy.requests if r[0] == "PUT" and r[1].endswith("/k")]
    check = S3Remote.from_url(s3_url(seaweedfs, seaweedfs_bucket, prefix))
    assert check.get("k") == b"version 2", puts


def test_a_late_attempt_does_not_overwrite_a_key_written_again_after_its_copy_was_evicted(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """As above, but the clean copy of ``k`` is evicted before ``k`` is written again: the
    new row starts again at version 1, the version the late attempt is on the list with."""
    prefix = f"evicted-{uuid.uuid4().hex[:8]}"
    with FaultProxy(seaweedfs.endpoint) as proxy:
        proxy.add(
            Fault(status=None, times=1, delay=4, match=lambda m, p: m == "PUT" and p.endswith("/k"))
        )
        url = proxied_s3_url(proxy, seaweedfs, seaweedfs_bucket, prefix)
        with cargohold.open(
            url,
            data_dir=tmp_path / "data",
            signal_handlers=False,
            request_timeout=1,
            local_max_bytes=300_000,
            max_pending_bytes=300_000,
        ) as hold:
            hold.put("k", b"1" * 100_000)
            hold.flush(60)
            for i in range(6):  # other objects push the clean copy of k out
                hold.put(f"f/{i}", b"f" * 100_000)
                hold.flush(60)
            assert hold.local.entry("k") is None, "the test needs k's copy evicted"
            hold.put("k", b"2" * 100_000, durable=True)
            hold.flush(60)
        for _ in range(400):
            if sum(1 for m, p, _ in proxy.requests if m == "PUT" and p.endswith("/k")) >= 3:
                break
            time.sleep(0.05)
    check = S3Remote.from_url(s3_url(seaweedfs, seaweedfs_bucket, prefix))
    assert check.get("k")[:1] == b"2"
