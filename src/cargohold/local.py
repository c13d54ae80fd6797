"""The local tier: objects on this machine's disk, indexed in SQLite, with the journal.

Written here rather than borrowed (diskcache comes closest) because the journal has to live
in the same transaction as the write, and the syncer, the eviction rules and the loss
window all read the same rows.

Layout under the tier's directory::

    index.sqlite3          the index (WAL mode): one row per key, see SCHEMA
    putlog                 writes not yet applied to the index (see _putlog), with
    putlog.lock/.present/.state   which tier may append to it
    blobs/a/<id>           bytes of objects too large to keep in the index (16 shards;
                           tiers written before 2026-12 also have blobs/ab/<id>)
    named/<id>/<name>      a hard link to a blob under the key's last segment, made when
                           ``path()`` is asked for it, so the file has its real name
    tmp/                   files being written

Guarantees:

- A write is one record appended to the put log (:mod:`cargohold._putlog`) when this tier
  has the directory to itself, else one SQLite statement. Either way it becomes a row whose
  ``dirty_since`` is set until the syncer has put these bytes (or this delete) on the
  remote: the row *is* the journal entry. Logged records become rows in batches, in order,
  each exactly once, before anything reads or writes the index (and a lookup answers them
  from memory meanwhile). So a process killed at any moment (SIGKILL) loses nothing
  acknowledged and leaves nothing half-written: a large object's file is complete before
  the record or statement that makes it reachable. With ``fsync`` on, files and log
  records are fsynced and SQLite runs ``synchronous=FULL``, which also covers power loss.
- A key written again before it was synced keeps one row: only the latest bytes upload.
- Rows not yet on the remote (``dirty_since`` set) are never evicted.
- Totals (bytes held, bytes and count pending) are kept by triggers, exact across processes.
- Files of replaced or removed objects are queued in ``garbage`` by triggers and removed by
  :meth:`LocalTier.collect_garbage`; a reader that finds its file gone reads the row again.
- A get of a key read lately is answered from memory, but only while nothing has committed
  to the index since (any thread or process): :mod:`cargohold._hot_rows`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ._hot_rows import HotRows
from ._io import read_whole
from ._putlog import HEADER_SIZE, LogRecord, PutLog, encode_record
from .errors import (
    CargoholdError,
    ConfigError,
    HoldClosed,
    PermissionDenied,
    StorageFull,
    from_os_error,
)
from .keys import RESERVED_PREFIX, InternalKey
from .remotes import ObjectInfo

__all__ = ["INLINE_MAX", "Entry", "LocalTier", "Pending", "Staged", "Totals", "local_etag"]

log = logging.getLogger("cargohold.local")

#: Objects up to this size live in the index itself: one statement writes them, which is
#: several times faster than a file (see docs/benchmarks.md).
INLINE_MAX = 64 * 1024
SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 60_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,      -- bumped by every local change of the row
    size INTEGER NOT NULL,
    inline BLOB,                   -- the bytes, for objects up to INLINE_MAX
    file TEXT,                     -- otherwise the blob file, relative to blobs/
    metadata TEXT,                 -- JSON object, NULL when empty
    content_type TEXT NOT NULL,
    etag TEXT,                     -- the remote's etag of these bytes; NULL until synced
    modified REAL NOT NULL,        -- when these bytes were written here
    validated REAL,                -- when the remote last confirmed etag
    accessed REAL NOT NULL,
    dirty_since REAL,              -- oldest local change not yet on the remote; NULL if none
    deleted INTEGER NOT NULL DEFAULT 0   -- 1: a deletion waiting to reach the remote
);
CREATE INDEX IF NOT EXISTS objects_pending ON objects(dirty_since) WHERE dirty_since IS NOT NULL;
CREATE INDEX IF NOT EXISTS objects_lru ON objects(accessed) WHERE dirty_since IS NULL;
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    local_bytes INTEGER NOT NULL,
    pending_bytes INTEGER NOT NULL,
    pending_count INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0, 0);
CREATE TABLE IF NOT EXISTS garbage (file TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- keys synced while the shared catalog was unreachable: recorded there once it is back
CREATE TABLE IF NOT EXISTS catalog_backlog (key TEXT PRIMARY KEY);
-- the highest version any row has had, so a tier that starts appending to the put log can
-- hand out versions above every one, whatever the clock says (filled once, on upgrade)
CREATE TABLE IF NOT EXISTS version_high (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL);
INSERT INTO version_high SELECT 0, coalesce((SELECT max(version) FROM objects), 0)
    WHERE NOT EXISTS (SELECT 1 FROM version_high);
CREATE TRIGGER IF NOT EXISTS objects_version_insert AFTER INSERT ON objects BEGIN
    UPDATE version_high SET value = max(value, NEW.version);
END;
CREATE TRIGGER IF NOT EXISTS objects_version_update AFTER UPDATE OF version ON objects BEGIN
    UPDATE version_high SET value = max(value, NEW.version);
END;
CREATE TRIGGER IF NOT EXISTS objects_insert AFTER INSERT ON objects BEGIN
    UPDATE totals SET
        local_bytes = local_bytes + NEW.size,
        pending_bytes = pending_bytes + IIF(NEW.dirty_since IS NULL, 0, NEW.size),
        pending_count = pending_count + (NEW.dirty_since IS NOT NULL);
END;
CREATE TRIGGER IF NOT EXISTS objects_update AFTER UPDATE ON objects BEGIN
    UPDATE totals SET
        local_bytes = local_bytes + NEW.size - OLD.size,
        pending_bytes = pending_bytes + IIF(NEW.dirty_since IS NULL, 0, NEW.size)
                                      - IIF(OLD.dirty_since IS NULL, 0, OLD.size),
        pending_count = pending_count + (NEW.dirty_since IS NOT NULL)
                                      - (OLD.dirty_since IS NOT NULL);
    INSERT INTO garbage(file) SELECT OLD.file WHERE OLD.file IS NOT NULL AND OLD.file IS NOT NEW.file;
END;
CREATE TRIGGER IF NOT EXISTS objects_delete AFTER DELETE ON objects BEGIN
    UPDATE totals SET
        local_bytes = local_bytes - OLD.size,
        pending_bytes = pending_bytes - IIF(OLD.dirty_since IS NULL, 0, OLD.size),
        pending_count = pending_count - (OLD.dirty_since IS NOT NULL);
    INSERT INTO garbage(file) SELECT OLD.file WHERE OLD.file IS NOT NULL;
END;
"""

# A local write: a new row, or the row replaced. dirty_since keeps the oldest unsynced time.
_UPSERT_DIRTY = """
INSERT INTO objects (key, version, size, inline, file, metadata, content_type,
                     etag, modified, validated, accessed, dirty_since, deleted)
VALUES (:key, 1, :size, :inline, :file, :metadata, :content_type,
        NULL, :now, NULL, :now, :now, :deleted)
ON CONFLICT (key) DO UPDATE SET
    version = version + 1, size = excluded.size, inline = excluded.inline,
    file = excluded.file, metadata = excluded.metadata,
    content_type = excluded.content_type, etag = NULL, modified = excluded.modified,
    validated = NULL, accessed = excluded.accessed,
    dirty_since = coalesce(dirty_since, excluded.dirty_since), deleted = excluded.deleted
RETURNING version, dirty_since
"""

# A logged write applied to the index: like _UPSERT_DIRTY, but with the version the put
# returned, which is above the row's unless another process wrote the key in between (then
# the row's + 1: versions only rise, and that put's local etag no longer matches).
_UPSERT_LOGGED = """
INSERT INTO objects (key, version, size, inline, file, metadata, content_type,
                     etag, modified, validated, accessed, dirty_since, deleted)
VALUES (:key, :version, :size, :inline, :file, :metadata, :content_type,
        NULL, :now, NULL, :now, :now, :deleted)
ON CONFLICT (key) DO UPDATE SET
    version = max(version + 1, excluded.version), size = excluded.size,
    inline = excluded.inline, file = excluded.file, metadata = excluded.metadata,
    content_type = excluded.content_type, etag = NULL, modified = excluded.modified,
    validated = NULL, accessed = excluded.accessed,
    dirty_since = coalesce(dirty_since, excluded.dirty_since), deleted = excluded.deleted
RETURNING version, dirty_since
"""

# A copy of what the remote holds (read-through, hydrate, write-through). It never
# replaces a local change that has not reached the remote.
_UPSERT_CLEAN = """
INSERT INTO objects (key, version, size, inline, file, metadata, content_type,
                     etag, modified, validated, accessed, dirty_since, deleted)
VALUES (:key, 1, :size, :inline, :file, :metadata, :content_type,
        :etag, :now, :now, :now, NULL, 0)
ON CONFLICT (key) DO UPDATE SET
    version = version + 1, size = excluded.size, inline = excluded.inline,
    file = excluded.file, metadata = excluded.metadata,
    content_type = excluded.content_type, etag = excluded.etag, modified = excluded.modified,
    validated = excluded.validated, accessed = excluded.accessed, deleted = 0
WHERE objects.dirty_since IS NULL {extra}
RETURNING version, dirty_since
"""

# A change every carried transaction makes (see LocalTier._writing): an UPDATE that writes
# the values a row already has counts as a change but commits nothing.
_BUMP = (
    "INSERT INTO info VALUES ('commits', '1') "
    "ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
)

_LOOKUP = (
    "SELECT inline, file, dirty_since, validated, accessed FROM objects "
    "WHERE key = ? AND deleted = 0"
)
#: Seconds within which a second read of a key is not recorded for LRU eviction: recording
#: every read would cost a write for each one.
ACCESS_GRANULARITY = 60.0
_ENTRIES_PAGE = 1000  # rows LocalTier.entries reads per query
_GARBAGE_CHUNK = 32  # files removed between two commits (see LocalTier.change_stamp)
#: A put applies the logged records itself past this many (or bytes of them), so memory
#: stays bounded when nothing else reads the index (a paused syncer, a burst).
_LOG_APPLY_AT = 4096
_LOG_APPLY_BYTES = 32 * 1024 * 1024
#: The owner starts a new log file once everything is applied and the file is this large.
_LOG_ROTATE_AT = 16 * 1024 * 1024
_FORGET_CHUNK = 64  # applied records dropped from memory per hold of _log_lock
_ESTIMATE_STALE = 1.0  # seconds after which estimate() reads the index itself

_COLUMNS = (
    "key, version, size, inline, file, metadata, content_type, etag, "
    "modified, validated, accessed, dirty_since, deleted"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the index: what the local tier knows about a key."""

    key: str
    version: int
    size: int
    inline: bytes | None
    file: str | None
    metadata: dict[str, str]
    content_type: str
    etag: str | None
    modified: float
    validated: float | None
    accessed: float
    dirty_since: float | None
    deleted: bool

    @property
    def pending(self) -> bool:
        """True while this write (or deletion) has not reached the remote."""
        return self.dirty_since is not None

    def info(self) -> ObjectInfo:
        """As the remote will describe it, except that until the remote has these bytes
        the etag is a local one (see :func:`local_etag`)."""
        return ObjectInfo(
            key=self.key,
            size=self.size,
            etag=self.etag or local_etag(self),
            last_modified=datetime.fromtimestamp(self.modified, UTC),
            metadata=dict(self.metadata),
            content_type=self.content_type,
        )


@dataclass(frozen=True, slots=True)
class Staged:
    """Bytes made ready for a key but not yet reachable (see ``LocalTier.stage``)."""

    key: str
    inline: bytes | memoryview | None
    file: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Pending:
    """A journal entry as the syncer takes it: the row, and where its bytes are."""

    entry: Entry
    path: Path | None  # the blob file, when the bytes are not inline


@dataclass(frozen=True, slots=True)
class _Logged:
    """A put or delete of this tier in the put log, not yet applied to the index."""

    record: LogRecord  # its version is the one the put returned (see _log_write)
    dirty_since: float
    row: tuple[Any, ...] | None  # as _LOOKUP reads it; None for a deletion


@dataclass(frozen=True, slots=True)
class Totals:
    local_bytes: int
    pending_bytes: int
    pending_count: int
    oldest_pending: float | None


def _entry(row: tuple[Any, ...]) -> Entry:
    key: str = row[0]
    if key.startswith(RESERVED_PREFIX):
        key = InternalKey(key)  # cargohold's own record: keep it usable as one
    return Entry(
        key=key,
        version=row[1],
        size=row[2],
        inline=row[3],
        file=row[4],
        metadata=json.loads(row[5]) if row[5] else {},
        content_type=row[6],
        etag=row[7],
        modified=row[8],
        validated=row[9],
        accessed=row[10],
        dirty_since=row[11],
        deleted=bool(row[12]),
    )


def local_etag(entry: Entry) -> str:
    """The etag of a write the remote does not have yet: ``L`` + version + write time.

    The remote assigns the real one when the syncer uploads the bytes; ``Hold.put(...,
    if_match=...)`` accepts a local etag for as long as the key has not changed since.
    (Hashing every write for an etag the remote would agree with costs 3 ms per MiB on
    small machines, more than writing the bytes.)
    """
    return f"L{entry.version}.{int(entry.modified * 1_000_000)}"


class LocalTier:
    """Objects on local disk with an SQLite index and journal. Safe across threads and
    processes sharing the directory. See the module docstring for the guarantees."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self._blob_prefix = f"{self.blobs}{os.sep}"  # reads build paths as strings: cheaper
        self.named = self.root / "named"
        self.tmp = self.root / "tmp"
        self._shards: set[str] = set()
        self.access_granularity = ACCESS_GRANULARITY
        self.fsync = fsync
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        # Writers in this process queue here instead of in SQLite's busy handler, which
        # sleeps a millisecond or more each time it finds the database locked.
        self._write_lock = threading.Lock()
        self._touched: dict[str, float] = {}
        # The put log (see _putlog): this tier's records not yet in the index, in order,
        # and the latest of each key for lookups. Appends take only _log_lock, so a put
        # never waits for a transaction; whoever applies holds _write_lock, then _log_lock.
        self._log_lock = threading.Lock()
        self._records: list[_Logged] = []
        self._overlay: dict[str, _Logged] = {}
        self._log_bytes = 0
        # Not the owner: the log is applied up to here (nothing is applied before the index
        # exists and _start_log looks).
        self._log_seen: float = math.inf
        self._solo = False  # True while puts are appended to the log
        self._last_version = 0  # of a logged write (see _log_write)
        self._estimate_lock = threading.Lock()  # a refresh and a put's addition, one at a time
        self._estimate = Totals(0, 0, 0, None)
        self._estimated_at = -math.inf
        try:
            for folder in (self.root, self.blobs, self.tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"create the local tier in {self.root}") from exc
        self._log = PutLog(self.root, fsync=fsync)
        try:
            conn = self._conn()
            with self._transaction(conn):
                for statement in _statements(SCHEMA):
                    conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO info VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            # Mapped once a connection has put the index in WAL mode; see _hot_rows.
            self._hot = HotRows(self.root / "index.sqlite3")
            self._start_log()
        except BaseException:
            # Nothing was appended: acknowledged, so no tier beside this one keeps watching.
            self._log.close(ack=True)
            self._closed = True
            with self._lock:
                connections, self._connections = self._connections, []
            for opened in connections:
                with contextlib.suppress(sqlite3.Error):
                    opened.close()
            raise
        _TIERS.add(self)

    # -- the put log ----------------------------------------------------------------------

    def _start_log(self) -> None:
        """Apply what the log holds beyond the index (an owner before this one died, or
        one is appending now); as the owner, start a new log file and append from now on."""
        conn = self._conn()
        self._log_seen = 0
        if not self._log.owner:
            with self._write_lock:
                self._apply(conn, None)
            return
        # Owner since opening, unless another tier joined since: rotating() says.
        self._take_log(conn, self._log.rotating())

    def reclaim_log(self) -> bool:
        """Append puts to the log again, if this tier stopped when another opened the
        directory and is alone on it now (the syncer tries when idle). True if it does."""
        if self._solo or self._closed:
            return False
        conn = self._conn()
        with self._write_lock:
            self._drain_locked(conn)
            if self._overlay:
                return False
        return self._take_log(conn, self._log.claiming())

    def _take_log(self, conn: sqlite3.Connection, alone: AbstractContextManager[bool]) -> bool:
        """Inside ``alone`` (``putlog.lock`` held; True if this tier owns a new epoch and no
        other has joined): apply what an owner before this one left in the file, then
        append puts from now on. Otherwise, or if the log cannot be started, this tier
        writes to the index, and says so to any tier that joins. True if it appends."""
        with self._write_lock, alone as owning:
            self._apply(conn, None)
            if owning:
                try:
                    self._begin_appending(conn)
                except (OSError, sqlite3.Error) as exc:  # writes go to the index instead
                    log.warning("cargohold: cannot start a put log in %s: %s", self.root, exc)
        if not self._solo:
            self._log.acknowledge()
        return self._solo

    def _begin_appending(self, conn: sqlite3.Connection) -> None:
        """Owner, ``putlog.lock`` and ``_write_lock`` held, everything applied: a new log
        file, versions from above the index's highest, and puts appended from now on."""
        self._new_log_file(conn)
        high = conn.execute("SELECT value FROM version_high").fetchone()
        with self._log_lock:
            self._last_version = max(self._last_version, int(high[0]) if high else 0)
            self._solo = True

    def _new_log_file(self, conn: sqlite3.Connection) -> None:
        """Owner, everything applied, ``_write_lock`` held: a new, empty log. The index
        names the new file before it replaces the old one, so a crash in between leaves an
        old file the index does not name, which is never read again."""
        new_id = self._log.start_new()
        before = self._hot.snapshot()
        try:
            conn.execute(
                "INSERT OR REPLACE INTO info VALUES ('putlog', ?)",
                (f"{new_id.hex()} {HEADER_SIZE}",),
            )
        except BaseException:
            self._log.drop_new()
            raise
        self._hot.carry(before, self._hot.snapshot(), {})
        self._log.replace_with_new()

    def _applied(self, conn: sqlite3.Connection) -> tuple[bytes | None, int]:
        row = conn.execute("SELECT value FROM info WHERE name = 'putlog'").fetchone()
        if row is None:
            return None, 0
        file_id, offset = str(row[0]).split()
        return bytes.fromhex(file_id), int(offset)

    def _must_watch(self) -> bool:
        """Beside an owner that may still append: has the log grown past what is applied?"""
        return not self._log.owner and self._log.watching() and self._log.size() > self._log_seen

    def _settle(self) -> None:
        """Make the index hold every acknowledged write before it is read: this tier's
        logged records, and beside an owner, whatever it has appended."""
        # The overlay, not _records: it empties only once a drain under way has committed.
        if self._overlay or self._must_watch():
            with self._write_lock:
                self._drain_locked(self._conn())

    def _drain_locked(self, conn: sqlite3.Connection) -> None:
        """``_settle`` with ``_write_lock`` held."""
        if self._records:
            with self._log_lock:
                own, self._records = self._records, []
            self._apply(conn, own)
            if self._log.end > _LOG_ROTATE_AT and self._solo:
                self._rotate(conn)
        elif self._must_watch():
            self._apply(conn, None)

    def _apply(self, conn: sqlite3.Connection, own: list[_Logged] | None) -> None:
        """Apply records to the index in one transaction: ``own`` (this tier's), or with
        None, what the log file holds past the applied offset. A record at or before the
        offset (applied by another tier already) is skipped, so each applies once."""
        changed: dict[str, Any] = {}
        records: list[LogRecord] = []
        seen = 0  # not the owner: the log's size, all of it applied or torn
        before = self._hot.snapshot()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                file_id, applied = self._applied(conn)
                if own is not None:
                    records = [logged.record for logged in own if logged.record.end > applied]
                else:
                    named = file_id is not None and self._log.file_id() == file_id
                    seen = self._log.size()  # before the read: a record past it is read later
                    if named:
                        records = self._log.read_from(applied, seen)
                for record in records:
                    rows = conn.execute(_UPSERT_LOGGED, _log_params(record)).fetchall()
                    changed[record.key] = (
                        None
                        if record.deleted
                        else (record.inline, record.file, rows[0][1], None, record.now)
                    )
                if records:
                    assert file_id is not None
                    conn.execute(
                        "UPDATE info SET value = ? WHERE name = 'putlog'",
                        (f"{file_id.hex()} {records[-1].end}",),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            if own:
                with self._log_lock:
                    self._records[:0] = own  # kept, in order, for the next try
            if isinstance(exc, sqlite3.Error):
                raise _sqlite_error(exc, "apply the put log to the local index") from exc
            raise
        if records:
            self._hot.carry(before, self._hot.snapshot(), changed)
        self._log_seen = max(self._log_seen, seen)
        # Forgotten a few at a time: a put waiting for _log_lock waits for one chunk, not
        # for thousands of records (a tail in put latency while the syncer applies).
        for start in range(0, len(own or ()), _FORGET_CHUNK):
            chunk = (own or [])[start : start + _FORGET_CHUNK]
            size = sum(logged.record.size for logged in chunk)
            with self._log_lock:
                self._log_bytes -= size
                for logged in chunk:
                    if self._overlay.get(logged.record.key) is logged:
                        del self._overlay[logged.record.key]

    def _rotate(self, conn: sqlite3.Connection) -> None:
        """Owner, ``_write_lock`` held: a new log file once the old one is all applied.
        If that fails, this tier stops appending (everything it appended is applied)."""
        with self._log_lock:
            if self._records or not self._solo:
                return  # appended meanwhile: the next drain tries again
            try:
                with self._log.rotating() as alone:
                    if alone:
                        self._new_log_file(conn)
            except (OSError, sqlite3.Error) as exc:
                log.warning("cargohold: cannot start a new put log in %s: %s", self.root, exc)
                self._solo = False
        if not self._solo:
            self._log.acknowledge()

    def _leave_solo(self) -> None:
        """Another tier opened the directory (or the log failed): apply the log, and write
        to SQLite from now on."""
        with self._log_lock:
            self._solo = False
        self._settle()
        if not self._overlay:
            self._log.acknowledge()

    def _log_write(
        self, staged: Staged, metadata: Mapping[str, str], content_type: str, *, deleted: bool
    ) -> Entry | None:
        """A put or delete appended to the log: safe from a crash on return. None if
        this tier no longer appends (write to SQLite instead)."""
        key = staged.key
        now = time.time()
        meta = json.dumps(dict(metadata), separators=(",", ":")) if metadata else None
        inline = bytes(staged.inline) if staged.inline is not None else None
        with self._log_lock:
            if not self._solo:
                return None
            # The version without asking the index (a query here cost more than the rest
            # of the put, and handed the GIL to whichever thread wanted it): microseconds
            # since the epoch, rising in this tier from above the highest version the index
            # had when it started appending (so above any the key had, whatever the clock
            # did; versions only need to rise per key). The index gives it this one, or the
            # next if another process wrote the key since (see _UPSERT_LOGGED).
            version = self._last_version = max(int(now * 1_000_000), self._last_version + 1)
            known = self._overlay.get(key)
            dirty_since = known.dirty_since if known is not None else now
            record = encode_record(
                key, staged.size, version, inline, staged.file, meta, content_type, now, deleted
            )
            try:
                end = self._log.append(record)
            except BaseException as exc:
                # Not acknowledged, and the log may end torn: write to SQLite from now on.
                self._solo = False
                if isinstance(exc, OSError):
                    raise from_os_error(
                        exc, f"write {key!r} to the local tier at {self.root}", key=key
                    ) from exc
                raise
            logged = _Logged(
                LogRecord(
                    key,
                    staged.size,
                    version,
                    inline,
                    staged.file,
                    meta,
                    content_type,
                    now,
                    deleted,
                    end,
                ),
                dirty_since,
                None if deleted else (inline, staged.file, dirty_since, None, now),
            )
            self._records.append(logged)
            self._overlay[key] = logged
            self._log_bytes += staged.size
        # The write is safe now: what follows must not make the put fail (the caller would
        # discard a blob the record names). What is not applied here is applied later, and
        # by a tier that joined, from the file.
        try:
            if self._log.joined() or not self._solo:
                self._leave_solo()  # before returning: the tier that joined sees this write
            elif len(self._records) >= _LOG_APPLY_AT or self._log_bytes >= _LOG_APPLY_BYTES:
                self._settle()
        except (CargoholdError, sqlite3.Error, OSError) as exc:
            log.warning(
                "cargohold: applying the put log of %s failed (will retry): %s", self.root, exc
            )
        return Entry(
            key=key,
            version=version,
            size=staged.size,
            inline=inline,
            file=staged.file,
            metadata=dict(metadata),
            content_type=content_type,
            etag=None,
            modified=now,
            validated=None,
            accessed=now,
            dirty_since=dirty_since,
            deleted=deleted,
        )

    def _note_version(self, version: int) -> None:
        """A version this tier's own direct write gave a row: logged writes go above it
        (it can be above the clock's, when the clock was set back since it was written)."""
        with self._log_lock:
            self._last_version = max(self._last_version, version)

    def _forked(self) -> None:
        """In a child after fork(): the parent owns this tier's log and its records."""
        self._solo = False
        self._records, self._overlay, self._log_bytes = [], {}, 0
        self._log_seen = 0  # the parent's log is read from what the index has applied
        self._log_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._log.forked()

    # -- connections ------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise HoldClosed(f"the local tier at {self.root} is closed")
        try:
            conn = sqlite3.connect(
                self.root / "index.sqlite3",
                isolation_level=None,  # autocommit: one statement, one transaction
                check_same_thread=False,  # each thread has its own; close() closes them all
                timeout=_BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit is a write() into the WAL, safe when the process
            # dies; only a checkpoint fsyncs. FULL fsyncs every commit (power loss too).
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # Checkpoints (which fsync) run in the syncer's upkeep, not in whichever write
            # happens to cross the threshold: that write would wait milliseconds.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # Reads through a memory map instead of a read() per page (as diskcache does).
            conn.execute("PRAGMA mmap_size=268435456")
            conn.execute("PRAGMA cache_size=-32768")
        except sqlite3.Error as exc:
            raise CargoholdError(f"cannot open the local index in {self.root}: {exc}") from exc
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _transaction(
        self, conn: sqlite3.Connection, changed: dict[str, Any] | None = None
    ) -> Iterator[None]:
        """One write transaction; ``changed`` as for ``_writing``."""
        with self._writing(conn, changed):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                if changed is not None:
                    conn.execute(_BUMP)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def _writing(
        self, conn: sqlite3.Connection, changed: dict[str, Any] | None = None
    ) -> Iterator[None]:
        """Hold this process's write lock around statements that commit. ``changed``
        names every key whose lookup row they change, with the row now (None: dropped
        or not known), filled in before the block ends: then the table of rows read
        lately keeps its other rows across this commit (see ``_hot_rows``); without it,
        the table is emptied at the next lookup.

        With ``changed``, the block must commit exactly once if it changes any row, and
        that change must be real: SQLite counts an UPDATE that writes the values a row
        already holds as a change but commits nothing, and then a commit by another
        process in the same moment would pass for this one. A single statement that
        always changes a value (a version bumped, a row deleted) qualifies; transactions
        make sure of it with ``_BUMP``."""
        with self._write_lock:
            if self._overlay or self._must_watch():
                self._drain_locked(conn)  # logged writes first: they came before this one
            before = self._hot.snapshot() if changed is not None else None
            writes = conn.total_changes
            yield
            if changed is not None and conn.total_changes != writes:
                self._hot.carry(before, self._hot.snapshot(), changed)

    def close(self) -> None:
        """Write pending access times and close every connection. Safe to call twice."""
        if self._closed:
            return
        with contextlib.suppress(CargoholdError, sqlite3.Error):
            self.flush_access_times()
        with self._log_lock:
            self._solo = False  # no put appends after this
        with contextlib.suppress(CargoholdError, sqlite3.Error):
            self._settle()
        # Acknowledged only once nothing is left: otherwise a tier beside this one keeps
        # applying the file, and the next owner finds the rest there.
        self._log.close(ack=self._log.owner and not self._overlay)
        self._closed = True
        self._hot.close()  # before the connections: the map is valid while they are open
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def bind_remote(self, url: str) -> None:
        """Tie this tier to one remote. Its copies belong to that remote: opened with
        another, the copies are dropped, unless writes for the first one are still pending
        (then ConfigError, as they would go to the wrong place)."""
        conn = self._conn()
        with self._transaction(conn):
            row = conn.execute("SELECT value FROM info WHERE name = 'remote'").fetchone()
            if row is not None and row[0] != url:
                pending = conn.execute("SELECT pending_count FROM totals").fetchone()[0]
                if pending:
                    raise ConfigError(
                        f"the local tier at {self.root} holds {pending} change(s) not yet synced "
                        f"to {row[0]}, but was opened with {url}",
                        hint=f"open it with {row[0]} until it is flushed, or use another data_dir",
                    )
                log.info(
                    "cargohold: %s now caches %s (was %s): dropping old copies",
                    self.root,
                    url,
                    row[0],
                )
                conn.execute("DELETE FROM objects")
            conn.execute("INSERT OR REPLACE INTO info VALUES ('remote', ?)", (url,))
        self.collect_garbage()

    # -- writes -----------------------------------------------------------------------

    def stage(self, key: str, data: bytes | memoryview | Path | BinaryIO) -> Staged:
        """Make the bytes ready (inline, or a complete blob file) without making them
        reachable: ``commit``, ``commit_clean`` or ``discard`` it next."""
        inline, file, size = self._store_bytes(key, data)
        return Staged(key, inline, file, size)

    def stage_file(self, key: str, source: Path) -> Staged:
        """Stage a complete file from this tier's ``tmp/``, moving (not copying) it."""
        size = source.stat().st_size
        if size <= INLINE_MAX:
            data = source.read_bytes()
            source.unlink()
            return Staged(key, data, None, size)
        relative = self._blob_name(key)
        os.replace(source, self.blobs / relative)
        return Staged(key, None, relative, size)

    def staged_data(self, staged: Staged) -> bytes | memoryview | Path:
        """The staged bytes, to upload."""
        return staged.inline if staged.inline is not None else self.blobs / str(staged.file)

    def discard(self, staged: Staged) -> None:
        if staged.file is not None:
            self._remove_blob(staged.file)

    def commit(self, staged: Staged, *, metadata: Mapping[str, str], content_type: str) -> Entry:
        """Make staged bytes the key's local change to sync; safe from a crash on return."""
        entry = self._write_dirty(staged, metadata, content_type, deleted=False)
        self._note_added(staged.size, pending=True)
        return entry

    def _write_dirty(
        self, staged: Staged, metadata: Mapping[str, str], content_type: str, *, deleted: bool
    ) -> Entry:
        """A local change to sync: appended to the put log while this tier has the
        directory to itself, else one SQLite statement."""
        entry = (
            self._log_write(staged, metadata, content_type, deleted=deleted) if self._solo else None
        )
        if entry is None:
            entry = self._upsert(
                _UPSERT_DIRTY, staged, metadata, content_type, deleted=int(deleted)
            )
        assert entry is not None  # a dirty upsert always writes its row
        return entry

    def _note_added(self, size: int, *, pending: bool) -> None:
        """Keep the estimate (see ``estimate``) up with this process's own writes."""
        with self._estimate_lock:
            was = self._estimate  # built directly: dataclasses.replace costs 2 µs a put
            self._estimate = Totals(
                was.local_bytes + size,
                was.pending_bytes + (size if pending else 0),
                was.pending_count + pending,  # a rewrite of a pending key counts twice: errs high
                was.oldest_pending,
            )

    def commit_clean(
        self, staged: Staged, info: ObjectInfo, *, only_version: int | None = None
    ) -> Entry | None:
        """Make staged bytes the key's copy of what the remote holds (``info``).

        Never replaces a local change that has not been synced, nor (with ``only_version``)
        a row that changed since it was read: then it stores nothing, discards the staged
        bytes and returns None.
        """
        extra = "" if only_version is None else "AND objects.version = :only_version"
        entry = self._upsert(
            _UPSERT_CLEAN.format(extra=extra),
            staged,
            info.metadata or {},
            info.content_type or "application/octet-stream",
            etag=info.etag,
            only_version=only_version,
        )
        if entry is None:
            self.discard(staged)
        else:
            self._note_added(staged.size, pending=False)
        return entry

    def commit_clean_many(self, pairs: list[tuple[Staged, ObjectInfo]]) -> list[Staged]:
        """``commit_clean`` for many copies in one transaction (hydrate). Rows with a
        local change not yet synced are left alone; returns what was stored."""
        if not pairs:
            return []
        now = time.time()
        sql = _UPSERT_CLEAN.format(extra="").replace("RETURNING version, dirty_since", "")
        stored: list[Staged] = []
        conn = self._conn()
        with self._transaction(conn, {staged.key: None for staged, _ in pairs}):
            for staged, info in pairs:
                cursor = conn.execute(
                    sql,
                    {
                        "key": staged.key,
                        "size": staged.size,
                        "inline": staged.inline,
                        "file": staged.file,
                        "metadata": json.dumps(info.metadata, separators=(",", ":"))
                        if info.metadata
                        else None,
                        "content_type": info.content_type or "application/octet-stream",
                        "etag": info.etag,
                        "now": now,
                    },
                )
                if cursor.rowcount:
                    stored.append(staged)
            self._note_version(conn.execute("SELECT value FROM version_high").fetchone()[0])
        for staged, _ in pairs:
            if staged not in stored:
                self.discard(staged)
        self._note_added(sum(s.size for s in stored), pending=False)
        return stored

    def write(
        self,
        key: str,
        data: bytes | memoryview | Path | BinaryIO,
        *,
        metadata: Mapping[str, str],
        content_type: str,
    ) -> Entry:
        """Stage and commit in one call: a local change to sync."""
        return self.commit(self.stage(key, data), metadata=metadata, content_type=content_type)

    def delete(self, key: str) -> Entry:
        """Record a deletion to sync: the key reads as missing at once."""
        staged = Staged(key, None, None, 0)
        return self._write_dirty(staged, {}, "application/octet-stream", deleted=True)

    def _upsert(
        self,
        sql: str,
        staged: Staged,
        metadata: Mapping[str, str],
        content_type: str,
        **extra: Any,
    ) -> Entry | None:
        now = time.time()
        params = {
            "key": staged.key,
            "size": staged.size,
            "inline": staged.inline,
            "file": staged.file,
            "metadata": json.dumps(dict(metadata), separators=(",", ":")) if metadata else None,
            "content_type": content_type,
            "now": now,
            "deleted": extra.pop("deleted", 0),
            **extra,
        }
        clean = "etag" in params
        inline = bytes(staged.inline) if staged.inline is not None else None
        changed: dict[str, Any] = {}
        try:
            conn = self._conn()
            with self._writing(conn, changed):
                # fetchall: the statement runs to its end, and so commits, in the block.
                rows = conn.execute(sql, params).fetchall()
                if rows and not params["deleted"]:  # the row as _LOOKUP reads it
                    validated = now if clean else None
                    changed[staged.key] = (inline, staged.file, rows[0][1], validated, now)
                else:
                    changed[staged.key] = None
        except sqlite3.Error as exc:
            self.discard(staged)
            raise _sqlite_error(exc, f"write {staged.key!r} to the local tier") from exc
        if not rows:
            return None
        self._note_version(rows[0][0])
        return Entry(
            key=staged.key,
            version=rows[0][0],
            size=staged.size,
            inline=inline,
            file=staged.file,
            metadata=dict(metadata),
            content_type=content_type,
            etag=params.get("etag"),
            modified=now,
            validated=now if clean else None,
            accessed=now,
            dirty_since=rows[0][1],
            deleted=bool(params["deleted"]),
        )

    def _blob_name(self, key: str) -> str:
        """A new blob's name, ``a/<id>``; its shard folder exists on return. Sixteen
        shards, not 256 or one per blob: each new folder costs a mkdir (0.15-0.3 ms on small
        VMs) and makes the first file in it slower to create, and with 256 a new tier paid
        that for most of its first few hundred blobs. Names stored in the index are paths
        relative to blobs/, so tiers that have ``ab/<id>`` blobs read them as before."""
        blob_id = uuid.uuid4().hex
        shard = blob_id[:1]
        if shard not in self._shards:
            (self.blobs / shard).mkdir(exist_ok=True)
            self._shards.add(shard)
        return f"{shard}/{blob_id}"

    def _store_bytes(
        self, key: str, data: bytes | memoryview | Path | BinaryIO, *, as_file: bool = False
    ) -> tuple[bytes | memoryview | None, str | None, int]:
        """Small bytes go inline (unless ``as_file``); the rest becomes a complete blob file."""
        small_bytes = isinstance(data, bytes | memoryview) and len(data) <= INLINE_MAX
        if isinstance(data, bytes | memoryview) and small_bytes and not as_file:
            return data, None, len(data)
        relative = self._blob_name(key)
        path = self.blobs / relative
        size = 0
        try:
            with path.open("wb") as out:
                for chunk in _chunks(data):
                    out.write(chunk)
                    size += len(chunk)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            if self.fsync:  # the new folders' entries must survive power loss too
                _fsync_dir(path.parent)
                _fsync_dir(path.parent.parent)
        except OSError as exc:
            self._remove_blob(relative)
            where = f"write {key!r} to the local tier at {self.root}"
            raise from_os_error(exc, where, key=key) from exc
        except BaseException:
            self._remove_blob(relative)
            raise
        if size <= INLINE_MAX and not as_file and not small_bytes:
            # A small file or stream: keep it inline after all, like small bytes.
            small = path.read_bytes()
            self._remove_blob(relative)
            return small, None, size
        return None, relative, size

    def _remove_blob(self, relative: str) -> None:
        """Remove a blob and the named link ``path()`` may have made for it."""
        with contextlib.suppress(FileNotFoundError):
            (self.blobs / relative).unlink()
        named = self.named / relative.rsplit("/", 1)[-1]
        if named.exists():
            shutil.rmtree(named, ignore_errors=True)

    # -- reads ------------------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        """The row for ``key`` (a deletion included), or None."""
        self._settle()
        row = (
            self._conn().execute(f"SELECT {_COLUMNS} FROM objects WHERE key = ?", (key,)).fetchone()
        )
        return _entry(row) if row else None

    def lookup(
        self, key: str
    ) -> tuple[bytes | None, str | None, float | None, float | None, float] | None:
        """(inline bytes, blob file, dirty_since, validated, accessed) of an object held
        under exactly ``key``, or None (not here, or a deletion). The get fast path: one
        narrow query, nothing built, and a key read lately is answered from memory while
        the index is unchanged (see :mod:`cargohold._hot_rows`)."""
        if self._overlay:  # logged writes of this tier, not yet applied
            if self._solo and not self._log.joined():
                logged = self._overlay.get(key)
                if logged is not None:
                    return logged.row
            else:
                # Another tier may have written since: the index, once this tier's log is
                # in it (waiting for a drain under way), is the truth.
                self._leave_solo()
        elif self._must_watch():
            self._settle()
        generation = self._hot.generation()
        if generation is None:
            return self._conn().execute(_LOOKUP, (key,)).fetchone()  # type: ignore[no-any-return]
        row = self._hot.get(key)
        if row is None:
            row = self._conn().execute(_LOOKUP, (key,)).fetchone()
            if row is not None:
                self._hot.put(key, generation, row)
        return row  # type: ignore[no-any-return]

    def change_stamp(self) -> bytes | None:
        """Bytes that change whenever anything commits to the index (any thread or
        process), or None when that cannot be known. Files are removed only by
        :meth:`collect_garbage`, which commits after each small chunk of removals, and by
        :meth:`remove_orphans`, which commits after its pass: so a file seen present under
        one stamp is there while the stamp is unchanged, but for the moment between a
        removal and the commit after it (or a removal by hand, behind cargohold's back).
        A logged write moves it too (the log's end is part of it while any is not applied;
        applying commits). Called on every cached fetch: 0.1 µs, kept so."""
        if not self._log.owner and self._must_watch():
            self._settle()
        header = self._hot.header()
        if header is None or not self._overlay:
            return header
        return header + self._log.end.to_bytes(8, "little")

    def read_blob(self, file: str) -> bytes | None:
        """A blob's bytes, or None if it was replaced meanwhile."""
        try:
            return read_whole(f"{self._blob_prefix}{file}")
        except FileNotFoundError:
            return None

    def estimate(self) -> Totals:
        """Totals, cheaply: as last read from the index (by the syncer after each batch,
        or here once that is over a second old), with this process's own writes since
        added in. Exact enough for soft bounds; use ``totals()`` to decide."""
        if time.monotonic() - self._estimated_at > _ESTIMATE_STALE:
            self.refresh_estimate()
        return self._estimate

    def refresh_estimate(self) -> None:
        """Read the estimate's totals from the index now (the syncer calls this after each
        batch, so that a put seldom has to: a query there is a put's slowest step)."""
        # The index's totals plus what is still in the log, without applying it: a put that
        # refreshes the estimate must not wait for a batch to be applied. The log's counts
        # first: a drain between the two reads then counts twice (errs high), never not at all.
        logged, count = self._log_bytes, len(self._overlay)
        try:
            held = self._index_totals()
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, "read the local tier's totals") from exc
        self._set_estimate(
            Totals(
                held.local_bytes + logged,
                held.pending_bytes + logged,
                held.pending_count + count,
                held.oldest_pending,
            )
        )

    def _set_estimate(self, totals: Totals) -> None:
        with self._estimate_lock:
            self._estimate = totals
            self._estimated_at = time.monotonic()

    def data(self, entry: Entry) -> bytes | None:
        """The bytes of ``entry``, or None if its file was replaced meanwhile (read the row
        again)."""
        if entry.inline is not None:
            self.touch(entry.key, entry.accessed)
            return entry.inline
        try:
            data = read_whole(f"{self._blob_prefix}{entry.file}")
        except FileNotFoundError:
            return None
        self.touch(entry.key, entry.accessed)
        return data

    def open_entry(self, entry: Entry) -> BinaryIO | None:
        """An open binary file of ``entry``'s bytes (valid even if the key changes), or
        None if its file was replaced meanwhile."""
        if entry.inline is not None:
            self.touch(entry.key, entry.accessed)
            return io.BytesIO(entry.inline)
        try:
            fh = (self.blobs / str(entry.file)).open("rb")
        except FileNotFoundError:
            return None
        self.touch(entry.key, entry.accessed)
        return fh

    def path(self, key: str) -> Path | None:
        """A file holding the key's bytes, named like the key's last segment.

        An inline object is moved into a file first. The file stays until the key is
        written again, deleted or evicted.
        """
        for _ in range(5):
            entry = self.entry(key)
            if entry is None or entry.deleted:
                return None
            if entry.file is not None:
                named = self._named_link(key, entry.file)
                if named is not None:
                    self.touch(key)
                    return named
                continue
            _, file, _ = self._store_bytes(key, entry.inline or b"", as_file=True)
            assert file is not None
            conn = self._conn()
            with self._writing(conn, {key: None}):
                cursor = conn.execute(
                    "UPDATE objects SET inline = NULL, file = ? WHERE key = ? AND version = ?",
                    (file, key, entry.version),
                )
            if cursor.rowcount == 1:
                named = self._named_link(key, file)
                if named is not None:
                    self.touch(key)
                    return named
                continue
            self._remove_blob(file)
        return None

    def _named_link(self, key: str, file: str) -> Path | None:
        """``named/<id>/<last segment of key>``, a hard link to the blob (made once), or
        None if the blob is gone (read the row again)."""
        link = self.named / file.rsplit("/", 1)[-1] / key.rsplit("/", 1)[-1]
        if link.exists():
            return link
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.blobs / file, link)
        except FileExistsError:
            pass  # another thread linked it first
        except FileNotFoundError:
            return None
        return link

    def blob_path(self, entry: Entry) -> Path | None:
        return self.blobs / entry.file if entry.file else None

    def touch(self, key: str, last: float | None = None) -> None:
        """Note an access for LRU eviction (unless ``last``, the recorded access, is recent
        enough); written in batches, not on every read."""
        now = time.time()
        if last is not None and now - last < self.access_granularity:
            return
        self._touched[key] = now
        if len(self._touched) >= 1000:
            self.flush_access_times()

    def flush_access_times(self) -> None:
        touched, self._touched = self._touched, {}
        updates = [(when, key) for key, when in list(touched.items())]
        if updates:
            conn = self._conn()
            with self._transaction(conn, {key: None for _, key in updates}):
                conn.executemany(
                    "UPDATE objects SET accessed = max(accessed, ?) WHERE key = ?", updates
                )

    def entries(self, prefix: str, *, pending_only: bool = False) -> Iterator[Entry]:
        """Rows whose key starts with ``prefix`` (deletions included), in key order.

        Read a page at a time, with no statement left open between pages: an open read
        would hold this thread's connection on an old snapshot, and a lookup from the
        same thread meanwhile would read (and share through the hot-row table) rows
        older than the last commit."""
        self._settle()
        conditions, params = ["key >= ?"], [prefix]
        if prefix:
            conditions.append("key < ?")
            params.append(prefix + "\U0010ffff")
        if pending_only:
            conditions.append("dirty_since IS NOT NULL")
        conn = self._conn()
        after: list[str] = []  # the last key read, once a page has been read
        while True:
            where = " AND ".join(conditions + ["key > ?"] * len(after))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM objects WHERE {where} ORDER BY key LIMIT ?",
                (*params, *after, _ENTRIES_PAGE),
            ).fetchall()
            for row in rows:
                if row[0].startswith(prefix):
                    yield _entry(row)
            if len(rows) < _ENTRIES_PAGE:
                return
            after = [rows[-1][0]]

    def totals(self) -> Totals:
        """Exact totals, logged writes included (and the estimate from now on)."""
        self._settle()
        totals = self._index_totals()
        if not self._overlay:  # nothing logged meanwhile: exact for the estimate too
            self._set_estimate(totals)
        return totals

    def _index_totals(self) -> Totals:
        conn = self._conn()
        local_bytes, pending_bytes, pending_count = conn.execute(
            "SELECT local_bytes, pending_bytes, pending_count FROM totals"
        ).fetchone()
        oldest = conn.execute(
            "SELECT min(dirty_since) FROM objects WHERE dirty_since IS NOT NULL"
        ).fetchone()[0]
        return Totals(local_bytes, pending_bytes, pending_count, oldest)

    # -- the journal, for the syncer --------------------------------------------------

    def pending(
        self,
        limit: int,
        *,
        exclude: frozenset[str] = frozenset(),
        newer_than: float | None = None,
    ) -> list[Pending]:
        """The oldest unsynced changes, at most ``limit``, skipping keys in ``exclude``
        and, with ``newer_than``, changes pending since before that time."""
        self._settle()
        sql = f"SELECT {_COLUMNS} FROM objects WHERE dirty_since IS NOT NULL"
        params: list[Any] = []
        if newer_than is not None:
            sql += " AND dirty_since >= ?"
            params.append(newer_than)
        rows = (
            self._conn()
            .execute(sql + " ORDER BY dirty_since LIMIT ?", (*params, limit + len(exclude)))
            .fetchall()
        )
        out = []
        for row in rows:
            entry = _entry(row)
            if entry.key in exclude:
                continue
            out.append(Pending(entry, self.blobs / entry.file if entry.file else None))
        return out[:limit]

    def info_value(self, name: str) -> str | None:
        row = self._conn().execute("SELECT value FROM info WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_info(self, name: str, value: str) -> None:
        conn = self._conn()
        with self._transaction(conn, {}):
            conn.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (name, value))

    def note_catalog_backlog(self, keys: Iterable[str]) -> None:
        """Remember keys whose sync the shared catalog did not hear of (it was down)."""
        conn = self._conn()
        with self._transaction(conn, {}):
            conn.executemany(
                "INSERT OR IGNORE INTO catalog_backlog VALUES (?)", [(k,) for k in keys]
            )

    def catalog_backlog(self, limit: int) -> list[str]:
        rows = self._conn().execute("SELECT key FROM catalog_backlog LIMIT ?", (limit,))
        return [row[0] for row in rows]

    def clear_catalog_backlog(self, keys: Iterable[str]) -> None:
        conn = self._conn()
        with self._transaction(conn, {}):
            conn.executemany("DELETE FROM catalog_backlog WHERE key = ?", [(k,) for k in keys])

    def pending_keys(
        self, *, before: float, keys: set[str] | None = None, limit: int = 1
    ) -> list[tuple[str, int]]:
        """(key, version) of changes made at or before ``before`` that have not reached
        the remote (only of ``keys``, if given), oldest first, at most ``limit``."""
        self._settle()
        conn = self._conn()
        sql = "SELECT key, version FROM objects WHERE dirty_since IS NOT NULL AND dirty_since <= ?"
        if keys is None:
            rows = conn.execute(sql + " ORDER BY dirty_since LIMIT ?", (before, limit))
            return [(row[0], row[1]) for row in rows]
        found = []
        for key in keys:
            row = conn.execute(sql + " AND key = ?", (before, key)).fetchone()
            if row:
                found.append((row[0], row[1]))
        return found[:limit]

    def mark_synced(self, done: list[tuple[Entry, ObjectInfo | None]]) -> None:
        """Record what reached the remote: a put (with its info) or a deletion (None).

        A row changed since it was taken keeps its pending state, but its loss window
        moves past the write that did reach the remote. Recorded in transactions of 32
        rows, so a write waiting for the lock waits for one short transaction, not a batch.
        """
        now = time.time()
        conn = self._conn()
        for start in range(0, len(done), 32):
            chunk = {entry.key: None for entry, _ in done[start : start + 32]}
            with self._transaction(conn, chunk):
                for entry, info in done[start : start + 32]:
                    if info is None:
                        cursor = conn.execute(
                            "DELETE FROM objects WHERE key = ? AND version = ? AND deleted = 1",
                            (entry.key, entry.version),
                        )
                    else:
                        cursor = conn.execute(
                            "UPDATE objects SET dirty_since = NULL, etag = ?, validated = ? "
                            "WHERE key = ? AND version = ?",
                            (info.etag, now, entry.key, entry.version),
                        )
                    if cursor.rowcount == 0:
                        # Written again meanwhile: the loss window now starts after the
                        # write that landed.
                        conn.execute(
                            "UPDATE objects SET dirty_since = max(dirty_since, ?) "
                            "WHERE key = ? AND dirty_since IS NOT NULL",
                            (_after(entry.modified), entry.key),
                        )
            time.sleep(0)  # let a waiting writer have the lock

    def set_validated(self, key: str, version: int, etag: str) -> None:
        self._settle()
        with self._write_lock:  # may write the values the row holds: no carry (see _writing)
            self._conn().execute(
                "UPDATE objects SET validated = ?, etag = ? WHERE key = ? AND version = ? "
                "AND dirty_since IS NULL",
                (time.time(), etag, key, version),
            )

    def expire_validations(self) -> int:
        """Make every clean copy ask the remote again (a HEAD) before it is next served
        with a finite ``max_age``: for when change notices may have been missed."""
        self._settle()
        with self._write_lock:
            cursor = self._conn().execute(
                "UPDATE objects SET validated = NULL "
                "WHERE dirty_since IS NULL AND validated IS NOT NULL"
            )
        return cursor.rowcount

    def forget(self, key: str, version: int) -> bool:
        """Drop a clean copy (the remote no longer has it). False if the row changed."""
        conn = self._conn()
        with self._writing(conn, {key: None}):
            cursor = conn.execute(
                "DELETE FROM objects WHERE key = ? AND version = ? AND dirty_since IS NULL",
                (key, version),
            )
        return cursor.rowcount == 1

    def evict(self, max_bytes: int) -> int:
        """Drop least recently used synced objects until at most ``max_bytes`` are held.

        Never drops a pending change. Returns the bytes freed from the index; the files
        go when the syncer next collects garbage (only it removes files, so none vanishes
        under an upload).
        """
        self.flush_access_times()
        self._settle()  # the totals below must count logged writes
        conn = self._conn()
        freed = 0
        while True:
            local_bytes = conn.execute("SELECT local_bytes FROM totals").fetchone()[0]
            if local_bytes <= max_bytes:
                break
            victims = conn.execute(
                "SELECT key, version, size FROM objects WHERE dirty_since IS NULL "
                "ORDER BY accessed LIMIT 256"
            ).fetchall()
            if not victims:
                break  # everything left is pending: back-pressure holds the rest
            with self._transaction(conn, {key: None for key, _, _ in victims}):
                for key, version, size in victims:
                    cursor = conn.execute(
                        "DELETE FROM objects WHERE key = ? AND version = ? AND dirty_since IS NULL",
                        (key, version),
                    )
                    freed += size * cursor.rowcount
                    if local_bytes - freed <= max_bytes:
                        break
        self._estimated_at = -math.inf  # the estimate knows nothing of this
        return freed

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (the syncer calls this between batches)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def collect_garbage(self) -> int:
        """Remove files of replaced and removed objects. Returns how many were removed."""
        conn = self._conn()
        rows = conn.execute("SELECT rowid, file FROM garbage LIMIT 10000").fetchall()
        # A commit after every few removals: readers that trust an unchanged index to
        # mean "no file went" (see change_stamp) are wrong for one chunk at most.
        for start in range(0, len(rows), _GARBAGE_CHUNK):
            chunk = rows[start : start + _GARBAGE_CHUNK]
            for _, file in chunk:
                self._remove_blob(file)
            with self._transaction(conn, {}):  # no object's row changes
                conn.executemany("DELETE FROM garbage WHERE rowid = ?", [(r[0],) for r in chunk])
        return len(rows)

    def remove_orphans(self, older_than: float = 3600.0) -> int:
        """Remove blob files and named links no row refers to (left by a crash before
        their row was written or after it was replaced), once older than ``older_than``
        seconds, and stale temp files. Safe while other threads and processes write."""
        self._settle()  # a blob named only by a logged write is referenced too
        conn = self._conn()
        referenced = {
            row[0] for row in conn.execute("SELECT file FROM objects WHERE file IS NOT NULL")
        }
        cutoff = time.time() - older_than
        removed = 0
        for shard in self.blobs.iterdir() if self.blobs.exists() else ():
            for file in shard.iterdir():
                relative = f"{shard.name}/{file.name}"
                with contextlib.suppress(FileNotFoundError):
                    if relative not in referenced and file.stat().st_mtime < cutoff:
                        self._remove_blob(relative)
                        removed += 1
        # A named link made after the query above belongs to a blob the query did not see:
        # only links older than the cutoff can be leftovers.
        ids = {file.rsplit("/", 1)[-1] for file in referenced}
        links_removed = False
        for named in self.named.iterdir() if self.named.exists() else ():
            with contextlib.suppress(FileNotFoundError):
                if named.name not in ids and named.stat().st_mtime < cutoff:
                    shutil.rmtree(named, ignore_errors=True)
                    links_removed = True
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
        if removed or links_removed:
            # A commit, so that change_stamp() moves: files went.
            self.set_info("orphans_removed_at", repr(time.time()))
        return removed


#: Every open tier, so a child process after fork() can stop appending to its parent's log.
_TIERS: weakref.WeakSet[LocalTier] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for tier in list(_TIERS):
        tier._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _log_params(record: LogRecord) -> dict[str, Any]:
    """A logged record as the parameters of ``_UPSERT_LOGGED``."""
    return {
        "key": record.key,
        "size": record.size,
        "version": record.version,
        "inline": record.inline,
        "file": record.file,
        "metadata": record.metadata,
        "content_type": record.content_type,
        "now": record.now,
        "deleted": int(record.deleted),
    }


def _chunks(
    data: bytes | memoryview | Path | BinaryIO, size: int = 1024 * 1024
) -> Iterator[bytes | memoryview]:
    if isinstance(data, bytes | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), size):
            yield view[start : start + size]
        return
    if isinstance(data, Path):
        with data.open("rb") as fh:
            while chunk := fh.read(size):
                yield chunk
        return
    while chunk := data.read(size):
        yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _after(moment: float) -> float:
    return math.nextafter(moment, math.inf)


def _statements(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    return statements


def _sqlite_error(exc: sqlite3.Error, doing: str) -> CargoholdError:
    text = str(exc).lower()
    if "full" in text:
        return StorageFull(
            f"cannot {doing}: the disk is full", hint="free space or use a larger volume"
        )
    if "readonly" in text or "read-only" in text:
        return PermissionDenied(
            f"cannot {doing}: the index is read-only", hint="use a writable data directory"
        )
    return CargoholdError(f"cannot {doing}: {exc}")
