"""``file:///path`` - a remote in a directory: a mounted volume, a network share, any folder.

Objects are plain files under their keys, so the directory can be browsed and backed up
with ordinary tools; cargohold's own records live under ``.cargohold/`` beside them::

    ROOT/videos/a.mp4                        the object's bytes
    ROOT/.cargohold/records/3f/3f9a...json   JSON: etag, size, metadata, content type, and
                                             the (inode, size, mtime) of the file it describes;
                                             named by the SHA-256 of the key, so no key's
                                             record can clash with another's (``m`` and
                                             ``m.meta/q``) or pass the 255-byte name limit
    ROOT/.cargohold/tmp/                     uploads in progress (same file system, so rename works)
    ROOT/.cargohold/locks/NN.lock            lock stripes for writers
    ROOT/.cargohold/keys/                    cargohold's own keys (``.cargohold/...``)

How the guarantees are kept:

- Atomic: bytes go to a temp file, are fsynced, then ``os.replace``d over the key, so a
  reader sees the old object or the new one, never part of one.
- Etags are MD5 digests of the content (as S3's are for single-part objects). A record
  whose (inode, size, mtime) no longer match the file (a writer is between its two
  renames, a crash came between them, or another tool changed the file) is not trusted:
  the etag is computed from the bytes instead, and the record repaired.
- Conditional puts and deletes: writers of a key take one of 64 ``filelock`` stripes, check
  the mode (or the etag a delete names) against the current file, and rename (or unlink)
  while holding it, so of racing writers exactly one wins. Note that ``flock`` can
  silently succeed on some network file systems (old NFS set-ups); conditions there are
  only as strong as the file system's locking.

- Batches (the syncer's, hydrate's) run at most 4 operations at once, whatever
  ``concurrency`` asks: each is Python work on this disk, so more threads only contend for
  fsync and for the GIL the app's own threads need.

Because keys are files, a key cannot also be the folder of other keys (``a`` and ``a/b``):
such a put raises InvalidKey naming the clash, and ``key_can_be_folder`` is False.

Records in the earlier layout live under ``.cargohold/meta/<key>.meta`` (a layout in which
``m`` and ``m.meta/q`` clashed); they are still read, and moved to ``records/`` when
repaired or rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from filelock import FileLock

from .._fork import on_fork
from ..errors import (
    AlreadyExists,
    CargoholdError,
    InvalidKey,
    NotFoundError,
    PreconditionFailed,
    RemoteError,
    from_os_error,
)
from ..keys import RESERVED_PREFIX
from ._base import (
    STREAM_CHUNK,
    ByteRange,
    ObjectInfo,
    ObjectStream,
    PutRequest,
    Remote,
    check_content_type,
)

__all__ = ["FileRemote"]

_LOCK_STRIPES = 64
_LEGACY_META_SUFFIX = ".meta"


def _md5() -> Any:
    return hashlib.md5(usedforsecurity=False)


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once its directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class _FileStream(ObjectStream):
    def __init__(self, fh: BinaryIO, info: ObjectInfo, range: ByteRange | None) -> None:
        self._fh = fh
        self.info = info
        start, stop = range if range is not None else (0, None)
        self._fh.seek(start)
        self._left = None if stop is None else max(0, stop - start)

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self._left is None or self._left > 0:
                want = STREAM_CHUNK if self._left is None else min(STREAM_CHUNK, self._left)
                chunk = self._fh.read(want)
                if not chunk:
                    return
                if self._left is not None:
                    self._left -= len(chunk)
                yield chunk
        finally:
            self.close()  # read to the end (or abandoned): release the file at once

    def close(self) -> None:
        self._fh.close()


class FileRemote(Remote):
    """Objects as files under ``root``. See the module docstring for the layout and guarantees."""

    key_can_be_folder = False
    # Each operation is Python work on this machine's disk: with 32 threads a batch took
    # 0.7x the time of 4 (fsyncs contend), and an app thread waited behind all 32 for the
    # GIL (put p99 12 ms while syncing, 1.5 ms with 4; docs/benchmarks.md).
    max_concurrency = 4
    conditional_deletes = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().absolute()
        self._fsync = fsync
        self._internal = self.root / RESERVED_PREFIX.rstrip("/")
        self._ready = False
        self._ready_lock = threading.Lock()
        on_fork(self._after_fork)

    def _after_fork(self) -> None:
        """A lock another parent thread may have held at fork() (see :mod:`cargohold._fork`)."""
        self._ready_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    # -- paths and records ------------------------------------------------------------

    def _prepare(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            try:
                for sub in ("records", "tmp", "locks"):
                    (self._internal / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._raise_os(exc, None, "create folders in")
            self._ready = True

    def _split(self, key: str) -> tuple[Path, list[str]]:
        """The folder a key's segments hang from, and those segments."""
        if key.startswith(RESERVED_PREFIX):
            return self._internal / "keys", key[len(RESERVED_PREFIX) :].split("/")
        return self.root, key.split("/")

    def _path(self, key: str) -> Path:
        base, parts = self._split(key)
        return base.joinpath(*parts)

    def _meta_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self._internal / "records" / digest[:2] / f"{digest}.json"

    def _legacy_meta_path(self, key: str) -> Path:
        """Where records were kept before ``records/`` (see the module docstring)."""
        path = (self._internal / "meta").joinpath(*key.split("/"))
        return path.with_name(path.name + _LEGACY_META_SUFFIX)

    def _lock(self, key: str) -> FileLock:
        stripe = (
            int.from_bytes(hashlib.blake2s(key.encode(), digest_size=2).digest()) % _LOCK_STRIPES
        )
        # A new FileLock per use: flock is per open file, so two threads exclude each other.
        return FileLock(self._internal / "locks" / f"{stripe:02d}.lock", is_singleton=False)

    def _read_record(self, key: str) -> dict[str, Any] | None:
        for path in (self._meta_path(key), self._legacy_meta_path(key)):
            try:
                record: dict[str, Any] = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue
            return record
        return None

    def _write_record(self, key: str, record: dict[str, Any]) -> None:
        meta = self._meta_path(key)
        meta.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._internal / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex}.meta"
        tmp.write_bytes(json.dumps(record, separators=(",", ":")).encode())
        os.replace(tmp, meta)
        self._drop_legacy_record(key)

    def _drop_legacy_record(self, key: str) -> None:
        legacy = self._legacy_meta_path(key)
        with contextlib.suppress(OSError):  # none (the usual case), or a name too long
            legacy.unlink()
            self._prune(legacy.parent, self._internal / "meta")

    def _info(self, key: str, fh: BinaryIO, *, repair: bool = True) -> ObjectInfo:
        """The info of the file open as ``fh``, from its record when the record describes it.

        ``repair=False`` when the caller holds the key's lock (repairing takes it).
        """
        st = os.fstat(fh.fileno())
        record = self._read_record(key)
        if record is None or record.get("id") != _identity(st):
            record = self._rebuild_record(key, fh, st, record, repair=repair)
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=record["etag"],
            last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC),
            metadata=dict(record.get("metadata") or {}),
            content_type=record.get("content_type") or check_content_type(None, key),
        )

    def _rebuild_record(
        self,
        key: str,
        fh: BinaryIO,
        st: os.stat_result,
        stale: dict[str, Any] | None,
        *,
        repair: bool,
    ) -> dict[str, Any]:
        digest = _md5()
        position = fh.tell()
        fh.seek(0)
        while chunk := fh.read(STREAM_CHUNK):
            digest.update(chunk)
        fh.seek(position)
        etag = digest.hexdigest()
        # A writer records the new version under "next" before its rename, so after a crash
        # between the rename and the final record, the metadata of either version survives.
        # Bytes that match neither were written by another tool: they have no metadata.
        described = {"etag": None}
        for candidate in (stale, (stale or {}).get("next")):
            if isinstance(candidate, dict) and candidate.get("etag") == etag:
                described = candidate
        record = {
            "id": _identity(st),
            "etag": etag,
            "metadata": described.get("metadata") or {},
            "content_type": described.get("content_type"),
        }
        if not repair:
            return record
        with self._lock(key), contextlib.suppress(OSError):
            current = os.stat(self._path(key))
            if _identity(current) == record["id"]:
                self._write_record(key, record)
        return record

    # -- reads ------------------------------------------------------------------------

    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFoundError(
                f"no object {key!r} in {self.url}", key=key, remote=self.url
            ) from None
        except OSError as exc:
            self._raise_os(exc, key, "read")

    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        fh = self._open(key)
        try:
            return _FileStream(fh, self._info(key, fh), range)
        except BaseException:
            fh.close()
            raise

    def _head(self, key: str) -> ObjectInfo:
        with self._open(key) as fh:
            return self._info(key, fh)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder, _, start = prefix.rpartition("/")
        if prefix.startswith(RESERVED_PREFIX):
            base = self._path(folder + "/x").parent  # x: any name, to reuse the mapping
        else:
            base = self.root.joinpath(*folder.split("/")) if folder else self.root
        yield from self._walk(base, folder + "/" if folder else "", start)

    def _walk(self, directory: Path, key_prefix: str, name_prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            self._raise_os(exc, key_prefix or None, "list")
        # Sort a folder as its name plus '/', so keys come out in UTF-8 byte order, as S3's do.
        named: list[tuple[bytes, os.DirEntry[str]]] = []
        for entry in entries:
            if not entry.name.startswith(name_prefix):
                continue
            if directory == self.root and entry.name == self._internal.name:
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            named.append(((entry.name + ("/" if is_dir else "")).encode(), entry))
        named.sort(key=lambda pair: pair[0])
        for sort_name, entry in named:
            if sort_name.endswith(b"/"):
                yield from self._walk(Path(entry.path), key_prefix + entry.name + "/", "")
                continue
            key = key_prefix + entry.name
            try:
                with open(entry.path, "rb") as fh:
                    yield self._info(key, fh)
            except FileNotFoundError:
                continue  # deleted while we listed

    # -- writes -----------------------------------------------------------------------

    def _put(self, request: PutRequest) -> ObjectInfo:
        self._prepare()
        key = request.key
        tmp = self._internal / "tmp" / f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex}"
        try:
            digest = _md5()
            with tmp.open("wb") as out:
                for chunk in request.chunks():
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            etag = digest.hexdigest()
            with self._lock(key):
                path = self._check_put(request)
                path.parent.mkdir(parents=True, exist_ok=True)
                new = {
                    "etag": etag,
                    "metadata": request.metadata,
                    "content_type": request.content_type,
                }
                current = self._read_record(key) or {}
                current.pop("next", None)
                self._write_record(key, {**current, "next": new})
                os.replace(tmp, path)
                if self._fsync:
                    _fsync_dir(path.parent)
                st = path.stat()
                self._write_record(key, {"id": _identity(st), **new})
        except CargoholdError:
            raise  # ours already (several derive from OSError builtins)
        except OSError as exc:
            self._raise_os(exc, key, "write")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return ObjectInfo(
            key=key,
            size=st.st_size,
            etag=etag,
            last_modified=datetime.now(UTC),
            metadata=dict(request.metadata),
            content_type=request.content_type,
        )

    def _check_put(self, request: PutRequest) -> Path:
        """Check the folder layout and the put's mode; call with the key's lock held."""
        key = request.key
        path = self._path(key)
        base, parts = self._split(key)
        for depth in range(1, len(parts)):
            ancestor = base.joinpath(*parts[:depth])
            if ancestor.is_file():
                raise InvalidKey(
                    f"cannot store {key!r}: {'/'.join(parts[:depth])!r} is an object in "
                    f"{self.url}, and the file remote cannot use an object as a folder",
                    key=key,
                    remote=self.url,
                )
        if path.is_dir():
            raise InvalidKey(
                f"cannot store {key!r}: it is a folder of other objects in {self.url}, "
                "and the file remote cannot store an object under a folder's name",
                key=key,
                remote=self.url,
            )
        if request.mode == "create" and path.exists():
            raise AlreadyExists(f"{key!r} already exists in {self.url}", key=key, remote=self.url)
        if request.if_match is not None:
            self._check_etag(key, path, request.if_match)
        return path

    def _check_etag(self, key: str, path: Path, etag: str) -> None:
        """PreconditionFailed unless ``key`` (at ``path``) has ``etag``; call with the key's
        lock held."""
        try:
            with path.open("rb") as fh:
                current: str | None = self._info(key, fh, repair=False).etag
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            current = None
        if current != etag:
            what = "does not exist" if current is None else f"no longer has etag {etag}"
            raise PreconditionFailed(f"{key!r} in {self.url} {what}", key=key, remote=self.url)

    def _delete(self, key: str) -> None:
        self._remove(key, None)

    def _delete_if_match(self, key: str, etag: str) -> None:
        self._remove(key, etag)

    def _remove(self, key: str, etag: str | None) -> None:
        """Delete ``key``, only if it has ``etag`` when one is given (checked and unlinked
        under the key's lock, as conditional puts are)."""
        if not self._internal.exists():
            if etag is not None:
                raise PreconditionFailed(
                    f"{key!r} in {self.url} does not exist", key=key, remote=self.url
                )
            return  # nothing was ever written here
        path = self._path(key)
        try:
            with self._lock(key):
                if etag is not None:
                    self._check_etag(key, path, etag)
                with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    path.unlink()
                with contextlib.suppress(FileNotFoundError):
                    self._meta_path(key).unlink()
                self._drop_legacy_record(key)
                self._prune(path.parent, self._split(key)[0])
        except CargoholdError:
            raise  # PreconditionFailed, ours already
        except OSError as exc:
            self._raise_os(exc, key, "delete")

    @staticmethod
    def _prune(directory: Path, stop: Path) -> None:
        """Remove folders left empty, up to ``stop``, so a deleted ``a/b`` frees the name ``a``."""
        while directory != stop and stop in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): a concurrent writer keeps it
            directory = directory.parent

    # -- errors -----------------------------------------------------------------------

    def _raise_os(self, exc: OSError, key: str | None, action: str) -> NoReturn:
        """Translate an OS error into cargohold's tree: the one place this module does it."""
        where = f"{self.url}" if key is None else f"{key!r} in {self.url}"
        if action == "write" and isinstance(exc, IsADirectoryError | NotADirectoryError):
            # Another writer made the clash between our check and our rename.
            raise InvalidKey(
                f"cannot store {key!r} in {self.url}: a key there is also a folder of other "
                "keys, and the file remote stores keys as files",
                key=key,
                remote=self.url,
            ) from exc
        error = from_os_error(exc, f"{action} {where}", key=key, remote=self.url)
        if type(error) is CargoholdError:
            error = RemoteError(error.message, key=key, remote=self.url)
        raise error from exc
