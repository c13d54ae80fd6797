"""Deletions that reach the remote conditional on the version this instance saw: the local
tier's tombstone keeps that version's etag, and the syncer names it (sync.py, local.py)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import cargohold
from cargohold.local import LocalTier
from cargohold.remotes import MemoryRemote, ObjectInfo


def _synced(local: LocalTier, key: str, data: bytes, etag: str) -> None:
    """Write ``key`` and mark it synced with the remote's ``etag`` (state clean)."""
    written = local.write(key, data, metadata={}, content_type="text/plain")
    local.mark_synced([(written, ObjectInfo(key, len(data), etag, datetime.now(UTC)))])


def test_a_tombstone_keeps_the_etag_of_the_clean_copy_it_replaced(tmp_path: Path) -> None:
    local = LocalTier(tmp_path / "local")
    _synced(local, "k", b"v1", "remote-v1")
    assert local.delete("k").etag == "remote-v1"
    assert local.delete("k").etag == "remote-v1"  # deleted twice before the sync
    entry = local.entry("k")
    assert entry is not None
    assert (entry.deleted, entry.etag) == (True, "remote-v1")


def test_a_tombstone_over_a_write_the_remote_did_not_confirm_has_no_etag(tmp_path: Path) -> None:
    # That write may have landed unanswered: a deletion naming the older etag would spare
    # it, so the deletion is unconditional.
    local = LocalTier(tmp_path / "local")
    _synced(local, "k", b"v1", "remote-v1")
    local.write("k", b"v2, not synced", metadata={}, content_type="text/plain")
    assert local.delete("k").etag is None
    assert local.delete("never-held").etag is None
    # Written again after the deletion: a write of its own, no etag until synced.
    assert local.write("k", b"v3", metadata={}, content_type="text/plain").etag is None


@pytest.fixture
def store() -> Iterator[str]:
    name = f"conditional-deletes-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    MemoryRemote.forget(name)


def test_two_instances_a_stale_deletion_is_superseded(
    store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = cargohold.open(store, data_dir=tmp_path / "a", signal_handlers=False)
    b = cargohold.open(store, data_dir=tmp_path / "b", signal_handlers=False)
    try:
        a.put("k", b"v1", durable=True)
        b.put("k", b"v2", durable=True)
        with caplog.at_level(logging.INFO, logger="cargohold.sync"):
            a.delete("k")
            a.flush(10)
        assert a.status().pending_count == 0
        assert b.remote.get("k") == b"v2"
        assert a.get("k") == b"v2"
        assert [r.levelname for r in caplog.records if "superseded" in r.getMessage()] == ["INFO"]
        # A key this instance never held is deleted whatever version is there.
        b.put("other", b"from b", durable=True)
        a.delete("other")
        a.flush(10)
        assert [info.key for info in b.remote.list()] == ["k"]
    finally:
        a.close()
        b.close()
