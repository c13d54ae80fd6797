"""The shared catalog on a real PostgreSQL: kept in step, queried, rebuilt, degraded."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

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
    first._heartbeat.end(lambda: None)  # the holder dies: no more renewals, and no release
    deadline = time.monotonic() + 10
    while not second.try_acquire():
        assert time.monotonic() < deadline, "the dead holder's lease never expired"
        time.sleep(0.2)
    second.release()
    assert catalog.lease_holder(name) is None
    catalog.close()


def test_changes_synced_while_the_catalog_was_down_reach_it_when_it_is_back(
    remote: CountingRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real outage: PostgreSQL refuses connections to the catalog's database (and ends
    the ones open) while the app writes; the catalog catches up once it answers again,
    live and after a restart, so listings through it miss nothing for good."""
    import cargohold.catalog as catalog_module
    from tests.catalog.conftest import ADMIN

    monkeypatch.setattr(catalog_module, "_RETRY_AFTER", 0.5)  # retry soon: the test is short
    name = f"cargohold_outage_{uuid.uuid4().hex[:10]}"
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

        def outage(on: bool) -> None:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not on).lower()}')
            if on:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )

        def catalog_keys() -> list[str]:
            with psycopg.connect(url) as conn:
                rows = conn.execute(
                    "SELECT key FROM cargohold_objects WHERE remote = %s ORDER BY key",
                    (remote.url,),
                )
                return [row[0] for row in rows]

        def remote_keys() -> list[str]:
            return sorted(i.key for i in remote.list(""))

        def eventually(expected: list[str]) -> None:
            deadline = time.monotonic() + 30
            while catalog_keys() != expected and time.monotonic() < deadline:
                time.sleep(0.2)
            assert catalog_keys() == expected

        try:
            with _hold(remote, url, tmp_path) as hold:
                hold.put("a/1", b"1")
                hold.flush(30)
                assert catalog_keys() == ["a/1"]
                outage(True)
                hold.put("b/2", b"2")
                hold.memo("tts").get_or_create({"text": "hi"}, lambda i, w: b"hello")
                hold.delete("a/1")
                hold.flush(30)  # writes are not affected by the outage
                assert sorted(i.key for i in hold.list("b/")) == ["b/2"]  # from the remote
                outage(False)
                assert "a/1" not in remote_keys()
                eventually(remote_keys())  # b/2 and the memo entry's objects, not a/1
                assert [e.inputs for e in hold.memo("tts").entries()] == [{"text": "hi"}]
                outage(True)
                hold.put("c/3", b"3")
                hold.flush(30)
            outage(False)  # the backlog was kept on disk: the next start records it
            with _hold(remote, url, tmp_path) as hold:
                eventually(remote_keys())
                assert {"b/2", "c/3"} <= set(remote_keys())
                assert [i.key for i in hold.list("c/")] == ["c/3"]
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_catch_up_never_overwrites_what_another_instance_recorded_since(
    catalog_url: str, remote: CountingRemote
) -> None:
    """A catch-up records answers the remote gave a moment ago; a row another instance
    recorded after that moment is newer and is kept, a key it created then is not
    deleted, and a key it deleted then is not brought back. Rows recorded (or deleted)
    before the moment are updated, deleted and created as asked."""
    catalog = Catalog(catalog_url, remote)

    def info(key: str, etag: str) -> cargohold.ObjectInfo:
        return cargohold.ObjectInfo(key=key, size=1, etag=etag, last_modified=datetime.now(UTC))

    def etags() -> dict[str, str]:
        with psycopg.connect(catalog_url) as conn:
            rows = conn.execute(
                "SELECT key, etag FROM cargohold_objects WHERE remote = %s", (remote.url,)
            )
            return dict(rows.fetchall())

    try:
        catalog.record([(info("old", "e-old"), None), (info("stale", "e-stale"), None)], [])
        catalog.record([(info("removed", "e-r"), None)], ["recreated"])  # deleted before
        asked_at = catalog.clock()  # the catch-up asks the remote after this
        # Meanwhile another instance writes two keys and deletes one, and records that.
        catalog.record([(info("newer", "e-2"), None), (info("created", "e-c"), None)], [])
        catalog.record([], ["removed"])
        catalog.record(
            [
                (info("newer", "e-1"), None),
                (info("old", "e-old-2"), None),
                (info("removed", "e-r"), None),  # the remote had it when asked
                (info("recreated", "e-n"), None),  # written again before it was asked
            ],
            ["created", "stale"],
            asked_at=asked_at,
        )
        assert etags() == {
            "newer": "e-2",
            "created": "e-c",
            "old": "e-old-2",
            "recreated": "e-n",
        }
        # Unconditional, as the syncer records its own uploads: every row is written.
        catalog.record([(info("newer", "e-3"), None), (info("removed", "e-r2"), None)], ["created"])
        assert etags() == {"newer": "e-3", "old": "e-old-2", "recreated": "e-n", "removed": "e-r2"}
    finally:
        catalog.close()


def test_download_leases_live_in_the_catalog(catalog_url: str, tmp_path: Path) -> None:
    """With a catalog, the download cache's single-flight lease is a row in PostgreSQL, not
    a lock object in the remote: two instances fetching one URL at once make one origin
    request and write no lease object."""
    from concurrent.futures import ThreadPoolExecutor

    from cargohold.remotes._base import PutRequest
    from testsupport.origin import Origin

    class RecordingRemote(MemoryRemote):
        """A real memory remote that remembers the keys it was asked to write."""

        written: ClassVar[list[str]] = []

        def _put(self, request: PutRequest) -> cargohold.ObjectInfo:
            self.written.append(request.key)
            return super()._put(request)

    name = f"catalog-fetch-{uuid.uuid4().hex}"
    remote = RecordingRemote(name)
    try:
        with (
            Origin() as origin,
            _hold(remote, catalog_url, tmp_path / "a") as first,
            _hold(remote, catalog_url, tmp_path / "b") as second,
        ):
            url = origin.put("/model.bin", b"weights" * 100_000)
            origin.slow("/model.bin", 0.5)  # the second asks while the first downloads
            with ThreadPoolExecutor(8) as pool:
                paths = list(pool.map(lambda i: (first, second)[i % 2].fetch(url), range(8)))
            assert {p.read_bytes() for p in paths} == {b"weights" * 100_000}
            assert origin.gets("/model.bin") == 1
        assert not [k for k in remote.written if "leases/" in k], remote.written
    finally:
        MemoryRemote.forget(name)


def test_the_service_shows_the_remote_size_from_the_catalog(
    catalog_url: str, remote: CountingRemote, tmp_path: Path
) -> None:
    import asyncio

    import httpx

    from cargohold.server import create_app

    async def stats(app: Any) -> Any:
        # From 127.0.0.1 to host 127.0.0.1: with no token configured, this machine reads.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return (await c.get("/api/stats")).json()

    with _hold(remote, catalog_url, tmp_path) as hold:
        hold.put("a", b"12345")
        hold.put("b/c", b"678")
        hold.flush(30)
        size = asyncio.run(stats(create_app(hold)))["remote_size"]
    assert size == {"objects": 2, "bytes": 8, "source": "catalog"}


def test_notices_missed_while_not_listening_do_not_leave_stale_copies(
    catalog_url: str, remote: CountingRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader's LISTEN connection is ended by PostgreSQL; a write's notice goes out
    while it is away. When it listens again it cannot know which keys changed, so every
    cached copy is checked against the remote before it is served again."""
    import cargohold.catalog as catalog_module

    monkeypatch.setattr(catalog_module, "_RETRY_AFTER", 3.0)  # the reader's time away
    settings = cargohold.Settings.load({}, signal_handlers=False, max_age=3600)

    def instance(folder: str) -> Hold:
        return Hold(
            remote=remote,
            local_dir=tmp_path / folder,
            settings=settings,
            catalog=Catalog(catalog_url, remote),
        )

    with instance("writer") as writer, instance("reader") as reader:
        writer.put("k", b"v1")
        writer.flush(30)
        assert reader.get("k") == b"v1"  # cached, and trusted for an hour
        assert reader.catalog is not None
        time.sleep(1.5)  # both listeners are listening
        with psycopg.connect(catalog_url, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (reader.catalog.listener_name,),
            ).fetchone()
        assert ended == (1,)
        time.sleep(1.2)  # the reader's listener notices within a second
        writer.put("k", b"v2")
        writer.flush(30)  # recorded, and its notice sent while the reader was away
        assert reader.get("k") == b"v1"  # no notice, and trusted for an hour: stale
        deadline = time.monotonic() + 20
        while reader.get("k") != b"v2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert reader.get("k") == b"v2"
