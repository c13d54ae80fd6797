"""Per-request scratch: always removed, bounded by a quota, a debug bundle on failure."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold import Hold, InvalidInput, StorageFull
from cargohold.remotes import FileRemote, MemoryRemote
from cargohold.scratch import Scratch, collect_bundles, remove_dead
from testsupport.children import dying_with_parent

OpenHold = Callable[..., Hold]


def run(
    hold: Hold, body: Callable[[Scratch], object], request_id: str | None = None, **kw: Any
) -> None:
    """One request: ``body`` runs inside a workspace."""
    with hold.scratch(request_id, **kw) as work:
        body(work)


def save_then_raise(error: BaseException) -> Callable[[Scratch], None]:
    def body(work: Scratch) -> None:
        work.save("input.bin", b"i" * 100)
        raise error

    return body


@pytest.fixture
def open_hold(tmp_path: Path) -> Iterator[OpenHold]:
    """Holds on a fresh memory remote, with their own temp directory (so their own
    workspace folder, swept of dead workspaces on first use)."""
    name = f"scratch-{uuid.uuid4().hex}"
    opened: list[Hold] = []

    def make(**settings: Any) -> Hold:
        settings.setdefault("signal_handlers", False)
        settings.setdefault("temp_dir", tmp_path / "tmp")
        remote = settings.pop("remote", f"memory://{name}")
        hold = cargohold.open(remote, data_dir=tmp_path / "data", **settings)
        opened.append(hold)
        return hold

    yield make
    for hold in opened:
        hold.close(timeout=0)
    MemoryRemote.forget(name)


def test_each_request_gets_its_own_directory_removed_on_exit(open_hold: OpenHold) -> None:
    hold = open_hold()
    with hold.scratch("req-42") as first, hold.scratch("req-42") as second:
        assert first.dir != second.dir
        assert first.dir.is_dir()
        name = first.dir.name
        assert "-req-42-" in name
        assert name.startswith(datetime.now(UTC).strftime("%Y%m%d"))
        upload = first.save("upload.wav", b"RIFF....")
        assert upload == first.dir / "upload.wav"
        (first.path("out/trimmed.mp3")).write_bytes(b"ID3")
    assert not upload.parent.exists()
    assert not any(upload.parent.parent.iterdir()), "no directory or lock file is left"


def test_removed_after_an_exception_and_after_keyboard_interrupt(open_hold: OpenHold) -> None:
    hold = open_hold(debug_bundles=False)
    seen: list[Path] = []

    def fail(work: Scratch, error: BaseException) -> None:
        seen.append(work.save("a.wav", b"x" * 10))
        raise error

    with pytest.raises(ValueError, match="bad audio"):
        run(hold, lambda work: fail(work, ValueError("bad audio")))
    with pytest.raises(KeyboardInterrupt):
        run(hold, lambda work: fail(work, KeyboardInterrupt()))
    assert len(seen) == 2
    assert not any(path.exists() for path in seen)
    assert not any(path.parent.exists() for path in seen)


HOLDER = textwrap.dedent(
    """
    import sys, time
    import cargohold
    data_dir, temp_dir = sys.argv[1:3]
    hold = cargohold.open("memory://x", data_dir=data_dir, temp_dir=temp_dir,
                          signal_handlers=False)
    with hold.scratch("held") as work:
        work.save("input.bin", b"z" * 1000)
        print(work.dir, flush=True)
        time.sleep(120)
    """
)


def test_workspaces_of_dead_processes_are_removed_at_the_next_start(
    open_hold: OpenHold, tmp_path: Path
) -> None:
    def holder() -> tuple[subprocess.Popen[str], Path]:
        proc = subprocess.Popen(
            dying_with_parent(
                [sys.executable, "-c", HOLDER, str(tmp_path / "other"), str(tmp_path / "tmp")]
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        return proc, Path(proc.stdout.readline().strip())

    dead, dead_dir = holder()
    alive, alive_dir = holder()
    try:
        dead.send_signal(signal.SIGKILL)  # no cleanup runs: the directory stays behind
        dead.communicate(timeout=30)
        assert dead_dir.is_dir()
        with open_hold().scratch():  # the first use in this process sweeps
            pass
        assert not dead_dir.exists()
        assert not dead_dir.with_name(dead_dir.name + ".lock").exists()
        assert alive_dir.is_dir(), "a live process keeps its workspace"
        assert remove_dead(alive_dir.parent) == 0
    finally:
        alive.send_signal(signal.SIGKILL)
        alive.communicate(timeout=30)
    assert remove_dead(alive_dir.parent) == 1
    assert not alive_dir.exists()


def test_the_quota_stops_writes_through_the_workspace(open_hold: OpenHold) -> None:
    hold = open_hold()
    with hold.scratch("quota", quota=1000) as work:
        work.save("first.bin", b"a" * 600)
        with pytest.raises(StorageFull) as err:
            work.save("second.bin", iter([b"b" * 300, b"b" * 300]))
        message = str(err.value)
        assert "quota of 1000 bytes" in message
        assert "scratch_quota" in message
        assert "CARGOHOLD_SCRATCH_QUOTA" in message
        assert isinstance(err.value, OSError)
        assert sorted(p.name for p in work.dir.iterdir()) == ["first.bin"]  # no half file
        with work.open("log.txt") as out:
            out.write(b"c" * 300)
            with pytest.raises(StorageFull):
                out.write(b"c" * 200)  # refused before it reaches the disk
        assert (work.dir / "log.txt").stat().st_size == 300
        assert work.check() == 900
        with work.open("log.txt", "rb") as back:
            assert back.read() == b"c" * 300
    with pytest.raises(InvalidInput, match="size"):
        hold.scratch(quota="lots")
    with pytest.raises(InvalidInput, match="relative file name"), hold.scratch() as work:
        work.save("../escape.txt", b"x")


def test_files_written_by_other_means_are_counted_at_the_next_call_and_at_exit(
    open_hold: OpenHold, caplog: pytest.LogCaptureFixture
) -> None:
    hold = open_hold()
    with hold.scratch("ffmpeg", quota="1KiB") as work:
        work.path("direct.bin").write_bytes(b"d" * 900)  # e.g. ffmpeg writing its output
        with pytest.raises(StorageFull):
            work.save("more.bin", b"m" * 200)
    caplog.set_level(logging.INFO, logger="cargohold.scratch")
    folders: list[Path] = []

    def write_directly(work: Scratch) -> None:
        work.path("out.mp3").write_bytes(b"o" * 2000)
        folders.append(work.dir)

    with pytest.raises(StorageFull, match="quota of 1024 bytes"):
        run(hold, write_directly, quota=1024)
    assert not folders[0].exists()
    [record] = [r.cargohold_request for r in caplog.records if hasattr(r, "cargohold_request")]
    assert record["outcome"] == "over-quota"


def test_a_failure_uploads_a_debug_bundle_with_secrets_redacted(open_hold: OpenHold) -> None:
    hold = open_hold()

    def process(work: Scratch) -> None:
        work.record["user"] = "ana"
        work.record["headers"] = {"Authorization": "Bearer abc.def.ghi", "Accept": "audio/*"}
        work.record["hf_token"] = "hf_abcdefghijklmnopqrstuvwx"
        work.save("upload.wav", io.BytesIO(b"RIFF" + b"\x00" * 5000))
        work.path("stage/trimmed.mp3").write_bytes(b"ID3 partial")
        raise RuntimeError("ffmpeg failed with api_key=sk-abcdefghijklmnopqrstuvwxyz0123")

    with pytest.raises(RuntimeError) as err:
        run(hold, process, "req-7")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    location = f"debug/{day}/req-7/"
    assert err.value.debug_bundle == location  # type: ignore[attr-defined]
    assert any(location in note for note in err.value.__notes__)
    keys = sorted(info.key for info in hold.remote.list(location))  # write-through: there now
    assert keys == [
        f"{location}files/stage/trimmed.mp3",
        f"{location}files/upload.wav",
        f"{location}record.json",
        f"{location}traceback.txt",
    ]
    assert hold.remote.get(f"{location}files/upload.wav").startswith(b"RIFF")
    record = json.loads(hold.remote.get(f"{location}record.json"))
    assert record["outcome"] == "error"
    assert record["request_id"] == "req-7"
    assert record["input_bytes"] == 5004
    assert record["fields"]["user"] == "ana"
    assert record["fields"]["headers"] == {"Authorization": "[redacted]", "Accept": "audio/*"}
    assert record["fields"]["hf_token"] == "[redacted]"
    trace = hold.remote.get(f"{location}traceback.txt").decode()
    assert "RuntimeError: ffmpeg failed" in trace
    everything = hold.remote.get(f"{location}record.json").decode() + trace
    for secret in ("abc.def.ghi", "hf_abcdefghijklmnopqrstuvwx", "sk-abcdefghijklmnop"):
        assert secret not in everything


def test_no_bundle_when_turned_off_or_interrupted(open_hold: OpenHold) -> None:
    hold = open_hold(debug_bundles=False)
    with pytest.raises(ValueError) as err:
        run(hold, save_then_raise(ValueError("boom")))
    assert not hasattr(err.value, "debug_bundle")
    hold = open_hold()
    with pytest.raises(KeyboardInterrupt):
        run(hold, save_then_raise(KeyboardInterrupt()))
    assert list(hold.list("debug/")) == []


def test_the_bundle_waits_in_the_journal_when_the_remote_is_down(open_hold: OpenHold) -> None:
    hold = open_hold(
        remote=FileRemote("/sys/cargohold-unwritable"), retry_timeout=0.5, request_timeout=0.5
    )
    with pytest.raises(ValueError) as err:
        run(hold, save_then_raise(ValueError("boom")), "offline")
    assert err.value.debug_bundle.endswith("/offline/")  # type: ignore[attr-defined]
    assert any("not on the remote yet" in note for note in err.value.__notes__)
    assert hold.status().pending_count == 3  # the file, the traceback, the record


def test_each_request_logs_one_structured_record(
    open_hold: OpenHold, caplog: pytest.LogCaptureFixture
) -> None:
    hold = open_hold()
    caplog.set_level(logging.INFO, logger="cargohold.scratch")
    with hold.scratch("ok-1") as work:
        work.save("in.wav", b"i" * 1000)
        work.path("out.mp3").write_bytes(b"o" * 300)
        work.output("out.mp3")
        work.record["model"] = "whisper-small"
        work.record["password"] = "hunter2"
    with pytest.raises(ValueError), hold.scratch("bad-1"):
        raise ValueError("no")
    records = [r for r in caplog.records if hasattr(r, "cargohold_request")]
    assert [r.cargohold_request["request_id"] for r in records] == ["ok-1", "bad-1"]
    ok, bad = (r.cargohold_request for r in records)
    assert (ok["outcome"], ok["input_bytes"], ok["output_bytes"]) == ("ok", 1000, 300)
    assert ok["peak_bytes"] >= 1300
    assert ok["fields"] == {"model": "whisper-small", "password": "[redacted]"}
    assert ok["duration_s"] >= 0
    assert (bad["outcome"], bad["error"]) == ("error", "ValueError: no")
    assert bad["debug_bundle"].startswith("debug/")
    assert json.loads(records[0].getMessage().split(" ", 2)[2]) == ok
    assert (records[0].levelno, records[1].levelno) == (logging.INFO, logging.WARNING)
    assert "hunter2" not in caplog.text


def test_expired_bundles_are_collected(open_hold: OpenHold) -> None:
    hold = open_hold()
    for n in range(2):
        with pytest.raises(ValueError):
            run(hold, save_then_raise(ValueError()), f"old-{n}")
    hold.put("debug-notes.txt", b"not a bundle")
    assert collect_bundles(hold) == 0  # within the retention period
    assert collect_bundles(hold, older_than=0) == 2
    hold.flush()
    assert list(hold.remote.list("debug/")) == []
    assert hold.get("debug-notes.txt") == b"not a bundle"
