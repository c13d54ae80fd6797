"""The shared catalog on a real PostgreSQL: kept in step, queried, rebuilt, degraded."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import cargohold
from cargohold import Hold
from cargohold.catalog import MIGRATIONS, Catalog, PgLease
from cargohold.remotes import FileRemote, MemoryRemote
from testsupport.servers import free_port


class CountingRemote(MemoryRemote):
    """A real memory remote that counts its listings (instrumentation, not a mock)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.listings = 0

    def _list(self, prefix: str) -> Iterator[cargohold.ObjectInfo]:
        self.listings += 1
        return super()._list(prefix)


def _hold(remote: Any, catalog_url: str, data_dir: Path) -> Hold:
    settings = cargohold.Settings.load({}, signal_handlers=False)
    return Hold(
        remote=remote, local_dir=data_dir, settings=settings, catalog=Catalog(catalog_url, remote)
    )


@pytest.fixture
def remote() -> Iterator[CountingRemote]:
    name = f"catalog-{uuid.uuid4().hex}"
    yield CountingRemote(name)
    MemoryRemote.forget(name)


def test_migrations_are_versioned_and_idempotent(catalog_url: str, remote: CountingRemote) -> None:
    first = Catalog(catalog_url, remote)
    first.migrate()  # a second time: nothing to do
    Catalog(catalog_url, remote).close()
    with psycopg.connect(catalog_url) as conn:
        versions = [
            row[0] for row in conn.execute("SELECT version FROM cargohold_schema ORDER BY 1")
        ]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    first.close()


def test_the_syncer_keeps_it_in_step_and_listing_uses_it(
    catalog_url: str, remote: CountingRemote, tmp_path: Path
) -> None:
    with _hold(remote, catalog_url, tmp_path) as hold:
        for i in range(30):
            hold.put(f"docs/{i:02d}.json", b"{}", metadata={"n": str(i)})
        hold.put("other/x", b"x")
        hold.flush(30)
        hold.delete("docs/05.json")
        hold.flush(30)
        listed_before = remote.listings
        keys = [info.key for info in hold.list("docs/")]
        assert keys == [f"docs/{i:02d}.json" for i in range(30) if i != 5]
        assert remote.listings == listed_before, "the listing came from the catalog"
        assert hold.catalog is not None
        row = next(hold.catalog.objects("docs/07"))
        assert (row.key, row.size, row.etag) == (
            "docs/07.json",
            2,
            hold.remote.head("docs/07.json").etag,
        )
        assert hold.catalog.count("docs/") == (29, 58)


def test_memo_queries_are_index_scans(
    catalog_url: str, remote: CountingRemote, tmp_path: Path
) -> None:
    with _hold(remote, catalog_url, tmp_path) as hold:
        memo = hold.memo("sora", version="v2")
        for i, prompt in enumerate(["cat", "dog", "cat", "bird"]):
            memo.get_or_create({"prompt": prompt, "n": i}, lambda inputs, w: b"video")
        listed_before = remote.listings
        cats = memo.entries(where={"prompt": "cat"})
        assert [e.inputs["n"] for e in cats] == [2, 0]
        assert [e.inputs["n"] for e in memo.entries(limit=2)] == [3, 2]
        assert remote.listings == listed_before, "no remote listing for a memo query"


def test_another_instances_write_drops_the_cached_copy(
    catalog_url: str, remote: CountingRemote, tmp_path: Path
) -> None:
    with (
        _hold(remote, catalog_url, tmp_path / "a") as a,
        _hold(remote, catalog_url, tmp_path / "b") as b,
    ):
        a.put("profile.json", b"v1")
        a.flush(30)
        assert b.get("profile.json", max_age=3600) == b"v1"
        a.put("profile.json", b"v2")
        a.flush(30)
        deadline = time.monotonic() + 30
        while b.local.entry("profile.json") is not None:  # the notice is asynchronous
            assert time.monotonic() < deadline, "the change notice never arrived"
            time.sleep(0.05)
        assert b.get("profile.json", max_age=3600) == b"v2", "not served stale until max_age"


def test_rebuild_recreates_the_same_listing(catalog_url: str, tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    with _hold(remote, catalog_url, tmp_path / "data") as hold:
        for i in range(120):
            hold.put(f"r/{i:03d}", f"{i}".encode())
        hold.memo("tts").get_or_create({"text": "hi"}, lambda inputs, w: b"audio")
        hold.flush(30)
        catalog = hold.catalog
        assert catalog is not None
        before = [(i.key, i.size, i.etag) for i in catalog.objects("")]
        catalog.drop()
        assert list(catalog.objects("")) == []
        # Missing rows lose no data: the bytes are read as ever (only listings need a rebuild).
        hold.local.evict(0)
        assert hold.get("r/042") == b"42"
        assert catalog.rebuild() == len(before)
        after = [(i.key, i.size, i.etag) for i in catalog.objects("")]
        assert after == before
        assert [e.inputs for e in hold.memo("tts").entries()] == [{"text": "hi"}]


def test_an_unreachable_catalog_degrades_to_the_remote(
    remote: CountingRemote, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    with (
        caplog.at_level(logging.WARNING, logger="cargohold.catalog"),
        _hold(remote, dead, tmp_path) as hold,
    ):
        hold.put("still/works", b"yes")
        hold.flush(30)
        assert [i.key for i in hold.list("still/")] == ["still/works"]
        assert remote.listings >= 1, "listing fell back to the remote"
        assert hold.memo("m").get_or_create({"a": 1}, lambda i, w: b"built").value == b"built"
    warnings = [r.getMessage() for r in caplog.records if r.name == "cargohold.catalog"]
    assert len(warnings) == 1, warnings
    assert "writes are not affected" in warnings[0]


def test_leases_are_exclusive_and_expire(catalog_url: str, remote: CountingRemote) -> None:
    catalog = Catalog(catalog_url, remote)
    name = f"lease-{uuid.uuid4().hex}"
    first = PgLease(catalog, name, ttl=1.0, purpose="test")
    second = PgLease(catalog, name, ttl=1.0, purpose="test")
    assert first.try_acquire()
    assert not second.try_acquire()
    time.sleep(1.5)  # the holder keeps renewing (every ttl/3), so it is still held
    assert not second.try_acquire()
    first._stop.set()  # the holder dies: no more renewals, and no release
    assert first._heart is not None
    first._heart.join()
    deadline = time.monotonic() + 10
    while not second.try_acquire():
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.2)
    second.release()
    assert catalog.lease_holder(name) is None
    catalog.close()
