"""Leases end with their holder: a graceful stop (SIGTERM, close(), a build that raises)
gives every lease up at once, so the next instance builds without waiting for the expiry.

Every test here sets the lease time to 600 s: a caller that waited for an expiry would run
into the test's own timeout instead of passing. Nothing here asserts a duration.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold import ConfigError, Hold
from cargohold.errors import NotFoundError
from cargohold.keys import internal_key
from cargohold.memo import Memo, MemoProgress
from cargohold.remotes import MemoryRemote
from tests.conftest import s3_url
from testsupport.children import dying_with_parent
from testsupport.servers import SeaweedFS

LONG = 600.0  # lease seconds: waiting for an expiry would pass any test's timeout

BUILDER = textwrap.dedent(
    """
    import os, sys, threading, time
    from pathlib import Path
    import cargohold
    url, data_dir, builds = sys.argv[1:4]
    hold = cargohold.open(url, data_dir=data_dir)  # signal handlers on, as in an app
    memo = hold.memo("video", version="v1")

    def build(inputs, workdir):
        (Path(builds) / str(os.getpid())).write_text("building")
        print("BUILDING", flush=True)
        time.sleep(float(os.environ["BUILD_SECONDS"]))
        out = workdir / "take_1.mp4"
        out.write_bytes(b"video of " + inputs["prompt"].encode())
        return out

    def ask():
        entry = memo.get_or_create({"prompt": "a cat surfing"}, build)
        print("RESULT", entry.path.read_bytes().decode(), entry.hit, flush=True)

    # The build runs beside the main thread, as in a server (daemon: a Ctrl-C ends the app).
    worker = threading.Thread(target=ask, daemon=True)
    worker.start()
    worker.join()
    hold.close()
    """
)


def _builder(url: str, data_dir: Path, builds: Path, build_seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        dying_with_parent([sys.executable, "-c", BUILDER, url, str(data_dir), str(builds)]),
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "BUILD_SECONDS": str(build_seconds),
            "CARGOHOLD_LEASE_TTL": str(LONG),
            "CARGOHOLD_SHUTDOWN_GRACE": "10",
        },
    )


def _lease_key(memo: Memo, inputs: dict[str, Any]) -> str:
    return internal_key(f"leases/memo/{memo.namespace}/{memo.version}/{memo.digest(inputs)}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_build_gives_its_lease_up_and_the_next_process_builds_at_once(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path, signum: signal.Signals
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    builds = tmp_path / "builds"
    builds.mkdir()
    first = _builder(url, tmp_path / "first", builds, build_seconds=3600)
    try:
        assert first.stdout is not None
        assert first.stdout.readline().split() == ["BUILDING"]
        with cargohold.open(url, data_dir=tmp_path / "observer", signal_handlers=False) as obs:
            memo = obs.memo("video", version="v1")
            key = _lease_key(memo, {"prompt": "a cat surfing"})
            assert obs.remote.head(key).size > 0, "the builder holds its lease while it runs"
            first.send_signal(signum)
            first.communicate(timeout=60)
            # The default action (SIGINT: KeyboardInterrupt, uncaught) ends it once the
            # shutdown flush has given the lease up.
            assert first.returncode == -signum
            with pytest.raises(NotFoundError):
                obs.remote.head(key)
        second = _builder(url, tmp_path / "second", builds, build_seconds=0)
        out, _ = second.communicate(timeout=120)  # a wait for the 600 s expiry fails here
        assert second.returncode == 0
        assert "RESULT video of a cat surfing False" in out, out
        assert len(list(builds.iterdir())) == 2, "the stopped build, then one more"
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()


@pytest.fixture
def shared() -> Iterator[str]:
    name = f"leases-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    MemoryRemote.forget(name)


def _open(remote: str, data_dir: Path, **settings: Any) -> Hold:
    return cargohold.open(remote, data_dir=data_dir, signal_handlers=False, **settings)


def test_a_build_that_raises_gives_its_lease_up(shared: str, tmp_path: Path) -> None:
    with _open(shared, tmp_path / "a", lease_ttl=LONG) as a, _open(shared, tmp_path / "b") as b:
        memo = a.memo("tts")

        def fail(inputs: dict[str, Any], workdir: Path) -> bytes:
            assert a.remote.head(_lease_key(memo, inputs)).size > 0  # held while it runs
            raise RuntimeError("the paid API said no")

        with pytest.raises(RuntimeError, match="paid API"):
            memo.get_or_create({"text": "hello"}, fail)
        with pytest.raises(NotFoundError):
            a.remote.head(_lease_key(memo, {"text": "hello"}))
        # Another instance builds at once (it would otherwise wait 600 s).
        entry = b.memo("tts", lease_ttl=LONG).get_or_create({"text": "hello"}, lambda i, w: b"ok")
        assert (entry.value, entry.hit) == (b"ok", False)


def test_close_gives_up_the_lease_of_a_build_still_running(shared: str, tmp_path: Path) -> None:
    a = _open(shared, tmp_path / "a", lease_ttl=LONG)
    memo = a.memo("video")
    inputs = {"prompt": "a dog"}
    started, finish = threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def slow(inputs: dict[str, Any], workdir: Path) -> bytes:
        started.set()
        finish.wait(60)
        return b"late"

    def run() -> None:
        try:
            memo.get_or_create(inputs, slow)
            outcome.append(None)
        except BaseException as exc:  # the Hold closed under it
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert started.wait(30)
        key = _lease_key(memo, inputs)
        remote = a.remote
        a.close()
        with pytest.raises(NotFoundError):
            remote.head(key)
        with _open(shared, tmp_path / "b", lease_ttl=LONG) as b:
            entry = b.memo("video").get_or_create(inputs, lambda i, w: b"second")
            assert (entry.value, entry.hit) == (b"second", False)
    finally:
        finish.set()
        worker.join(60)
    assert outcome
    assert isinstance(outcome[0], cargohold.HoldClosed)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if "waiting" in record.getMessage():
            self.seen.set()


def test_a_waiter_warns_who_holds_the_lease_and_since_when_and_reports_progress(
    shared: str, tmp_path: Path
) -> None:
    warnings = _Warnings()
    logger = logging.getLogger("cargohold.memo")
    logger.addHandler(warnings)
    a = _open(shared, tmp_path / "a", lease_ttl=LONG)
    b = _open(shared, tmp_path / "b", lease_ttl=LONG)
    started, finish = threading.Event(), threading.Event()
    events: list[MemoProgress] = []
    waiting = threading.Event()

    def slow(inputs: dict[str, Any], workdir: Path) -> bytes:
        started.set()
        finish.wait(120)
        return b"built by a"

    def progress(event: MemoProgress) -> None:
        events.append(event)
        if event.stage == "waiting":
            waiting.set()

    builder = threading.Thread(target=lambda: a.memo("video").get_or_create({"p": 1}, slow))
    found: list[Any] = []
    waiter = threading.Thread(
        target=lambda: found.append(
            b.memo("video").get_or_create({"p": 1}, slow, progress=progress)
        )
    )
    try:
        builder.start()
        assert started.wait(30)
        waiter.start()
        assert waiting.wait(60), "no waiting progress"
        assert warnings.seen.wait(60), "no WARNING while waiting"
    finally:
        finish.set()
        builder.join(60)
        waiter.join(60)
        logger.removeHandler(warnings)
        a.close()
        b.close()
    line = next(text for text in warnings.lines if "waiting" in text)
    me = f":{os.getpid()}:"
    assert me in line, line
    assert " since " in line, line
    assert "CARGOHOLD_LEASE_TTL" in line, line
    first = next(e for e in events if e.stage == "waiting")
    assert first.holder is not None
    assert me in first.holder
    assert " since " in first.holder
    assert first.fraction is None
    assert "being built by" in first.message
    assert events[-1].stage == "done"
    assert events[-1].fraction == 1.0
    assert found[0].value == b"built by a"
    assert found[0].hit


def test_a_builder_reports_building_then_done(shared: str, tmp_path: Path) -> None:
    events: list[MemoProgress] = []
    with _open(shared, tmp_path / "a") as hold:
        memo = hold.memo("tts")
        memo.get_or_create({"t": "hi"}, lambda i, w: b"x", progress=events.append)
        assert [e.stage for e in events] == ["building", "done"]
        memo.get_or_create({"t": "hi"}, lambda i, w: b"x", progress=events.append)
        assert len(events) == 2, "a hit found at once reports nothing"


def test_the_lease_time_is_a_setting_checked_at_open(
    shared: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CARGOHOLD_LEASE_TTL", "0.5s")
    with pytest.raises(ConfigError, match=r"CARGOHOLD_LEASE_TTL.*1s <= x <= 1d"):
        _open(shared, tmp_path / "a")
    monkeypatch.setenv("CARGOHOLD_LEASE_TTL", "5m")
    with _open(shared, tmp_path / "a") as hold:
        assert hold.memo("tts").lease_ttl == 300.0
        assert hold.memo("tts", lease_ttl=2).lease_ttl == 2.0
        with pytest.raises(ConfigError, match="CARGOHOLD_LEASE_TTL"):
            hold.memo("tts", lease_ttl=0)
