"""The Hold's extension point, what the features build on instead of its internals:
extension(), include_in_flush(), local_dir, local_only, sync_activity() and the registry
behind the conveniences. On a file remote, in-process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold import ConfigError, Hold
from cargohold import hold as hold_module


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    opened = cargohold.open((tmp_path / "remote").as_uri(), data_dir=tmp_path / "data")
    yield opened
    opened.close()


class _Counted:
    made = 0

    def __init__(self) -> None:
        type(self).made += 1
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _FailsToClose:
    def close(self) -> None:
        raise RuntimeError("this close fails")


def test_extension_is_one_instance_per_hold_made_once_and_closed_with_it(
    tmp_path: Path, hold: Hold
) -> None:
    _Counted.made = 0
    failing = hold.extension(_FailsToClose)  # closed first, and raises
    start = threading.Barrier(8)
    seen: list[_Counted] = []

    def take() -> None:
        start.wait()
        seen.append(hold.extension(_Counted))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _Counted.made == 1
    assert len({id(state) for state in seen}) == 1
    assert failing is hold.extension(_FailsToClose)
    other = cargohold.open((tmp_path / "remote").as_uri(), data_dir=tmp_path / "other")
    try:
        assert other.extension(_Counted) is not seen[0]
    finally:
        other.close()
    hold.close()  # a close() that raises does not stop the others
    assert seen[0].closed


class _Source:
    def __init__(self, hold: Hold) -> None:
        self.hold = hold
        self.calls: list[str] = []

    def scan(self) -> None:
        self.calls.append("scan")
        self.hold.put(f"scanned/{len(self.calls)}", b"x")

    def stop(self, timeout: float) -> None:
        self.calls.append("stop")
        self.stop_timeout = timeout
        self.hold.put("stopped", b"last")


def test_include_in_flush_scans_before_each_flush_and_stops_before_close(
    tmp_path: Path, hold: Hold
) -> None:
    source = _Source(hold)
    hold.include_in_flush(source)
    hold.flush(30)
    assert source.calls == ["scan"]
    hold.close(30)
    assert source.calls == ["scan", "stop"]
    assert 0 < source.stop_timeout <= 30  # what was left of close()'s budget
    reader = cargohold.open((tmp_path / "remote").as_uri(), data_dir=tmp_path / "reader")
    try:
        # What the source wrote in its scan and in its stop is on the remote.
        assert reader.remote.get("scanned/1") == b"x"
        assert reader.remote.get("stopped") == b"last"
    finally:
        reader.close()


def test_local_only_keeps_a_copy_the_remote_never_gets(hold: Hold) -> None:
    before = hold.local_only.change_stamp()
    (hold.local_dir / "feature-tmp").mkdir()
    big = hold.local_dir / "feature-tmp" / "file.bin"
    big.write_bytes(b"f" * 200_000)  # past the inline size: moved in as a file
    hold.local_only.keep(
        "kept/big", big, etag="e-big", metadata={"a": "1"}, content_type="application/x-test"
    )
    hold.local_only.keep(
        "kept/small", b"small", etag="e-small", metadata={}, content_type="text/plain"
    )
    assert not big.exists()  # moved, not copied
    assert hold.local_only.change_stamp() != before
    entry = hold.local_only.entry("kept/small")
    assert entry is not None
    assert not entry.pending
    assert not entry.deleted
    assert hold.local_only.data(entry) == b"small"
    path = hold.local_only.path("kept/big")
    assert path is not None
    assert path.read_bytes() == b"f" * 200_000
    big_entry = hold.local_only.entry("kept/big")
    assert big_entry is not None
    assert big_entry.metadata == {"a": "1"}
    hold.flush(30)
    assert [info.key for info in hold.remote.list("kept/")] == []  # never sent
    assert hold.local_only.entry("missing") is None
    assert hold.local_only.path("missing") is None


def test_sync_activity_counts_what_the_syncer_sent(hold: Hold) -> None:
    assert hold.sync_activity().synced_objects == 0
    hold.put("a", b"12345")
    hold.flush(30)
    activity = hold.sync_activity()
    assert activity.synced_objects == 1
    assert activity.synced_bytes == 5
    assert activity.error_count == 0
    assert activity.errors == ()
    assert sum(count for _, count, _ in activity.history) == 1


def test_a_convenience_whose_feature_was_not_imported_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, hold: Hold
) -> None:
    monkeypatch.delitem(hold_module._features, "scratch")
    with pytest.raises(ConfigError, match="import cargohold"):
        hold.scratch()
