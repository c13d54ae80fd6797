"""The shared catalog: a PostgreSQL table of every object, kept in step by every instance.

Optional (``CARGOHOLD_CATALOG=postgresql://...``). With it, listings and generation-cache
queries are index scans instead of remote listings, single-flight leases live in the
database, and instances hear of each other's writes at once (``LISTEN``/``NOTIFY``). The
remote stays the source of truth for bytes: ``rebuild()`` recreates the catalog from it,
and a missing or stale row never loses data (reads go to the local tier and the remote).

If the database goes away, the catalog degrades: callers fall back to the remote, a
warning says so once, and writes never wait for it. It reconnects by itself.

Tables (migrations are versioned and run on start, under an advisory lock)::

    cargohold_objects(remote, key, size, digest, etag, version, metadata, content_type,
                      doc, updated)        one row per object; ``doc`` holds a memo record
    cargohold_leases(name, holder, expires)
    cargohold_schema(version)

One database can serve several holds: rows carry their remote's URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ._fork import abandon, on_fork
from ._heartbeat import Heartbeat
from ._holder import describe_holder, holder_name
from ._threads import start_thread
from .errors import CatalogUnavailable, ConfigError
from .remotes import ObjectInfo, Remote

__all__ = ["Catalog", "CatalogUnavailable", "PgLease"]

log = logging.getLogger("cargohold.catalog")

CHANNEL = "cargohold_changes"
_RETRY_AFTER = 15.0
_MD5 = re.compile(r"[0-9a-f]{32}")

MIGRATIONS: list[str] = [
    # 1: objects, leases
    """
    CREATE TABLE IF NOT EXISTS cargohold_objects (
        remote text NOT NULL,
        key text COLLATE "C" NOT NULL,
        size bigint NOT NULL,
        digest text,
        etag text NOT NULL,
        version bigint NOT NULL DEFAULT 1,
        metadata jsonb NOT NULL DEFAULT '{}',
        content_type text,
        doc jsonb,
        updated timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (remote, key)
    );
    CREATE INDEX IF NOT EXISTS cargohold_objects_doc
        ON cargohold_objects USING gin (doc jsonb_path_ops) WHERE doc IS NOT NULL;
    CREATE TABLE IF NOT EXISTS cargohold_leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires timestamptz NOT NULL
    );
    """,
    # 2: newest-first listings of memo records in a namespace
    """
    CREATE INDEX IF NOT EXISTS cargohold_objects_doc_created
        ON cargohold_objects (remote, ((doc->>'created')::float8) DESC) WHERE doc IS NOT NULL;
    """,
    # 3: when keys were last deleted, so a catch-up never brings back a key deleted after
    # it asked the remote (kept for DELETION_MEMORY, then pruned)
    """
    CREATE TABLE IF NOT EXISTS cargohold_deletions (
        remote text NOT NULL,
        key text COLLATE "C" NOT NULL,
        deleted timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (remote, key)
    );
    CREATE INDEX IF NOT EXISTS cargohold_deletions_deleted ON cargohold_deletions (deleted);
    """,
    # 4: since when a lease's holder has it, so waiters can say whom they wait for
    """
    ALTER TABLE cargohold_leases ADD COLUMN IF NOT EXISTS since timestamptz NOT NULL DEFAULT now();
    """,
]
#: How long a deletion is remembered: longer than any catch-up takes between asking the
#: remote and recording its answers (a few seconds).
DELETION_MEMORY = "1 hour"


@dataclass(frozen=True, slots=True)
class Change:
    """A notice that another instance changed ``key`` (``etag`` None: deleted)."""

    remote: str
    key: str
    etag: str | None
    instance: str


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``."""
    if not prefix:
        return None
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _is_memo_record(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 5 and parts[0] == "memo" and parts[1] != "blobs" and key.endswith(".json")


class Catalog:
    """The catalog for one remote, over a small connection pool. See the module docstring."""

    def __init__(self, url: str, remote: Remote, *, pool_size: int = 4) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"catalog URL {url.split('@')[-1]!r} is not a PostgreSQL URL",
                hint="set CARGOHOLD_CATALOG to postgresql://user@host:5432/database",
            )
        self.url = url
        self.remote = remote
        self.remote_url = remote.url
        self.instance = uuid.uuid4().hex
        #: The listener connection's application_name (in pg_stat_activity).
        self.listener_name = f"cargohold-listen-{self.instance[:12]}"
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()
        self._down_since: float | None = None
        self._warned = False
        self._listener: threading.Thread | None = None
        self._listening: tuple[Callable[[Change], None], Callable[[], None] | None] | None = None
        self._stop = threading.Event()
        with contextlib.suppress(CatalogUnavailable):  # warned; the remote serves meanwhile
            self._connect()
        on_fork(self._after_fork)

    def _after_fork(self) -> None:
        """In a child after fork(): the pool's sockets are the parent's sessions (closing
        them would end those sessions) and its threads are gone. A new pool on first use,
        and the listener started again on first use (:meth:`resume`)."""
        if self._pool is not None:
            abandon(self._pool)
        self._pool = None
        self._pool_lock = threading.Lock()
        self._listener = None
        self._resume = self._listening is not None and not self._stop.is_set()
        self._stop = threading.Event()

    def resume(self) -> None:
        """In a child after fork(), on its first use: listen again, as the parent did."""
        if getattr(self, "_resume", False) and self._listening is not None:
            self._resume = False
            self.listen(*self._listening)

    def _connect(self) -> ConnectionPool:
        """The pool, opened (after a plain connection proved the server is there, so a dead
        server costs one quick failure, not a pool retrying in the background)."""
        with self._pool_lock:
            if self._pool is not None:
                return self._pool
            try:
                psycopg.connect(self.url, connect_timeout=3).close()
                pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs={"autocommit": True},
                    open=False,
                    name="cargohold-catalog",
                )
                pool.open(wait=True, timeout=10)
            except (psycopg.Error, TimeoutError) as exc:
                self._mark_down(exc)
                raise CatalogUnavailable(f"the catalog is unavailable: {exc}") from exc
            self._pool = pool
        self.migrate()
        return pool

    def _disconnect(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close(timeout=1)

    # -- availability -----------------------------------------------------------------

    @property
    def available(self) -> bool:
        if self._down_since is None:
            return True
        return time.monotonic() - self._down_since > _RETRY_AFTER  # time to try again

    def _mark_down(self, exc: BaseException) -> None:
        self._down_since = time.monotonic()
        if not self._warned:
            self._warned = True
            log.warning(
                "cargohold: the catalog at %s is unavailable (%s): using the remote alone "
                "until it is back; writes are not affected",
                self.url.split("@")[-1],
                exc,
            )

    def _run(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        if not self.available:
            raise CatalogUnavailable("the catalog is unavailable")
        pool = self._connect()
        try:
            with pool.connection(timeout=5) as conn:
                result = work(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
            self._mark_down(exc)
            self._disconnect()
            raise CatalogUnavailable(f"the catalog is unavailable: {exc}") from exc
        if self._down_since is not None:
            log.info("cargohold: the catalog is back")
        self._down_since = None
        self._warned = False
        return result

    # -- schema -----------------------------------------------------------------------

    def migrate(self) -> None:
        """Apply the migrations this database lacks, one transaction each, under a lock."""
        assert self._pool is not None
        with self._pool.connection(timeout=10) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('cargohold_schema'))")
            conn.execute("CREATE TABLE IF NOT EXISTS cargohold_schema (version int NOT NULL)")
            row = conn.execute("SELECT max(version) FROM cargohold_schema").fetchone()
            current = (row[0] if row else None) or 0
            for number, sql in enumerate(MIGRATIONS, start=1):
                if number > current:
                    conn.execute(sql)
                    conn.execute("INSERT INTO cargohold_schema VALUES (%s)", (number,))
                    log.info("cargohold: catalog schema migrated to version %d", number)

    # -- kept in step by the syncer ----------------------------------------------------

    def _rows(self, puts: Iterable[tuple[ObjectInfo, bytes | None]]) -> list[tuple[Any, ...]]:
        """Table rows for objects (with a memo record's bytes, indexed as ``doc``)."""
        return [
            (
                self.remote_url,
                info.key,
                info.size,
                f"md5:{info.etag}" if _MD5.fullmatch(info.etag) else None,
                info.etag,
                Jsonb(dict(info.metadata or {})),
                info.content_type,
                Jsonb(json.loads(body)) if body is not None else None,
            )
            for info, body in puts
        ]

    def record(
        self,
        puts: Iterable[tuple[ObjectInfo, bytes | None]],
        deletes: Iterable[str],
        *,
        asked_at: datetime | None = None,
    ) -> None:
        """Record what reached the remote (with a memo record's bytes, to index them) and
        tell the other instances. Raises CatalogUnavailable; the caller carries on.

        ``asked_at`` (from :meth:`clock`, taken before the remote was asked) makes the
        record conditional: a row another instance recorded since then is left alone,
        since what it holds is at least as new as what the remote answered, and a key it
        deleted since is not brought back (deletions are remembered for DELETION_MEMORY).
        Without it (the syncer recording its own uploads) every row is written."""
        put_rows = self._rows(puts)
        delete_keys = list(deletes)
        if asked_at is None:
            values = "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            only_older = ""
        else:
            # Nor brought back if another instance deleted it since (no row to compare).
            values = (
                "SELECT %s, %s, %s, %s, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM "
                "cargohold_deletions d WHERE d.remote = %s AND d.key = %s AND d.deleted >= %s)"
            )
            only_older = " WHERE cargohold_objects.updated < %s"
            put_rows = [(*row, row[0], row[1], asked_at, asked_at) for row in put_rows]

        def work(conn: psycopg.Connection[Any]) -> None:
            changed: list[tuple[str, str | None]] = []
            with conn.transaction(), conn.cursor() as cur:
                if put_rows:
                    cur.executemany(
                        """
                        INSERT INTO cargohold_objects
                            (remote, key, size, digest, etag, metadata, content_type, doc)
                        """
                        + values
                        + """
                        ON CONFLICT (remote, key) DO UPDATE SET
                            size = excluded.size, digest = excluded.digest, etag = excluded.etag,
                            metadata = excluded.metadata, content_type = excluded.content_type,
                            doc = excluded.doc, version = cargohold_objects.version + 1,
                            updated = now()
                        """
                        + only_older
                        + " RETURNING key, etag",
                        put_rows,
                        returning=True,
                    )
                    changed += cur.fetchall()  # one result per row (psycopg 3.2 has
                    while cur.nextset():  # no cur.results() yet)
                        changed += cur.fetchall()
                if delete_keys and asked_at is None:
                    cur.execute(
                        "DELETE FROM cargohold_objects WHERE remote = %s AND key = ANY(%s)",
                        (self.remote_url, delete_keys),
                    )
                    changed += [(key, None) for key in delete_keys]  # rows or not: drop copies
                elif delete_keys:
                    cur.execute(
                        "DELETE FROM cargohold_objects WHERE remote = %s AND key = ANY(%s) "
                        "AND updated < %s",
                        (self.remote_url, delete_keys, asked_at),
                    )
                    # Noticed whether or not a row went: copies elsewhere may predate it.
                    changed += [(key, None) for key in delete_keys]
                if delete_keys:
                    cur.execute(
                        "INSERT INTO cargohold_deletions (remote, key) "
                        "SELECT %s, unnest(%s::text[]) "
                        "ON CONFLICT (remote, key) DO UPDATE SET deleted = now()",
                        (self.remote_url, delete_keys),
                    )
                    cur.execute(
                        "DELETE FROM cargohold_deletions WHERE deleted < now() - %s::interval",
                        (DELETION_MEMORY,),
                    )
                for key, etag in changed:
                    self._notify(cur, key, etag)

        self._run(work)

    def clock(self) -> datetime:
        """The catalog server's clock now: the ``asked_at`` of a conditional
        :meth:`record`. Raises CatalogUnavailable."""
        row = self._run(lambda conn: conn.execute("SELECT clock_timestamp()").fetchone())
        return row[0]  # type: ignore[no-any-return]

    def _notify(self, cur: psycopg.Cursor[Any], key: str, etag: str | None) -> None:
        payload = json.dumps({"r": self.remote_url, "k": key, "e": etag, "i": self.instance})
        if len(payload.encode()) < 7900:  # NOTIFY's payload limit is 8000 bytes
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    # -- queries ----------------------------------------------------------------------

    def objects(
        self, prefix: str = "", *, after: str | None = None, page: int = 1000
    ) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in byte order of their keys, a page per query (keyset
        pagination on the primary key). Raises CatalogUnavailable."""
        end = _prefix_end(prefix)
        last = after
        while True:
            conditions = ["remote = %s", "key >= %s"]
            params: list[Any] = [self.remote_url, prefix]
            if end is not None:
                conditions.append("key < %s")
                params.append(end)
            if last is not None:
                conditions.append("key > %s")
                params.append(last)
            # No metadata in listings (S3's carry none either): parsing JSON per row would
            # cost more than the query.
            sql = (
                "SELECT key, size, etag, updated FROM cargohold_objects "
                f"WHERE {' AND '.join(conditions)} ORDER BY key LIMIT %s"
            )

            def fetch(
                conn: psycopg.Connection[Any], sql: str = sql, params: list[Any] = params
            ) -> Any:
                return conn.execute(sql, (*params, page)).fetchall()

            rows = self._run(fetch)
            for key, size, etag, updated in rows:
                yield ObjectInfo(key=key, size=size, etag=etag, last_modified=updated)
            if len(rows) < page:
                return
            last = rows[-1][0]

    def docs(
        self,
        prefix: str,
        *,
        where: Mapping[str, Any] | None = None,
        limit: int | None = None,
        before: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Memo records under ``prefix`` whose inputs (or fields) contain ``where``,
        newest first. Raises CatalogUnavailable."""
        end = _prefix_end(prefix)
        conditions = ["remote = %s", "doc IS NOT NULL", "key >= %s", "key < %s"]
        params: list[Any] = [self.remote_url, prefix, end]
        if where:
            # Written as containment on doc itself, so the GIN index on doc answers it.
            conditions.append("(doc @> %s OR doc @> %s)")
            params += [Jsonb({"inputs": dict(where)}), Jsonb({"fields": dict(where)})]
        if before is not None:
            conditions.append("(doc->>'created')::float8 < %s")
            params.append(before.timestamp())
        sql = (
            f"SELECT doc FROM cargohold_objects WHERE {' AND '.join(conditions)} "
            "ORDER BY (doc->>'created')::float8 DESC"
        )
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        rows = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [row[0] for row in rows]

    def count(self, prefix: str = "") -> tuple[int, int]:
        """(objects, bytes) under ``prefix``."""
        end = _prefix_end(prefix)
        sql = "SELECT count(*), coalesce(sum(size), 0) FROM cargohold_objects WHERE remote = %s AND key >= %s"
        params: list[Any] = [self.remote_url, prefix]
        if end is not None:
            sql += " AND key < %s"
            params.append(end)
        row = self._run(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0]), int(row[1])

    # -- rebuild ----------------------------------------------------------------------

    def rebuild(self, *, progress: Callable[[int], None] | None = None) -> int:
        """Recreate this remote's rows from the remote itself (a missing or damaged catalog
        loses nothing: the remote is the source of truth). Returns the rows written."""

        def now(conn: psycopg.Connection[Any]) -> Any:
            row = conn.execute("SELECT now()").fetchone()
            return row[0] if row else None

        started = self._run(now)
        written = 0
        batch: list[tuple[ObjectInfo, bytes | None]] = []
        for info in self.remote.list(""):
            body = self.remote.get(info.key) if _is_memo_record(info.key) else None
            batch.append((info, body))
            if len(batch) >= 500:
                self._upsert_quietly(batch)
                written += len(batch)
                batch = []
                if progress is not None:
                    progress(written)
        if batch:
            self._upsert_quietly(batch)
            written += len(batch)
        self._run(
            lambda conn: conn.execute(
                "DELETE FROM cargohold_objects WHERE remote = %s AND updated < %s",
                (self.remote_url, started),
            )
        )
        return written

    def _upsert_quietly(self, batch: list[tuple[ObjectInfo, bytes | None]]) -> None:
        rows = self._rows(batch)

        def work(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    """
                    INSERT INTO cargohold_objects
                        (remote, key, size, digest, etag, metadata, content_type, doc)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (remote, key) DO UPDATE SET
                        size = excluded.size, digest = excluded.digest, etag = excluded.etag,
                        metadata = CASE WHEN excluded.metadata = '{}' THEN cargohold_objects.metadata
                                   ELSE excluded.metadata END,
                        content_type = coalesce(excluded.content_type, cargohold_objects.content_type),
                        doc = excluded.doc, updated = now()
                    """,
                    rows,
                )

        self._run(work)

    def drop(self) -> None:
        """Delete this remote's rows (what a lost catalog looks like; for tests and resets)."""
        self._run(
            lambda conn: conn.execute(
                "DELETE FROM cargohold_objects WHERE remote = %s", (self.remote_url,)
            )
        )

    # -- leases -----------------------------------------------------------------------

    def try_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take ``name`` if free or expired (by the database's clock). Raises CatalogUnavailable."""
        row = self._run(
            lambda conn: conn.execute(
                """
                INSERT INTO cargohold_leases (name, holder, expires, since)
                VALUES (%s, %s, now() + make_interval(secs => %s), now())
                ON CONFLICT (name) DO UPDATE
                SET holder = excluded.holder, expires = excluded.expires, since = now()
                WHERE cargohold_leases.expires < now()
                RETURNING holder
                """,
                (name, holder, ttl),
            ).fetchone()
        )
        return row is not None and row[0] == holder

    def renew_lease(self, name: str, holder: str, ttl: float) -> bool:
        cur = self._run(
            lambda conn: conn.execute(
                "UPDATE cargohold_leases SET expires = now() + make_interval(secs => %s) "
                "WHERE name = %s AND holder = %s",
                (ttl, name, holder),
            )
        )
        return bool(cur.rowcount)

    def release_lease(self, name: str, holder: str) -> None:
        self._run(
            lambda conn: conn.execute(
                "DELETE FROM cargohold_leases WHERE name = %s AND holder = %s", (name, holder)
            )
        )

    def lease_holder(self, name: str) -> tuple[str, float] | None:
        """Who holds ``name`` and since when (a Unix time), or None if no one does."""
        row = self._run(
            lambda conn: conn.execute(
                "SELECT holder, extract(epoch FROM since)::float8 FROM cargohold_leases "
                "WHERE name = %s",
                (name,),
            ).fetchone()
        )
        return None if row is None else (str(row[0]), float(row[1]))

    # -- change notices ---------------------------------------------------------------

    def listen(
        self, on_change: Callable[[Change], None], on_gap: Callable[[], None] | None = None
    ) -> None:
        """Call ``on_change`` (on a thread of its own) for each change another instance
        records for this remote. Reconnects after the database comes back, and then calls
        ``on_gap``: notices sent while this instance was not listening are lost."""

        def call(callback: Callable[..., None], *args: Any) -> None:
            try:
                callback(*args)
            except Exception:  # a failing callback must not end the listening
                log.exception("cargohold: handling a catalog change notice failed")

        def run() -> None:
            missed = False  # True once a connection failed or broke: notices were lost
            while not self._stop.is_set():
                try:
                    with psycopg.connect(
                        self.url,
                        autocommit=True,
                        row_factory=tuple_row,
                        application_name=self.listener_name,
                    ) as conn:
                        conn.execute(f"LISTEN {CHANNEL}")
                        if missed and on_gap is not None:
                            call(on_gap)
                        missed = False
                        while not self._stop.is_set():
                            for notice in conn.notifies(timeout=1.0):
                                change = self._change(notice.payload)
                                if change is not None:
                                    call(on_change, change)
                except psycopg.Error as exc:
                    missed = True
                    self._mark_down(exc)
                    self._stop.wait(_RETRY_AFTER)

        self._listening = (on_change, on_gap)
        self._listener = start_thread(run, name="cargohold-catalog-listen")

    def _change(self, payload: str) -> Change | None:
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if data.get("r") != self.remote_url or data.get("i") == self.instance:
            return None
        return Change(remote=data["r"], key=data["k"], etag=data.get("e"), instance=data["i"])

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        self._disconnect()


class PgLease:
    """A lease in the catalog's database: the same contract as :class:`cargohold._lease.Lease`
    (try_acquire, release, holder_info, lost), with expiry judged by the database's clock."""

    def __init__(self, catalog: Catalog, name: str, *, ttl: float, purpose: str) -> None:
        self.catalog = catalog
        self.name = name
        self.ttl = ttl
        self.purpose = purpose
        self.holder = holder_name()
        self._heartbeat = Heartbeat(ttl=ttl, purpose=purpose, thread_name="cargohold-pg-lease")

    @property
    def lost(self) -> bool:
        """Another instance took the lease over (its row expired) while this one held it."""
        return self._heartbeat.lost

    def try_acquire(self) -> bool:
        if not self.catalog.try_lease(self.name, self.holder, self.ttl):
            return False
        self._heartbeat.start(lambda: self.catalog.renew_lease(self.name, self.holder, self.ttl))
        return True

    def holder_info(self) -> str:
        """Who holds it and since when (``?`` if the catalog cannot say)."""
        try:
            found = self.catalog.lease_holder(self.name)
        except CatalogUnavailable:
            return "?"
        return "?" if found is None else describe_holder(*found)

    def release(self) -> None:
        """Stop renewing and delete the row if it is still ours. Idempotent, and safe from
        several threads at once (the user's release and the Hold's stop hook): the row is
        deleted once, and no renewal runs after it (see :class:`cargohold._heartbeat.Heartbeat`);
        waits for at most the one renewal in flight."""
        self._heartbeat.end(lambda: self.catalog.release_lease(self.name, self.holder))
