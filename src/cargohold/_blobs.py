"""The local tier's files: blobs too large for the index, their named links, temp files, and
the collection of files no row needs any more.

Layout under the tier's directory::

    blobs/a/<id>           bytes of objects too large to keep in the index (16 shards;
                           tiers written before 2026-12 also have blobs/ab/<id>)
    named/<id>/<name>      a hard link to a blob under the key's last segment, made when
                           ``path()`` is asked for it, so the file has its real name
    tmp/                   files being written

A blob is complete (and with ``fsync``, on disk) before any row names it, and it is
removed only by :meth:`Blobs.collect` (files the index queued in ``garbage`` when a row
was replaced or dropped) and :meth:`Blobs.remove_orphans` (files no row names, left by a
crash), each followed by a commit, so that a reader can trust an unchanged index to mean
"no file went" (see ``LocalTier.change_stamp``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ._index import Index
from ._io import read_whole
from .errors import from_os_error

__all__ = ["INLINE_MAX", "Blobs"]

#: Objects up to this size live in the index itself: one statement writes them, which is
#: several times faster than a file (see docs/benchmarks.md).
INLINE_MAX = 64 * 1024
_GARBAGE_CHUNK = 32  # files removed between two commits (see LocalTier.change_stamp)


class Blobs:
    """The files of one local tier (see the module docstring)."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.root = root
        self.dir = root / "blobs"
        self.named = root / "named"
        self.tmp = root / "tmp"
        self.fsync = fsync
        self._prefix = f"{self.dir}{os.sep}"  # reads build paths as strings: cheaper
        self._shards: set[str] = set()
        try:
            for folder in (root, self.dir, self.tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"create the local tier in {root}") from exc

    def new_name(self) -> str:
        """A new blob's name, ``a/<id>``; its shard folder exists on return. Sixteen
        shards, not 256 or one per blob: each new folder costs a mkdir (0.15-0.3 ms on small
        VMs) and makes the first file in it slower to create, and with 256 a new tier paid
        that for most of its first few hundred blobs. Names stored in the index are paths
        relative to blobs/, so tiers that have ``ab/<id>`` blobs read them as before."""
        blob_id = uuid.uuid4().hex
        shard = blob_id[:1]
        if shard not in self._shards:
            (self.dir / shard).mkdir(exist_ok=True)
            self._shards.add(shard)
        return f"{shard}/{blob_id}"

    def store(
        self, key: str, data: bytes | memoryview | Path | BinaryIO, *, as_file: bool = False
    ) -> tuple[bytes | memoryview | None, str | None, int]:
        """(inline bytes, blob name, size): small bytes stay inline (unless ``as_file``);
        the rest becomes a complete blob file."""
        small_bytes = isinstance(data, bytes | memoryview) and len(data) <= INLINE_MAX
        if isinstance(data, bytes | memoryview) and small_bytes and not as_file:
            return data, None, len(data)
        relative = self.new_name()
        path = self.dir / relative
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
            self.remove(relative)
            where = f"write {key!r} to the local tier at {self.root}"
            raise from_os_error(exc, where, key=key) from exc
        except BaseException:
            self.remove(relative)
            raise
        if size <= INLINE_MAX and not as_file and not small_bytes:
            # A small file or stream: keep it inline after all, like small bytes.
            small = path.read_bytes()
            self.remove(relative)
            return small, None, size
        return None, relative, size

    def take(self, key: str, source: Path) -> tuple[bytes | memoryview | None, str | None, int]:
        """As :meth:`store` for a file the caller gives up (``put(..., transfer="move")``):
        a large file with no other name on this disk becomes a blob by a hard link, no
        copy; anything else is copied. The caller removes ``source`` once the write is
        committed, so a failed write leaves it where it was."""
        try:
            info = source.lstat()
        except OSError as exc:
            raise from_os_error(exc, f"read {source} to write {key!r}", key=key) from exc
        # Another name (a link the app made) could still change the bytes, and a symlink's
        # target is not the caller's to give: copy those.
        if info.st_size <= INLINE_MAX or info.st_nlink > 1 or not stat.S_ISREG(info.st_mode):
            return self.store(key, source)
        relative = self.new_name()
        path = self.dir / relative
        try:
            os.link(source, path)
        except OSError:  # another disk (EXDEV), or a file system without hard links
            return self.store(key, source)
        # A link keeps the file's old mtime, and remove_orphans (any process's syncer)
        # removes an unreferenced blob older than its cutoff: until the row commits, this
        # one is unreferenced. The caller gave the file up, so touching it is ours to do.
        try:
            os.utime(path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise from_os_error(exc, f"write {key!r}", key=key) from exc
        try:
            if self.fsync:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                _fsync_dir(path.parent)
                _fsync_dir(path.parent.parent)
        except OSError as exc:
            self.remove(relative)
            raise from_os_error(exc, f"write {key!r} to the local tier at {self.root}") from exc
        return None, relative, info.st_size

    def adopt(self, source: Path) -> tuple[bytes | None, str | None, int]:
        """A complete file from ``tmp/``, moved (not copied) in, or read inline if small."""
        size = source.stat().st_size
        if size <= INLINE_MAX:
            data = source.read_bytes()
            source.unlink()
            return data, None, size
        relative = self.new_name()
        os.replace(source, self.dir / relative)
        return None, relative, size

    def path(self, relative: str) -> Path:
        return self.dir / relative

    def read(self, relative: str) -> bytes | None:
        """A blob's bytes, or None if it was replaced meanwhile."""
        try:
            return read_whole(f"{self._prefix}{relative}")
        except FileNotFoundError:
            return None

    def open(self, relative: str) -> BinaryIO | None:
        """An open file of a blob (valid even once it is removed), or None if it is gone."""
        try:
            return (self.dir / relative).open("rb")
        except FileNotFoundError:
            return None

    def named_link(self, key: str, relative: str) -> Path | None:
        """``named/<id>/<last segment of key>``, a hard link to the blob (made once), or
        None if the blob is gone (read the row again)."""
        link = self.named / relative.rsplit("/", 1)[-1] / key.rsplit("/", 1)[-1]
        if link.exists():
            return link
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.dir / relative, link)
        except FileExistsError:
            pass  # another thread linked it first
        except FileNotFoundError:
            return None
        return link

    def remove(self, relative: str) -> None:
        """Remove a blob and the named link ``path()`` may have made for it."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / relative).unlink()
        named = self.named / relative.rsplit("/", 1)[-1]
        if named.exists():
            shutil.rmtree(named, ignore_errors=True)

    # -- garbage ----------------------------------------------------------------------------

    def collect(self, index: Index) -> int:
        """Remove files of replaced and removed objects (queued in ``garbage`` by the
        index's triggers). Returns how many were removed."""
        rows = index.all("SELECT rowid, file FROM garbage LIMIT 10000")
        # A commit after every few removals: readers that trust an unchanged index to
        # mean "no file went" (see change_stamp) are wrong for one chunk at most.
        for start in range(0, len(rows), _GARBAGE_CHUNK):
            chunk = rows[start : start + _GARBAGE_CHUNK]
            for _, file in chunk:
                self.remove(file)
            with index.transaction({}) as conn:  # no object's row changes
                conn.executemany("DELETE FROM garbage WHERE rowid = ?", [(r[0],) for r in chunk])
        return len(rows)

    def remove_orphans(self, index: Index, older_than: float) -> int:
        """Remove blob files and named links no row refers to (left by a crash before
        their row was written or after it was replaced), once older than ``older_than``
        seconds, and stale temp files. Safe while other threads and processes write."""
        referenced = {
            row[0] for row in index.all("SELECT file FROM objects WHERE file IS NOT NULL")
        }
        cutoff = time.time() - older_than
        removed = 0
        for shard in self.dir.iterdir() if self.dir.exists() else ():
            for file in shard.iterdir():
                relative = f"{shard.name}/{file.name}"
                with contextlib.suppress(FileNotFoundError):
                    if relative not in referenced and file.stat().st_mtime < cutoff:
                        self.remove(relative)
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
            with index.transaction({}) as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO info VALUES ('orphans_removed_at', ?)",
                    (repr(time.time()),),
                )
        return removed


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
