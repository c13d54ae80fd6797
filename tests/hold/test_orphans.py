"""The syncer's start-up upkeep (LocalTier.remove_orphans) removes what a crash left behind,
and nothing a running process is using."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.hold import Hold

BIG = b"x" * (200 * 1024)  # over INLINE_MAX: kept as a blob file


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    with cargohold.open(
        f"file://{tmp_path / 'remote'}", data_dir=tmp_path / "data", signal_handlers=False
    ) as opened:
        yield opened


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_leftovers_go_once_old_and_fresh_files_stay(hold: Hold) -> None:
    local = hold.local
    shard = local.blobs / "zz"
    shard.mkdir(exist_ok=True)
    old_blob, new_blob = shard / "old-orphan", shard / "new-orphan"
    old_blob.write_bytes(b"left by a crash")
    new_blob.write_bytes(b"its row is being written")
    old_link, new_link = local.named / "old-orphan", local.named / "new-orphan"
    for link in (old_link, new_link):
        link.mkdir(parents=True)
        (link / "a.mp4").write_bytes(b"")
    old_tmp = local.tmp / "old-partial"
    old_tmp.write_bytes(b"")
    for path in (old_blob, old_link, old_tmp):
        _age(path, 7200)

    hold.put("videos/kept.mp4", BIG)
    kept = hold.path("videos/kept.mp4")
    _age(kept.parent, 7200)  # in use, however old

    local.remove_orphans()  # (the syncer's own start-up pass may have run it already)
    assert not old_blob.exists()
    assert not old_link.exists()
    assert not old_tmp.exists()
    assert new_blob.exists()
    assert new_link.exists()
    assert kept.read_bytes() == BIG
    assert hold.get("videos/kept.mp4") == BIG


def test_a_path_made_while_the_upkeep_runs_stays(hold: Hold) -> None:
    """The upkeep reads which blobs are in use, then walks the folders: a link made in
    between must not be taken for a leftover."""
    stop = threading.Event()
    passes = 0

    def upkeep() -> None:
        nonlocal passes
        while not stop.is_set():
            hold.local.remove_orphans()
            passes += 1

    thread = threading.Thread(target=upkeep)
    thread.start()
    paths = []
    try:
        for i in range(40):
            hold.put(f"v/{i}.mp4", BIG)
            paths.append(hold.path(f"v/{i}.mp4"))
    finally:
        stop.set()
        thread.join()
    hold.local.remove_orphans()  # and one more pass after them all
    assert passes > 0
    missing = [p for p in paths if not p.exists()]
    assert missing == []
