"""The local tier: objects on this machine's disk, indexed in SQLite, with the journal.

Written here rather than borrowed (diskcache comes closest) because the journal has to live
in the same transaction as the write, and the syncer, the eviction rules and the loss
window all read the same rows.

Pieces, each owning one thing:

- :mod:`cargohold._index`: the SQLite index (schema, a connection per thread, write
  transactions, fork), ``index.sqlite3`` in WAL mode.
- :mod:`cargohold._blobs`: blob files, their named links, temp files, garbage.
- :mod:`cargohold._hot_rows`: rows read lately, answered from memory until anything commits.
- :mod:`cargohold._putlog_recovery`: applies what the former put log left, once, at open.
- :class:`LocalTier`, here: the states of a key and the operations that move it between
  them, the journal operations the syncer uses, and the reads.

States of a key (a row of ``objects``, or none) and what moves it::

           read-through, hydrate, write-through (commit_clean)
        +-------------------------------------------------------+
        |                                                       v
      absent --put--> dirty --synced (same version)--> clean --evicted, forgotten--> absent
        ^              | ^  ^                            |
        |       delete | |  +---------- put -------------+
        |              v | put
        +--synced---- tombstone  <------ delete (from absent, dirty or clean)
         (removed)

    state       put     delete      synced         commit_clean     evict / forget
    absent      dirty   tombstone   -              clean            -
    dirty       dirty   tombstone   clean (*)      (unchanged)      (unchanged)
    tombstone   dirty   tombstone   absent (*)     (unchanged)      (unchanged)
    clean       dirty   tombstone   -              clean            absent

    (*) only if the row still has the version that was uploaded; otherwise it stays dirty
        and its loss window starts after the write that landed.

- **absent**: no row. A key evicted or forgotten is absent again (the remote has it).
- **dirty** (``dirty_since`` set, ``deleted`` 0): a local write the remote does not have.
  Its row *is* the journal entry. Written again before it is synced, it keeps one row
  (only the latest bytes upload) and its ``dirty_since``.
- **tombstone** (``dirty_since`` set, ``deleted`` 1): a deletion the remote does not have;
  the key reads as missing at once. Its ``etag`` is the remote's etag of the clean copy it
  replaced (None if it replaced none): the version the deletion was decided on, which the
  syncer names in a conditional delete.
- **clean** (``dirty_since`` NULL, ``etag`` the remote's): a copy of what the remote holds,
  made by the syncer's upload (dirty -> clean), a read-through, hydrate or a write-through.
  A synced tombstone is **removed** (absent).

Rules the statements enforce: a copy of the remote (``clean``) never replaces a dirty row or
a tombstone; ``mark_synced`` changes only the version that was uploaded (a row written again
meanwhile stays dirty, its loss window moved past the write that landed); eviction and
``forget`` drop only clean rows. Which statement a write runs is decided in one place,
:data:`_WRITES` (used by :meth:`LocalTier._write`).

Guarantees:

- A write is one SQLite statement, or one transaction: data and journal entry commit
  together. A process killed at any moment (SIGKILL) loses nothing acknowledged and leaves
  nothing half-written: a large object's file is complete before the statement that makes
  it reachable. With ``fsync`` on, files are fsynced and SQLite runs ``synchronous=FULL``,
  which also covers power loss.
- Rows not yet on the remote (``dirty_since`` set) are never evicted.
- Totals (bytes held, bytes and count pending) are kept by triggers, exact across processes.
- Files of replaced or removed objects are queued in ``garbage`` by triggers and removed by
  :meth:`LocalTier.collect_garbage`; a reader that finds its file gone reads the row again.
- A get of a key read lately is answered from memory, but only while nothing has committed
  to the index since (any thread or process): :mod:`cargohold._hot_rows`.
- Locks: reads take none, and never wait (in WAL mode a reader does not wait for a
  writer). A write holds this process's index write lock (``Index.writing``) for one
  statement or one short transaction and waits for nothing else meanwhile but SQLite's
  own lock. So a signal handler may read the tier at any moment. It must not write to the
  tier, nor wait for another thread's write, on the thread it interrupted: the interrupted
  frame may hold the write lock, and inside a statement with ``RETURNING`` or a
  transaction SQLite's write lock too, until the handler returns.
- fork(): a child gets fresh connections and locks and an empty hot-row table, and no
  thread is inside an SQLite call at the fork (the fork gate; see :mod:`cargohold._index`);
  the parent is unaffected.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sqlite3
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ._blobs import INLINE_MAX, Blobs
from ._fork import at_fork
from ._index import Index, sqlite_error
from ._putlog_recovery import recover_putlog
from .errors import CargoholdError, ConfigError
from .keys import RESERVED_PREFIX, InternalKey
from .remotes import ObjectInfo

__all__ = [
    "INLINE_MAX",
    "Entry",
    "LocalTier",
    "Pending",
    "Refusal",
    "Staged",
    "Totals",
    "local_etag",
]

log = logging.getLogger("cargohold.local")

# dirty or tombstone: a new row, or the row replaced. dirty_since keeps the oldest unsynced time.
# A tombstone keeps the etag of the clean copy it replaces (or of the tombstone before it):
# the version this instance saw on the remote, which the syncer's delete names (if_match) so
# that it cannot remove a newer write of another instance. Over a dirty row it has none: that
# row's put may have landed unanswered, and a delete naming the older etag would spare it.
_UPSERT_DIRTY = """
INSERT INTO objects (key, version, size, inline, file, metadata, content_type,
                     etag, modified, validated, accessed, dirty_since, deleted)
VALUES (:key, 1, :size, :inline, :file, :metadata, :content_type,
        NULL, :now, NULL, :now, :now, :deleted)
ON CONFLICT (key) DO UPDATE SET
    version = version + 1, size = excluded.size, inline = excluded.inline,
    file = excluded.file, metadata = excluded.metadata,
    content_type = excluded.content_type,
    etag = IIF(excluded.deleted = 1 AND (objects.dirty_since IS NULL OR objects.deleted = 1),
               objects.etag, NULL),
    modified = excluded.modified, validated = NULL, accessed = excluded.accessed,
    dirty_since = coalesce(dirty_since, excluded.dirty_since), deleted = excluded.deleted
RETURNING version, dirty_since, etag
"""

# clean: a copy of what the remote holds (read-through, hydrate, write-through). It never
# replaces a dirty row or a tombstone. Its time is the remote's (:modified), so a copy says
# what a HEAD of the remote said before it was downloaded.
_UPSERT_CLEAN = """
INSERT INTO objects (key, version, size, inline, file, metadata, content_type,
                     etag, modified, validated, accessed, dirty_since, deleted)
VALUES (:key, 1, :size, :inline, :file, :metadata, :content_type,
        :etag, :modified, :now, :now, NULL, 0)
ON CONFLICT (key) DO UPDATE SET
    version = version + 1, size = excluded.size, inline = excluded.inline,
    file = excluded.file, metadata = excluded.metadata,
    content_type = excluded.content_type, etag = excluded.etag, modified = excluded.modified,
    validated = excluded.validated, accessed = excluded.accessed, deleted = 0
WHERE objects.dirty_since IS NULL {extra}
RETURNING version, dirty_since, etag
"""

#: The one place that decides which statement a write runs (see the module docstring).
_WriteKind = Literal["dirty", "tombstone", "clean", "clean_if_version"]
_WRITES: dict[str, str] = {
    "dirty": _UPSERT_DIRTY,
    "tombstone": _UPSERT_DIRTY,
    "clean": _UPSERT_CLEAN.format(extra=""),
    "clean_if_version": _UPSERT_CLEAN.format(extra="AND objects.version = :only_version"),
}

_LOOKUP = (
    "SELECT inline, file, dirty_since, validated, accessed FROM objects "
    "WHERE key = ? AND deleted = 0"
)
#: Seconds within which a second read of a key is not recorded for LRU eviction: recording
#: every read would cost a write for each one.
ACCESS_GRANULARITY = 60.0
_ENTRIES_PAGE = 1000  # rows LocalTier.entries reads per query
_ESTIMATE_STALE = 1.0  # seconds after which estimate() reads the index itself

_COLUMNS = (
    "key, version, size, inline, file, metadata, content_type, etag, "
    "modified, validated, accessed, dirty_since, deleted"
)
_OBJECT_COLUMNS = ", ".join(f"objects.{name.strip()}" for name in _COLUMNS.split(","))


@dataclass(frozen=True, slots=True)
class Refusal:
    """A change the remote refused for good: set aside until rewritten, retried or dropped."""

    key: str
    version: int
    kind: str  #: the error's class name in cargohold.errors
    reason: str
    at: float  #: when it was refused (seconds since the epoch)


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
    processes sharing the directory, and across fork(). See the module docstring for the
    states of a key and the guarantees."""

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.access_granularity = ACCESS_GRANULARITY
        self._files = Blobs(self.root, fsync=fsync)
        self.blobs, self.named, self.tmp = self._files.dir, self._files.named, self._files.tmp
        self._touched: dict[str, float] = {}
        self._estimate = Totals(0, 0, 0, None)
        self._estimated_at = -math.inf
        self._closed = False
        self._index = Index(self.root / "index.sqlite3", fsync=fsync)
        self._hot = self._index.hot
        try:
            with self._index.writing() as conn:
                recover_putlog(conn, self.root)
        except BaseException:
            self._index.close()
            raise
        _TIERS.add(self)

    def close(self) -> None:
        """Write pending access times and close every connection. Safe to call twice."""
        if self._closed:
            return
        with contextlib.suppress(CargoholdError, sqlite3.Error):
            self.flush_access_times()
        self._closed = True
        self._index.close()

    def _forked(self) -> None:
        """In a child after fork() (see ``_after_fork_in_child``)."""
        self._index.after_fork_in_child()
        self._touched = {}  # the parent records its own readers' accesses
        self._estimated_at = -math.inf

    def bind_remote(self, url: str) -> None:
        """Tie this tier to one remote. Its copies belong to that remote: opened with
        another, the copies are dropped, unless writes for the first one are still pending
        (then ConfigError, as they would go to the wrong place)."""
        with self._index.transaction() as conn:
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

    # -- writes: staging, then one statement that moves the key to its next state ----------

    def stage(
        self, key: str, data: bytes | memoryview | Path | BinaryIO, *, take: bool = False
    ) -> Staged:
        """Make the bytes ready (inline, or a complete blob file) without making them
        reachable: ``commit``, ``commit_clean`` or ``discard`` it next. With ``take``
        (``data`` a Path the caller removes once committed) a large file is linked in,
        not copied (see ``Blobs.take``)."""
        if take and isinstance(data, Path):
            inline, file, size = self._files.take(key, data)
            return Staged(key, inline, file, size)
        inline, file, size = self._files.store(key, data)
        return Staged(key, inline, file, size)

    def stage_file(self, key: str, source: Path) -> Staged:
        """Stage a complete file from this tier's ``tmp/``, moving (not copying) it."""
        inline, file, size = self._files.adopt(source)
        return Staged(key, inline, file, size)

    def staged_data(self, staged: Staged) -> bytes | memoryview | Path:
        """The staged bytes, to upload."""
        return staged.inline if staged.inline is not None else self.blobs / str(staged.file)

    def discard(self, staged: Staged) -> None:
        if staged.file is not None:
            self._files.remove(staged.file)

    def commit(self, staged: Staged, *, metadata: Mapping[str, str], content_type: str) -> Entry:
        """Make staged bytes the key's local change to sync (state dirty); safe from a
        crash on return."""
        entry = self._write("dirty", staged, metadata, content_type)
        assert entry is not None  # a dirty upsert always writes its row
        self._note_added(staged.size, pending=True)
        return entry

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
        """Record a deletion to sync (state tombstone): the key reads as missing at once."""
        staged = Staged(key, None, None, 0)
        entry = self._write("tombstone", staged, {}, "application/octet-stream")
        assert entry is not None
        return entry

    def commit_clean(
        self, staged: Staged, info: ObjectInfo, *, only_version: int | None = None
    ) -> Entry | None:
        """Make staged bytes the key's copy of what the remote holds (``info``; state clean).

        Never replaces a local change that has not been synced, nor (with ``only_version``)
        a row that changed since it was read: then it stores nothing, discards the staged
        bytes and returns None.
        """
        entry = self._write(
            "clean" if only_version is None else "clean_if_version",
            staged,
            info.metadata or {},
            info.content_type or "application/octet-stream",
            etag=info.etag,
            only_version=only_version,
            modified=info.last_modified.timestamp(),
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
        stored: list[Staged] = []
        with self._index.transaction({staged.key: None for staged, _ in pairs}) as conn:
            for staged, info in pairs:
                rows = conn.execute(
                    _WRITES["clean"],
                    {
                        "key": staged.key,
                        "size": staged.size,
                        "inline": staged.inline,
                        "file": staged.file,
                        "metadata": _json(info.metadata),
                        "content_type": info.content_type or "application/octet-stream",
                        "etag": info.etag,
                        "now": now,
                        "modified": info.last_modified.timestamp(),
                    },
                ).fetchall()
                if rows:
                    stored.append(staged)
        for staged, _ in pairs:
            if staged not in stored:
                self.discard(staged)
        self._note_added(sum(s.size for s in stored), pending=False)
        return stored

    def _write(
        self,
        kind: _WriteKind,
        staged: Staged,
        metadata: Mapping[str, str],
        content_type: str,
        *,
        etag: str | None = None,
        only_version: int | None = None,
        modified: float | None = None,
    ) -> Entry | None:
        """Every single-key write: one statement, chosen by ``kind`` from ``_WRITES``.
        Returns the row written, or None when a clean copy was refused (the row is dirty,
        a tombstone, or changed since ``only_version``). ``modified``: a clean copy's
        time on the remote (a local write's is now)."""
        now = time.time()
        stamp = now if modified is None else modified
        clean = kind in ("clean", "clean_if_version")
        deleted = kind == "tombstone"
        params = {
            "key": staged.key,
            "size": staged.size,
            "inline": staged.inline,
            "file": staged.file,
            "metadata": _json(metadata),
            "content_type": content_type,
            "now": now,
            "modified": stamp,
            "deleted": int(deleted),
            "etag": etag,
            "only_version": only_version,
        }
        inline = bytes(staged.inline) if staged.inline is not None else None
        validated = now if clean else None

        def row_of(rows: list[Any]) -> Any:  # the row as _LOOKUP reads it, None if none
            if rows and not deleted:
                return (inline, staged.file, rows[0][1], validated, now)
            return None

        try:
            rows = self._index.write_one(_WRITES[kind], params, staged.key, row_of)
        except sqlite3.Error as exc:
            self.discard(staged)
            raise sqlite_error(exc, f"write {staged.key!r} to the local tier") from exc
        if not rows:
            return None
        return Entry(
            key=staged.key,
            version=rows[0][0],
            size=staged.size,
            inline=inline,
            file=staged.file,
            metadata=dict(metadata),
            content_type=content_type,
            etag=rows[0][2],  # a clean copy's, a tombstone's kept one (see _UPSERT_DIRTY)
            modified=stamp,
            validated=now if clean else None,
            accessed=now,
            dirty_since=rows[0][1],
            deleted=deleted,
        )

    def _note_added(self, size: int, *, pending: bool) -> None:
        """Keep the estimate (see ``estimate``) up with this process's own writes. No lock:
        two threads adding at once may lose one addition, which the next refresh restores
        (the estimate is for soft bounds), and a signal handler can never wait here."""
        was = self._estimate  # built directly: dataclasses.replace costs 2 µs a put
        self._estimate = Totals(
            was.local_bytes + size,
            was.pending_bytes + (size if pending else 0),
            was.pending_count + pending,  # a rewrite of a pending key counts twice: errs high
            was.oldest_pending,
        )

    # -- reads ------------------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        """The row for ``key`` (a tombstone included), or None."""
        row = self._index.one(f"SELECT {_COLUMNS} FROM objects WHERE key = ?", (key,))
        return _entry(row) if row else None

    def lookup(
        self, key: str
    ) -> tuple[bytes | None, str | None, float | None, float | None, float] | None:
        """(inline bytes, blob file, dirty_since, validated, accessed) of an object held
        under exactly ``key``, or None (not here, or a tombstone). The get fast path: one
        narrow query, nothing built, and a key read lately is answered from memory while
        the index is unchanged (see :mod:`cargohold._hot_rows`)."""
        hot = self._hot
        generation = hot.generation()
        if generation is None:
            return self._index.one(_LOOKUP, (key,))  # type: ignore[no-any-return]
        row = hot.get(key)
        if row is None:
            row = self._index.one(_LOOKUP, (key,))
            if row is not None:
                hot.put(key, generation, row)
        return row  # type: ignore[no-any-return]

    def change_stamp(self) -> bytes | None:
        """Bytes that change whenever anything commits to the index (any thread or
        process), or None when that cannot be known. Files are removed only by
        :meth:`collect_garbage`, which commits after each small chunk of removals, and by
        :meth:`remove_orphans`, which commits after its pass: so a file seen present under
        one stamp is there while the stamp is unchanged, but for the moment between a
        removal and the commit after it (or a removal by hand, behind cargohold's back).
        Called on every cached fetch: 0.1 µs, kept so."""
        return self._hot.header()

    def read_blob(self, file: str) -> bytes | None:
        """A blob's bytes, or None if it was replaced meanwhile."""
        return self._files.read(file)

    def data(self, entry: Entry) -> bytes | None:
        """The bytes of ``entry``, or None if its file was replaced meanwhile (read the row
        again)."""
        if entry.inline is not None:
            self.touch(entry.key, entry.accessed)
            return entry.inline
        data = self._files.read(str(entry.file))
        if data is not None:
            self.touch(entry.key, entry.accessed)
        return data

    def open_entry(self, entry: Entry) -> BinaryIO | None:
        """An open binary file of ``entry``'s bytes (valid even if the key changes), or
        None if its file was replaced meanwhile."""
        if entry.inline is not None:
            self.touch(entry.key, entry.accessed)
            return io.BytesIO(entry.inline)
        fh = self._files.open(str(entry.file))
        if fh is not None:
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
                named = self._files.named_link(key, entry.file)
                if named is not None:
                    self.touch(key)
                    return named
                continue
            _, file, _ = self._files.store(key, entry.inline or b"", as_file=True)
            assert file is not None
            with self._index.writing({key: None}) as conn:  # the state does not change
                # .rowcount at once: the cursor goes inside the gate section (see _index)
                changed = conn.execute(
                    "UPDATE objects SET inline = NULL, file = ? WHERE key = ? AND version = ?",
                    (file, key, entry.version),
                ).rowcount
            if changed == 1:
                named = self._files.named_link(key, file)
                if named is not None:
                    self.touch(key)
                    return named
                continue
            self._files.remove(file)
        return None

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
            with self._index.transaction({key: None for _, key in updates}) as conn:
                conn.executemany(
                    "UPDATE objects SET accessed = max(accessed, ?) WHERE key = ?", updates
                )

    def entries(self, prefix: str, *, pending_only: bool = False) -> Iterator[Entry]:
        """Rows whose key starts with ``prefix`` (tombstones included), in key order.

        Read a page at a time, with no statement left open between pages: an open read
        would hold this thread's connection on an old snapshot, and a lookup from the
        same thread meanwhile would read (and share through the hot-row table) rows
        older than the last commit."""
        conditions, params = ["key >= ?"], [prefix]
        if prefix:
            conditions.append("key < ?")
            params.append(prefix + "\U0010ffff")
        if pending_only:
            conditions.append("dirty_since IS NOT NULL")
        after: list[str] = []  # the last key read, once a page has been read
        while True:
            where = " AND ".join(conditions + ["key > ?"] * len(after))
            rows = self._index.all(
                f"SELECT {_COLUMNS} FROM objects WHERE {where} ORDER BY key LIMIT ?",
                (*params, *after, _ENTRIES_PAGE),
            )
            for row in rows:
                if row[0].startswith(prefix):
                    yield _entry(row)
            if len(rows) < _ENTRIES_PAGE:
                return
            after = [rows[-1][0]]

    def totals(self) -> Totals:
        """Exact totals (and the estimate from now on)."""
        totals = self._index_totals()
        self._set_estimate(totals)
        return totals

    def _index_totals(self) -> Totals:
        local_bytes, pending_bytes, pending_count = self._index.one(
            "SELECT local_bytes, pending_bytes, pending_count FROM totals"
        )
        # The loss window leaves out changes set aside as refused: no wait ends it, and
        # status().refused shows them with their reason.
        oldest = self._index.one(
            "SELECT min(dirty_since) FROM objects o WHERE dirty_since IS NOT NULL AND NOT "
            "EXISTS (SELECT 1 FROM refused r WHERE r.key = o.key AND r.version = o.version)"
        )[0]
        return Totals(local_bytes, pending_bytes, pending_count, oldest)

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
        try:
            self._set_estimate(self._index_totals())
        except sqlite3.Error as exc:
            raise sqlite_error(exc, "read the local tier's totals") from exc

    def _set_estimate(self, totals: Totals) -> None:
        self._estimate = totals
        self._estimated_at = time.monotonic()

    # -- the journal, for the syncer --------------------------------------------------

    def pending(
        self,
        limit: int,
        *,
        exclude: frozenset[str] = frozenset(),
        newer_than: float | None = None,
    ) -> list[Pending]:
        """The changes to send next, at most ``limit``: first those a caller waits for
        (:meth:`mark_urgent`), then the oldest dirty rows and tombstones; skipping keys in
        ``exclude`` and, with ``newer_than``, changes pending since before that time."""
        where = "objects.dirty_since IS NOT NULL"
        params: list[Any] = []
        if newer_than is not None:
            where += " AND objects.dirty_since >= ?"
            params.append(newer_than)
        wanted = limit + len(exclude)
        # CROSS JOIN: SQLite walks the (small) urgent table and finds each row by key,
        # never the whole backlog.
        urgent = self._index.all(
            f"SELECT {_OBJECT_COLUMNS} FROM urgent CROSS JOIN objects "
            f"ON objects.key = urgent.key WHERE {where} ORDER BY objects.dirty_since LIMIT ?",
            (*params, wanted),
        )
        rows = self._index.all(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE {where} "
            "ORDER BY objects.dirty_since LIMIT ?",
            (*params, wanted + len(urgent)),
        )
        out: list[Pending] = []
        taken: set[str] = set()
        for row in (*urgent, *rows):
            entry = _entry(row)
            if entry.key in exclude or entry.key in taken:
                continue
            taken.add(entry.key)
            out.append(Pending(entry, self.blobs / entry.file if entry.file else None))
        return out[:limit]

    def mark_urgent(self, key: str) -> None:
        """A caller waits for ``key``'s pending change to reach the remote (a durable put,
        a write during a stop): the syncer sends it before older changes, in whichever
        process syncs this data directory, instead of after the whole backlog. Dropped
        once the key has nothing pending (:meth:`mark_synced`)."""
        try:
            with self._index.writing({}) as conn:  # no lookup row changes
                conn.execute("INSERT OR IGNORE INTO urgent(key) VALUES (?)", (key,))
        except sqlite3.Error as exc:
            raise sqlite_error(exc, f"mark {key!r} urgent in the local tier") from exc

    def pending_keys(
        self, *, before: float, keys: set[str] | None = None, limit: int = 1
    ) -> list[tuple[str, int]]:
        """(key, version) of changes made at or before ``before`` that have not reached
        the remote (only of ``keys``, if given), oldest first, at most ``limit``."""
        sql = "SELECT key, version FROM objects WHERE dirty_since IS NOT NULL AND dirty_since <= ?"
        if keys is None:
            rows = self._index.all(sql + " ORDER BY dirty_since LIMIT ?", (before, limit))
            return [(row[0], row[1]) for row in rows]
        found = []
        for key in keys:
            row = self._index.one(sql + " AND key = ?", (before, key))
            if row:
                found.append((row[0], row[1]))
        return found[:limit]

    def mark_synced(self, done: list[tuple[Entry, ObjectInfo | None]]) -> None:
        """Record what reached the remote: a put (with its info; dirty -> clean) or a
        deletion (None; tombstone -> removed).

        A row changed since it was taken keeps its pending state, but its loss window
        moves past the write that did reach the remote. Recorded in transactions of 32
        rows, so a write waiting for the lock waits for one short transaction, not a batch.
        """
        now = time.time()
        for start in range(0, len(done), 32):
            chunk = {entry.key: None for entry, _ in done[start : start + 32]}
            with self._index.transaction(chunk) as conn:
                for entry, info in done[start : start + 32]:
                    # .rowcount at once: the cursor goes inside the gate section (see _index)
                    if info is None:
                        changed = conn.execute(
                            "DELETE FROM objects WHERE key = ? AND version = ? AND deleted = 1",
                            (entry.key, entry.version),
                        ).rowcount
                    else:
                        changed = conn.execute(
                            "UPDATE objects SET dirty_since = NULL, etag = ?, validated = ? "
                            "WHERE key = ? AND version = ?",
                            (info.etag, now, entry.key, entry.version),
                        ).rowcount
                    if changed == 0:
                        # Written again meanwhile: the loss window now starts after the
                        # write that landed.
                        conn.execute(
                            "UPDATE objects SET dirty_since = max(dirty_since, ?) "
                            "WHERE key = ? AND dirty_since IS NOT NULL",
                            (_after(entry.modified), entry.key),
                        )
                    conn.execute(  # nothing left to hurry (a newer change keeps its turn)
                        "DELETE FROM urgent WHERE key = ? AND NOT EXISTS (SELECT 1 FROM "
                        "objects WHERE objects.key = urgent.key AND dirty_since IS NOT NULL)",
                        (entry.key,),
                    )
            time.sleep(0)  # let a waiting writer have the lock

    def set_validated(self, key: str, version: int, etag: str) -> None:
        """A clean row the remote has just confirmed (state unchanged)."""
        # May write the values the row holds: no carry (see Index.writing).
        with self._index.writing() as conn:
            conn.execute(
                "UPDATE objects SET validated = ?, etag = ? WHERE key = ? AND version = ? "
                "AND dirty_since IS NULL",
                (time.time(), etag, key, version),
            )

    def expire_validations(self) -> int:
        """Make every clean copy ask the remote again (a HEAD) before it is next served
        with a finite ``max_age``: for when change notices may have been missed."""
        with self._index.writing() as conn:
            return conn.execute(
                "UPDATE objects SET validated = NULL "
                "WHERE dirty_since IS NULL AND validated IS NOT NULL"
            ).rowcount

    def forget(self, key: str, version: int) -> bool:
        """Drop a clean copy (the remote no longer has it; clean -> absent). False if the
        row changed."""
        with self._index.writing({key: None}) as conn:
            return (
                conn.execute(
                    "DELETE FROM objects WHERE key = ? AND version = ? AND dirty_since IS NULL",
                    (key, version),
                ).rowcount
                == 1
            )

    def evict(self, max_bytes: int) -> int:
        """Drop least recently used clean rows until at most ``max_bytes`` are held.

        Never drops a pending change. Returns the bytes freed from the index; the files
        go when the syncer next collects garbage (only it removes files, so none vanishes
        under an upload).
        """
        self.flush_access_times()
        freed = 0
        while True:
            local_bytes = self._index.one("SELECT local_bytes FROM totals")[0]
            if local_bytes <= max_bytes:
                break
            victims = self._index.all(
                "SELECT key, version, size FROM objects WHERE dirty_since IS NULL "
                "ORDER BY accessed LIMIT 256"
            )
            if not victims:
                break  # everything left is pending: back-pressure holds the rest
            with self._index.transaction({key: None for key, _, _ in victims}) as conn:
                for key, version, size in victims:
                    freed += (
                        size
                        * conn.execute(
                            "DELETE FROM objects WHERE key = ? AND version = ? AND dirty_since IS NULL",
                            (key, version),
                        ).rowcount
                    )
                    if local_bytes - freed <= max_bytes:
                        break
        self._estimated_at = -math.inf  # the estimate knows nothing of this
        return freed

    # -- changes the remote refuses for good ----------------------------------------------

    def refused(self, keys: Iterable[str] | None = None) -> dict[str, Refusal]:
        """Changes set aside as refused (of ``keys``, if given) that are still pending at
        the version refused: a rewrite, a drop or a retry ends a refusal."""
        sql = (
            "SELECT r.key, r.version, r.kind, r.reason, r.at FROM refused r JOIN objects o "
            "ON o.key = r.key AND o.version = r.version WHERE o.dirty_since IS NOT NULL"
        )
        # One query, filtered here: refusals are few, the keys asked about may be many.
        rows = self._index.all(sql + " ORDER BY r.at")
        wanted = None if keys is None else set(keys)
        return {row[0]: Refusal(*row) for row in rows if wanted is None or row[0] in wanted}

    def set_refused(self, refusals: Iterable[tuple[str, int, str, str]]) -> None:
        """Set aside ``(key, version, kind, reason)`` changes; refusals that no longer
        count (the key was written again or deleted since) go."""
        now = time.time()
        with self._index.transaction({}) as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?)",
                [(key, version, kind, reason, now) for key, version, kind, reason in refusals],
            )
            conn.execute(
                "DELETE FROM refused WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE "
                "o.key = refused.key AND o.version = refused.version "
                "AND o.dirty_since IS NOT NULL)"
            )

    def clear_refused(self, keys: Iterable[str] | None = None) -> list[str]:
        """End the refusals of ``keys`` (all, if None) so that they are sent again; the
        keys whose refusal counted."""
        ended = list(self.refused(keys))
        with self._index.transaction({}) as conn:
            if keys is None:
                conn.execute("DELETE FROM refused")
            else:
                conn.executemany("DELETE FROM refused WHERE key = ?", [(k,) for k in keys])
        return ended

    def drop_refused(self, keys: Iterable[str] | None = None) -> list[str]:
        """Discard refused changes (all, if None): the key reads as the remote has it
        again. Only a change still pending at the refused version goes (a rewrite since
        is kept). The keys dropped."""
        refused = self.refused(keys)
        dropped = []
        with self._index.transaction({key: None for key in refused}) as conn:
            for refusal in refused.values():
                if conn.execute(
                    "DELETE FROM objects WHERE key = ? AND version = ? AND dirty_since IS NOT NULL",
                    (refusal.key, refusal.version),
                ).rowcount:
                    dropped.append(refusal.key)
                conn.execute("DELETE FROM refused WHERE key = ?", (refusal.key,))
        return dropped

    # -- bookkeeping --------------------------------------------------------------------

    def info_value(self, name: str) -> str | None:
        row = self._index.one("SELECT value FROM info WHERE name = ?", (name,))
        return None if row is None else str(row[0])

    def set_info(self, name: str, value: str) -> None:
        with self._index.transaction({}) as conn:
            conn.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (name, value))

    def note_catalog_backlog(self, keys: Iterable[str]) -> None:
        """Remember keys whose sync the shared catalog did not hear of (it was down)."""
        with self._index.transaction({}) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO catalog_backlog VALUES (?)", [(k,) for k in keys]
            )

    def catalog_backlog(self, limit: int) -> list[str]:
        rows = self._index.all("SELECT key FROM catalog_backlog LIMIT ?", (limit,))
        return [row[0] for row in rows]

    def clear_catalog_backlog(self, keys: Iterable[str]) -> None:
        with self._index.transaction({}) as conn:
            conn.executemany("DELETE FROM catalog_backlog WHERE key = ?", [(k,) for k in keys])

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (the syncer calls this between batches)."""
        with contextlib.suppress(sqlite3.Error):
            self._index.one("PRAGMA wal_checkpoint(PASSIVE)")

    def collect_garbage(self) -> int:
        """Remove files of replaced and removed objects. Returns how many were removed."""
        return self._files.collect(self._index)

    def remove_orphans(self, older_than: float = 3600.0) -> int:
        """Remove blob files and named links no row refers to (left by a crash before
        their row was written or after it was replaced), once older than ``older_than``
        seconds, and stale temp files, and urgent marks of keys with nothing pending (left
        by a crash). Safe while other threads and processes write."""
        # Upkeep: on an error the next start tries again.
        with contextlib.suppress(sqlite3.Error), self._index.writing({}) as conn:
            conn.execute(
                "DELETE FROM urgent WHERE key NOT IN "
                "(SELECT key FROM objects WHERE dirty_since IS NOT NULL)"
            )
        return self._files.remove_orphans(self._index, older_than)


#: Every open tier, so that a child process after fork() gets fresh connections and locks.
_TIERS: weakref.WeakSet[LocalTier] = weakref.WeakSet()


def _before_fork() -> None:
    """Take every open tier's write lock (see ``Index.before_fork``). No thread can be inside
    SQLite at the fork: the fork gate of :mod:`cargohold._index`, whose hook runs after this
    one, waits for every other thread to be out (the module docstring there says why that
    cannot hang). A thread inside a statement is waited for, however long the OS keeps it
    off the CPU, rather than given a few milliseconds of the GIL and hoped done (issue 14)."""
    for tier in list(_TIERS):
        if not tier._closed:
            tier._index.before_fork()


def _after_fork_in_parent() -> None:
    for tier in list(_TIERS):
        tier._index.after_fork_in_parent()


def _after_fork_in_child() -> None:
    for tier in list(_TIERS):
        tier._forked()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)
at_fork(_after_fork_in_child)


def _json(metadata: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(metadata), separators=(",", ":")) if metadata else None


def _after(moment: float) -> float:
    return math.nextafter(moment, math.inf)
