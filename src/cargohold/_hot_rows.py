"""Rows of the local index read lately, answered from memory until anything commits.

Why: with a million keys in the index, a lookup walks B-tree pages spread over hundreds of
megabytes, which no longer stay in the CPU's caches, and a get costs 1.3x to 1.7x what it
costs with a thousand keys (plain SQLite on the same machine shows the same loss; see
docs/benchmarks.md, "Scale"). Apps read a working set again and again, so keeping those
rows together in a dictionary keeps a get's cost flat whatever the index holds.

Guarantee: a row is answered from memory only if no transaction has committed to the
index since it was read, by any connection, thread or process. How we know: in WAL mode
every commit rewrites the WAL-index header, the first 48 bytes of the ``-shm`` file that
all SQLite connections to the database share through a memory map (its change counter,
frame count and checksums; https://www.sqlite.org/walformat.html, "The WAL-Index
Header"). We map those bytes read-only and compare them on each lookup, 0.1 µs, where
``PRAGMA data_version`` (the SQL way to ask) costs 3 µs here, as much as the lookup it
would save. A row is stored with the table's generation read *before* its query, and a
changed header starts a new generation, so a commit that lands between the check and the
query can only make a row look older than it is, never newer.

The file is opened once per process and never closed (see ``_header_map``): closing a
descriptor would drop SQLite's own POSIX locks on it.

This process's own writes do not empty the table: the writer reads the header before and
after its commit and, when the header's commit counter (``iChange``, incremented by every
commit) moved by exactly one, that one commit was its own, so it tells the table which
rows it changed (``carry``) and the table keeps the rest under the new header. A write by
another process in between moves the counter by two or more and the table is emptied as
before. So a put followed by gets of what was put (the write-back pattern) is answered
from memory too, while any other process's write is still seen by the very next get.

If the header cannot be mapped (no ``-shm`` file: another VFS, or a locking mode that keeps
the index in private memory), nothing is kept and every lookup queries SQLite.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._fork import at_fork

__all__ = ["HotRows"]

#: Rows kept at most, and value bytes kept at most (a row with a larger value is not kept).
MAX_ROWS = 4096
MAX_BYTES = 16 * 1024 * 1024
MAX_VALUE = 64 * 1024
_HEADER = 48  # bytes of one copy of the WAL-index header; a second copy follows it
_CHANGE = slice(8, 12)  # iChange, the header's commit counter (native byte order)


class HotRows:
    """A bounded table of ``key -> row`` for one SQLite database in WAL mode, valid while
    the database is unchanged. Rows are tuples whose first column is the value held in
    memory (bytes or None)."""

    def __init__(
        self, database: Path, *, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES
    ) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._rows: dict[str, tuple[int, Any]] = {}
        self._bytes = 0
        self._generations = itertools.count(1)
        self._generation = next(self._generations)
        # Rows tagged with a generation from _base on are valid: a new header from another
        # process starts a new base (and an empty table), a carried own commit does not.
        self._base = self._generation
        # Inserts and new generations; hits take no lock. Never waited for: its holder may
        # be the frame a signal handler interrupted, on the very thread that runs the
        # handler. Whoever cannot take it at once does without the table (asks SQLite,
        # keeps nothing, or leaves the next generation() to empty it).
        self._lock = threading.Lock()
        self._header = b""
        # Mapped after a connection has put the database in WAL mode (the file exists then).
        self._map: mmap.mmap | None = _header_map(Path(f"{database}-shm"))

    @property
    def enabled(self) -> bool:
        """False when the header could not be mapped (every lookup goes to SQLite)."""
        return self._map is not None

    def header(self) -> bytes | None:
        """The WAL-index header now: bytes that change with every commit, or None when
        they cannot be read."""
        mapped = self._map
        if mapped is None:
            return None
        try:
            return mapped[:_HEADER]
        except ValueError:  # unmapped by close() in another thread
            return None

    def generation(self) -> int | None:
        """The generation rows read now belong to, after emptying the table if anything
        committed since the last look; None when nothing can be kept."""
        header = self.header()
        if header is None:
            return None
        if header != self._header:
            if not self._lock.acquire(blocking=False):  # never waits: see _lock
                return None
            try:
                self._empty()
                self._header = header
            finally:
                self._lock.release()
        return self._generation

    def get(self, key: str) -> Any:
        """The row kept for ``key``, or None."""
        found = self._rows.get(key)
        if found is not None and found[0] >= self._base:
            return found[1]
        return None

    def put(self, key: str, generation: int, row: Any) -> None:
        """Keep ``row``, read in ``generation`` (dropped if a newer one began meanwhile,
        or if its value is over MAX_VALUE)."""
        if not self._lock.acquire(blocking=False):  # never waits: see _lock
            return
        try:
            if generation == self._generation:
                self._keep(key, row)
        finally:
            self._lock.release()

    def snapshot(self) -> bytes | None:
        """The WAL-index header, or None when it cannot be read whole: SQLite writes the
        second copy, then the first, so a read of the first and then the second that
        finds them equal did not catch a commit half-way (SQLite's own readers check
        the same way)."""
        mapped = self._map
        if mapped is None:
            return None
        try:
            first = mapped[:_HEADER]
            second = mapped[_HEADER : 2 * _HEADER]
        except ValueError:  # unmapped by close() in another thread
            return None
        return first if first == second else None

    def carry(self, before: bytes | None, after: bytes | None, changed: Mapping[str, Any]) -> None:
        """After a commit of this process: ``before`` and ``after`` are ``snapshot()``s
        taken around it, ``changed`` maps every key whose row it changed to the row now
        (None: not known, or gone). If that commit is the only one between the two
        snapshots, the table is valid at ``after`` with those rows replaced (if it was
        valid at ``before``; else it holds just those rows). Otherwise nothing happens,
        and the next ``generation()`` finds the new header and empties the table."""
        if before is None or after is None:
            return
        counted = int.from_bytes(before[_CHANGE], sys.byteorder)
        if counted == 0:
            # SQLite's crash recovery rebuilds the header with the counter at 0: a count
            # from 0 could take in a commit the recovery replayed. Start over instead.
            return
        if int.from_bytes(after[_CHANGE], sys.byteorder) != (counted + 1) & 0xFFFFFFFF:
            return  # another process committed too
        if not self._lock.acquire(blocking=False):
            return  # never waits (see _lock): the next generation() empties the table
        try:
            if self._map is None:
                return
            if self._header != before:
                self._empty()  # rows of an older state: only this commit's rows are known
            # A new generation: a lookup that read a row before this commit must not
            # keep it (put() drops rows of an older generation).
            self._generation = next(self._generations)
            self._header = after
            for key, row in changed.items():
                if row is not None:
                    self._keep(key, row)
                elif (previous := self._rows.pop(key, None)) is not None:
                    self._bytes -= _value_size(previous[1])
        finally:
            self._lock.release()

    def after_fork_in_child(self) -> None:
        """In a child after fork(): a fresh lock (another thread of the parent may have
        held this one at the fork, and would hold it forever here) and no rows. The map
        stays: it is shared memory of the same file, as valid in the child as before."""
        self._lock = threading.Lock()
        self._empty()
        self._header = b""

    def close(self) -> None:
        """Forget every row and stop reading the header. Safe to call twice."""
        self._map = None  # first, and without the lock; the map itself stays open (_header_map)
        if self._lock.acquire(blocking=False):  # else header() is None from now on anyway
            try:
                self._empty()
            finally:
                self._lock.release()

    def _empty(self) -> None:
        self._generation = self._base = next(self._generations)
        self._rows = {}
        self._bytes = 0

    def _keep(self, key: str, row: Any) -> None:
        """Store ``row`` under the current generation (the lock is held)."""
        size = _value_size(row)
        previous = self._rows.pop(key, None)
        if previous is not None:
            self._bytes -= _value_size(previous[1])
        if size > MAX_VALUE:
            return
        while self._rows and (
            len(self._rows) >= self.max_rows or self._bytes + size > self.max_bytes
        ):
            oldest = next(iter(self._rows))  # dicts keep insertion order
            self._bytes -= _value_size(self._rows.pop(oldest)[1])
        self._rows[key] = (self._generation, row)
        self._bytes += size


def _value_size(row: Any) -> int:
    value = row[0]
    return len(value) if isinstance(value, bytes) else 0


# The maps of the -shm files this process reads, by (device, inode), with the descriptor
# each was made from. Not closed while SQLite may use the file: closing *any* descriptor of
# a file drops every POSIX lock the process holds on it (fcntl semantics), including the
# shared lock SQLite keeps on the -shm file to say it is in use, and another process
# opening the index would then think it is the first, truncate the -shm file and rebuild
# it under this one's feet. So a file is opened once per process (found again by os.stat,
# which opens nothing) and kept: two descriptors per data directory. When SQLite has
# removed a -shm file (the last connection to the index closed, anywhere) no connection
# uses it any more, and its map is closed the next time that path is mapped.
_maps: dict[tuple[int, int], tuple[int, mmap.mmap | None]] = {}
_inode_of: dict[str, tuple[int, int]] = {}
_maps_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _maps_lock
    _maps_lock = threading.Lock()  # a parent thread may have held it at the fork


at_fork(_after_fork_in_child)


def _header_map(shm: Path) -> mmap.mmap | None:
    """A read-only map of ``shm``'s first bytes, shared by every HotRows of this process
    on that file; None if it cannot be made (no such file: another VFS, or a locking mode
    that keeps the WAL-index in private memory)."""
    try:
        found = os.stat(shm)
    except OSError:
        return None
    inode = (found.st_dev, found.st_ino)
    with _maps_lock:
        known = _maps.get(inode)
        if known is not None:
            return known[1]
        _forget_removed(str(shm))
        try:
            fd = os.open(shm, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        mapped = None
        with contextlib.suppress(OSError, ValueError):
            if os.fstat(fd).st_size >= 2 * _HEADER:
                mapped = mmap.mmap(fd, 2 * _HEADER, mmap.MAP_SHARED, mmap.PROT_READ)
        _maps[inode] = (fd, mapped)  # kept even without a map: see above
        _inode_of[str(shm)] = inode
        return mapped


def _forget_removed(path: str) -> None:
    """Close the map of the file that was at ``path`` before, if SQLite removed it."""
    inode = _inode_of.pop(path, None)
    if inode is None or inode not in _maps:
        return
    fd, mapped = _maps[inode]
    try:
        removed = os.fstat(fd).st_nlink == 0
    except OSError:
        removed = True
    if not removed:
        return  # a file still in use elsewhere under another name: keep it
    del _maps[inode]
    if mapped is not None:
        mapped.close()
    os.close(fd)
