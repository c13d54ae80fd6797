"""A stop signal the app outlives: it ignores SIGTERM (SIG_IGN) or its handler does not
exit, so the process runs on after the shutdown flush; later comes another signal, or the
interpreter's ordinary exit.

Each test is a real process driven over stdin; what counts is how it ended and what the
remote holds afterwards.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes.s3 import S3Remote
from testsupport.children import dying_with_parent
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

# SIGTERM ignored; SIGINT either Python's default, or (mode "count-sigint") a handler that
# prints and returns, until the third, which raises KeyboardInterrupt, or (mode
# "dfl-sigint") the default action itself, which ends the process without exit hooks. Commands on stdin:
# "put KEY" (answers "ACK KEY" once put returned), "outlive" (runs on past the grace of
# the stop that came, answers "OUTLIVED"), "atstop NAME" (registers a Hold.at_stop callback
# that prints "STOPHOOK NAME", answers "REGISTERED NAME" once at_stop returned); end of
# input: the main thread returns.
CHILD = textwrap.dedent(
    """
    import logging, os, select, signal, sys, time
    import cargohold
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    url, data_dir, mode, grace = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "dfl-sigint":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if mode == "count-sigint":
        seen = 0
        def on_sigint(signum, frame):
            global seen
            seen += 1
            print("APP SIGINT", seen, flush=True)
            if seen == 3:
                raise KeyboardInterrupt
        signal.signal(signal.SIGINT, on_sigint)
    hold = cargohold.open(
        url, data_dir=data_dir, shutdown_grace=grace, sync_concurrency=1, drain_fraction=None,
        retry_timeout=1, max_retries=1,
    )
    for i in range(20):
        hold.put(f"s/{i}", f"value {i}".encode() * 1000)
    print("PENDING", hold.status().pending_count, flush=True)
    def commands():
        # Short waits, never one blocking read: the kernel may deliver a signal to another
        # thread, and then its Python handler runs only once this main thread runs
        # bytecode again (a read of stdin would hold it until the next command came).
        buffered = b""
        while True:
            while b"\\n" not in buffered:
                if select.select([0], [], [], 0.05)[0]:
                    chunk = os.read(0, 4096)
                    if not chunk:
                        return
                    buffered += chunk
            line, buffered = buffered.split(b"\\n", 1)
            yield line.decode()
    for line in commands():
        command, *args = line.split()
        if command == "put":
            hold.put(args[0], b"after the stop")
            print("ACK", args[0], flush=True)
        elif command == "atstop":
            hold.at_stop(lambda name=args[0]: print("STOPHOOK", name, flush=True))
            print("REGISTERED", args[0], flush=True)
        elif command == "outlive":
            time.sleep(grace + 0.5)  # the app runs on, past the grace counted from the signal
            print("OUTLIVED", flush=True)
    """
)


class Child:
    """The child above, its stderr drained by a thread (a full pipe would block its logging)."""

    def __init__(self, url: str, data_dir: Path, mode: str, grace: float) -> None:
        self.proc = subprocess.Popen(
            dying_with_parent([sys.executable, "-c", CHILD, url, str(data_dir), mode, str(grace)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._stderr: list[str] = []
        self._changed = threading.Condition()
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        line = self.line().split()
        assert line[:1] == ["PENDING"], (line, self.stderr)
        assert int(line[1]) > 0, "the test needs writes still pending when the signal comes"

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self._stderr.append(line)
                self._changed.notify_all()
        with self._changed:
            self._stderr.append("")  # end of output
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self._stderr)

    def wait_stderr(self, *texts: str) -> None:
        """Until the child has logged one of ``texts`` (or ended, which fails)."""

        def seen() -> bool:
            logged = "".join(self._stderr)
            return any(text in logged for text in texts)

        with self._changed:
            found = self._changed.wait_for(lambda: seen() or self._stderr[-1:] == [""], timeout=120)
            assert found, (texts, "".join(self._stderr)[-3000:])
            assert seen(), (texts, "".join(self._stderr)[-3000:])

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.line()

    def end_input(self) -> int:
        """Close its stdin (its main thread returns) and wait for it to end."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.wait()

    def wait(self) -> int:
        code = self.proc.wait(timeout=120)
        self._drain.join(60)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._drain.join(60)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs.endpoint) as proxy:
        yield proxy


def _url(proxy: FaultProxy, seaweedfs: SeaweedFS, bucket: str) -> str:
    return (
        f"s3://{bucket}/outlived-{uuid.uuid4().hex[:8]}?endpoint={proxy.endpoint}"
        f"&access_key_id={seaweedfs.access_key}&secret_access_key={seaweedfs.secret_key}"
    )


def _remote_keys(url: str) -> set[str]:
    return {info.key for info in S3Remote.from_url(url).list()}


@pytest.fixture
def child_of(tmp_path: Path) -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.stop()


def test_every_signal_after_an_ignored_sigterm_reaches_the_app_and_puts_stay_durable(
    proxy: FaultProxy,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    tmp_path: Path,
    child_of: list[Child],
) -> None:
    proxy.add(Fault(status=None, times=10**6, delay=0.1, match=lambda m, p: m == "PUT"))
    url = _url(proxy, seaweedfs, seaweedfs_bucket)
    child = Child(url, tmp_path, "count-sigint", grace=30)
    child_of.append(child)
    child.proc.send_signal(signal.SIGTERM)
    child.wait_stderr("flushed to")  # the stop's flush; then nothing happens, as the app wants
    assert _remote_keys(url) == {f"s/{i}" for i in range(20)}
    for n in range(1, 3):
        assert child.ask(f"put after/{n}") == f"ACK after/{n}"
        assert f"after/{n}" in _remote_keys(url)  # a put after a stop returns once it is there
        child.proc.send_signal(signal.SIGINT)
        assert child.line() == f"APP SIGINT {n}"  # the app's handler runs, every time
    assert child.ask("put after/3") == "ACK after/3"
    child.proc.send_signal(signal.SIGINT)
    assert child.line() == "APP SIGINT 3"
    assert child.wait() == -signal.SIGINT, child.stderr[-3000:]  # its KeyboardInterrupt
    assert "KeyboardInterrupt" in child.stderr
    assert _remote_keys(url) == {f"s/{i}" for i in range(20)} | {f"after/{n}" for n in (1, 2, 3)}


def test_an_exit_after_an_outlived_stop_does_not_flush_past_its_grace(
    proxy: FaultProxy,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    tmp_path: Path,
    child_of: list[Child],
) -> None:
    down = Fault(status=503, times=10**6, match=lambda m, p: m == "PUT")
    proxy.add(down)
    url = _url(proxy, seaweedfs, seaweedfs_bucket)
    child = Child(url, tmp_path, "default", grace=5)
    child_of.append(child)
    child.proc.send_signal(signal.SIGTERM)
    child.wait_stderr("did not reach")  # the stop's flush ran out of grace: the remote is down
    assert child.ask("outlive") == "OUTLIVED"  # the app ran on past that grace
    # An exit with no new signal is the app finishing that stop, late: the host's SIGKILL
    # counts from the signal, so it closes at once and logs what the remote misses.
    assert child.end_input() == 0, child.stderr[-3000:]
    assert "closing with 20 change(s)" in child.stderr, child.stderr[-3000:]
    assert not _remote_keys(url)
    down.times = 0  # which stays in the journal, for the next Hold on this data directory
    with cargohold.open(url, data_dir=tmp_path, signal_handlers=False) as hold:
        hold.flush(60)
    assert _remote_keys(url) == {f"s/{i}" for i in range(20)}


def test_an_exit_during_the_stops_flush_waits_for_it_within_the_grace(
    proxy: FaultProxy,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    tmp_path: Path,
    child_of: list[Child],
) -> None:
    proxy.add(Fault(status=None, times=10**6, delay=0.2, match=lambda m, p: m == "PUT"))
    url = _url(proxy, seaweedfs, seaweedfs_bucket)
    child = Child(url, tmp_path, "default", grace=30)
    child_of.append(child)
    child.proc.send_signal(signal.SIGTERM)
    child.wait_stderr("flushing before shutdown")
    assert child.end_input() == 0, child.stderr[-3000:]  # the main thread returns meanwhile
    assert "Traceback" not in child.stderr, child.stderr[-3000:]
    assert _remote_keys(url) == {f"s/{i}" for i in range(20)}


def test_a_signal_after_an_outlived_stop_begins_a_stop_of_its_own(
    proxy: FaultProxy,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    tmp_path: Path,
    child_of: list[Child],
) -> None:
    down = Fault(status=503, times=10**6, match=lambda m, p: m == "PUT")
    proxy.add(down)
    url = _url(proxy, seaweedfs, seaweedfs_bucket)
    child = Child(url, tmp_path, "dfl-sigint", grace=5)
    child_of.append(child)
    child.proc.send_signal(signal.SIGTERM)
    child.wait_stderr("did not reach")
    assert child.ask("outlive") == "OUTLIVED"
    down.times = 0
    child.proc.send_signal(signal.SIGINT)  # its default action: no exit hook runs after it
    assert child.wait() == -signal.SIGINT, child.stderr[-3000:]
    assert child.stderr.count("flushing before shutdown") == 2, child.stderr[-3000:]
    assert _remote_keys(url) == {f"s/{i}" for i in range(20)}, child.stderr[-3000:]


def test_a_stop_the_process_outlived_gives_up_later_callbacks_only_at_the_next_stop(
    proxy: FaultProxy,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    tmp_path: Path,
    child_of: list[Child],
) -> None:
    """Before, the Hold stayed stopped for good after a stop it outlived: every later
    at_stop callback (a lease's give-up) ran as soon as it was registered."""
    url = _url(proxy, seaweedfs, seaweedfs_bucket)
    child = Child(url, tmp_path, "default", grace=2)
    child_of.append(child)
    assert child.ask("atstop before") == "REGISTERED before"
    child.proc.send_signal(signal.SIGTERM)  # ignored by the app: a stop it outlives
    # The stop's flush ends either way (on a loaded machine 2 s may not ship all 20 writes;
    # what this test is about is the callbacks, not the flush).
    child.wait_stderr("flushed to", "did not reach")
    assert child.line() == "STOPHOOK before"  # given up at the stop, as always
    assert child.ask("outlive") == "OUTLIVED"
    assert child.ask("atstop after") == "REGISTERED after"  # kept, not given up at once
    child.proc.send_signal(signal.SIGTERM)  # a new stop: it gives up what was kept
    assert child.line() == "STOPHOOK after", child.stderr[-3000:]
    assert child.end_input() == 0, child.stderr[-3000:]
