"""Byte bounds: eviction keeps the local tier under its bound and never drops an unsynced
write; back-pressure keeps unsynced bytes under theirs; rewrites upload only the latest."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold, Settings, StorageFull
from cargohold.remotes import FileRemote, MemoryRemote
from cargohold.remotes._base import PutRequest, PutResults

KiB = 1024


class GatedRemote(MemoryRemote):
    """A real memory remote whose batch uploads wait at a gate (to hold writes pending
    for as long as a test needs) and are counted. Instrumentation, not a mock: every
    upload that passes the gate is stored as usual."""

    def __init__(self) -> None:
        super().__init__(f"gated-{uuid.uuid4().hex}")
        self.gate = threading.Event()
        self.uploads: list[tuple[str, bytes]] = []

    def _put_many(self, requests: list[PutRequest], concurrency: int) -> PutResults:
        self.gate.wait(60)
        results = super()._put_many(requests, concurrency)
        for request in requests:
            self.uploads.append((request.key, b"".join(request.chunks())))
        return results


def _hold(remote: object, data_dir: Path, **settings: object) -> Hold:
    return Hold(
        remote=remote,  # type: ignore[arg-type]
        local_dir=data_dir,
        settings=Settings.load({}, signal_handlers=False, **settings),
    )


@pytest.fixture
def unreachable() -> FileRemote:
    """A remote that refuses every write (a path under /sys), so writes stay pending."""
    return FileRemote("/sys/cargohold-unreachable")


def test_eviction_keeps_the_bound(tmp_path: Path) -> None:
    remote = MemoryRemote(f"evict-{uuid.uuid4().hex}")
    with _hold(remote, tmp_path, local_max_bytes="1MiB", max_pending_bytes="512KiB") as hold:
        for i in range(40):
            hold.put(f"v/{i:02d}", bytes([i]) * (100 * KiB))
            if i % 4 == 3:
                hold.flush(30)
        hold.flush(30)
        hold.put("trigger", b"x" * KiB)  # a write past the bound evicts at once
        assert hold.status().local_bytes <= 1024 * KiB
        # Evicted objects read through from the remote again.
        for i in range(40):
            assert hold.get(f"v/{i:02d}") == bytes([i]) * (100 * KiB)
        assert hold.status().local_bytes <= 1024 * KiB


def test_least_recently_used_goes_first(tmp_path: Path) -> None:
    remote = MemoryRemote(f"lru-{uuid.uuid4().hex}")
    with _hold(remote, tmp_path, local_max_bytes="600KiB", max_pending_bytes="300KiB") as hold:
        hold.local.access_granularity = 0  # record every read (normally: once a minute)
        for name in ("old", "kept", "new"):
            hold.put(name, name.encode() * (50 * KiB))
            hold.flush(30)
        hold.get("old")  # used recently: now "kept" is the least recently used
        hold.local.flush_access_times()
        hold.put("big", b"b" * (300 * KiB))
        hold.flush(30)
        hold.put("more", b"m" * (100 * KiB))
        assert hold.local.entry("kept") is None
        assert hold.local.entry("old") is not None


def test_unsynced_writes_are_never_evicted(tmp_path: Path, unreachable: FileRemote) -> None:
    with _hold(
        unreachable,
        tmp_path,
        local_max_bytes="256KiB",
        max_pending_bytes="256KiB",
        backpressure="raise",
    ) as hold:
        for i in range(4):
            hold.put(f"p/{i}", bytes([i]) * (60 * KiB))
        hold.local.evict(0)  # even asked to empty the tier, it keeps what is not synced
        for i in range(4):
            assert hold.get(f"p/{i}") == bytes([i]) * (60 * KiB)
        assert hold.status().pending_count == 4
        hold.close(timeout=0)


def test_backpressure_raises_past_the_cap(tmp_path: Path, unreachable: FileRemote) -> None:
    with _hold(
        unreachable,
        tmp_path,
        local_max_bytes="1MiB",
        max_pending_bytes="200KiB",
        backpressure="raise",
    ) as hold:
        hold.put("a", b"a" * (100 * KiB))
        hold.put("b", b"b" * (100 * KiB))
        with pytest.raises(StorageFull, match="max_pending_bytes") as err:
            hold.put("c", b"c" * (100 * KiB))
        assert isinstance(err.value, OSError)
        with pytest.raises(cargohold.NotFoundError):
            hold.get("c")
        assert hold.get("a") == b"a" * (100 * KiB)
        hold.close(timeout=0)


def test_backpressure_waits_for_the_syncer(tmp_path: Path) -> None:
    remote = GatedRemote()
    with _hold(remote, tmp_path, local_max_bytes="1MiB", max_pending_bytes="200KiB") as hold:
        hold.put("a", b"a" * (150 * KiB))
        finished = threading.Event()

        def second_write() -> None:
            hold.put("b", b"b" * (150 * KiB))
            finished.set()

        writer = threading.Thread(target=second_write)
        writer.start()
        assert not finished.wait(0.5), "past the cap, put must wait for the syncer"
        remote.gate.set()
        writer.join(30)
        assert finished.is_set()
        hold.flush(30)
        assert remote.get("b") == b"b" * (150 * KiB)


def test_backpressure_wait_gives_up_with_a_clear_error(
    tmp_path: Path, unreachable: FileRemote
) -> None:
    with _hold(
        unreachable,
        tmp_path,
        local_max_bytes="1MiB",
        max_pending_bytes="100KiB",
        backpressure_timeout=0.5,
    ) as hold:
        hold.put("a", b"a" * (80 * KiB))
        with pytest.raises(StorageFull, match="waiting for"):
            hold.put("b", b"b" * (80 * KiB))
        hold.close(timeout=0)


def test_a_rewrite_before_sync_uploads_only_the_latest(tmp_path: Path) -> None:
    remote = GatedRemote()
    with _hold(remote, tmp_path) as hold:
        for i in range(20):
            hold.put("doc.json", f'{{"v": {i}}}'.encode())
        remote.gate.set()
        hold.flush(30)
    versions = [data for key, data in remote.uploads if key == "doc.json"]
    assert versions[-1] == b'{"v": 19}'
    assert len(versions) <= 2, f"20 writes uploaded {len(versions)} times"
    assert remote.get("doc.json") == b'{"v": 19}'


def test_a_write_refused_for_good_is_named_by_flush(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    with _hold(remote, tmp_path / "data") as hold:
        hold.put("a", b"object")
        hold.put("a/b", b"cannot sit under an object on the file remote")
        hold.put("c", b"fine")
        with pytest.raises(cargohold.InvalidKey, match="folder"):
            hold.flush(30)
        assert remote.get("c") == b"fine"
        # The two go up in one batch, so which one the remote refuses is not fixed.
        [refused] = hold.status().refused
        assert refused in ("a", "a/b")
        hold.delete(refused)
        hold.flush(30)
        assert hold.status().refused == {}
