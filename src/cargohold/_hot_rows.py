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

If the header cannot be mapped (no ``-shm`` file: another VFS, or a locking mode that keeps
the index in private memory), nothing is kept and every lookup queries SQLite.

Every write empties the table, so under a steady stream of writes it is a no-op; it pays
when reads outnumber writes.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["HotRows"]

#: Rows kept at most, and value bytes kept at most (a row with a larger value is not kept).
MAX_ROWS = 4096
MAX_BYTES = 16 * 1024 * 1024
MAX_VALUE = 64 * 1024
_HEADER = 48  # bytes of the WAL-index header's first copy


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
        self._lock = threading.Lock()  # inserts and new generations; hits take no lock
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
            with self._lock:
                self._generation = next(self._generations)
                self._rows = {}
                self._bytes = 0
                self._header = header
        return self._generation

    def get(self, key: str, generation: int) -> Any:
        """The row kept for ``key`` in ``generation``, or None."""
        found = self._rows.get(key)
        if found is not None and found[0] == generation:
            return found[1]
        return None

    def put(self, key: str, generation: int, row: Any) -> None:
        """Keep ``row``, read in ``generation`` (dropped if a newer one began meanwhile,
        or if its value is over MAX_VALUE)."""
        size = _value_size(row)
        if size > MAX_VALUE:
            return
        with self._lock:
            if generation != self._generation:
                return
            previous = self._rows.pop(key, None)
            if previous is not None:
                self._bytes -= _value_size(previous[1])
            while self._rows and (
                len(self._rows) >= self.max_rows or self._bytes + size > self.max_bytes
            ):
                oldest = next(iter(self._rows))  # dicts keep insertion order
                self._bytes -= _value_size(self._rows.pop(oldest)[1])
            self._rows[key] = (generation, row)
            self._bytes += size

    def close(self) -> None:
        """Forget every row and stop reading the header. Safe to call twice."""
        with self._lock:
            self._generation = next(self._generations)
            self._rows = {}
            self._bytes = 0
            self._map = None  # the map itself stays open: see _header_map


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
            if os.fstat(fd).st_size >= _HEADER:
                mapped = mmap.mmap(fd, _HEADER, mmap.MAP_SHARED, mmap.PROT_READ)
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
