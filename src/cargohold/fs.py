"""An fsspec filesystem over a Hold: ``hold://tables/t.parquet`` for pandas, pyarrow, Dask.

Registered as the ``hold`` protocol (an ``fsspec.specs`` entry point), so once cargohold is
installed::

    pandas.read_parquet("hold://tables/t.parquet")
    with fsspec.open("hold://videos/a.mp4", "rb") as f: ...

Without arguments the filesystem opens a Hold with ``cargohold.open()`` (settings from the
``CARGOHOLD_*`` variables) and keeps it for the life of the process; pass ``instance=``
(as ``storage_options={"instance": hold}``) to use one you opened. Folders are implied by
keys, as in an object store: ``mkdir`` does nothing and a folder exists while a key is under
it. A shell over the Hold's public API: every promise below is one the Hold keeps.

- **Writes** (``open`` in ``"wb"``/``"xb"``/``"ab"``, ``pipe_file``, ``put_file``,
  ``touch``, ``cp_file``, ``mv``) are ``Hold.put``: stored once the local tier and its
  journal have them, synced in the background. A file opened for writing is put when it is
  closed, whole (no reader sees part of it); a ``with`` block over ``fs.open(...)`` that
  raises stores nothing.
- **Create-only** (``"xb"``, ``pipe_file(..., mode="create")``, ``put_file(...,
  mode="create")``) is ``Hold.put(mode="create")``: enforced by the remote, so of two
  writers (in any process or instance) exactly one wins; the other gets FileExistsError
  (:class:`~cargohold.errors.AlreadyExists`).
- **Append** (``"ab"``) reads the current bytes, appends, and writes back with
  ``if_match`` on the version read: an append never silently drops another writer's change
  (PreconditionFailed instead). Write-through, so it costs a remote round trip.
- **Reads**: ``cat_file`` of a whole object reads through the local tier (kept, like
  ``Hold.get``); ``open("rb")``, ranged ``cat_file`` and ``read_block`` read the local copy
  when it is fresh, else only the bytes asked for with ranged GETs of one version
  (``Hold.open(read_through=False)``).
- **Transactions** (``with fs.transaction:``) hold back every file written inside until
  the block ends, and store none of them if it raises. At the end they are put one by one:
  each is atomic, the group is not.

What it does not support raises the exception fsspec expects: see docs/fsspec.md for
the table (linked from the README).
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, ClassVar

from fsspec import AbstractFileSystem
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractBufferedFile

from .errors import AlreadyExists, InvalidInput, NotFoundError
from .hold import Hold
from .hold import open as open_hold
from .keys import normalize_key, normalize_prefix
from .remotes import ObjectInfo, PutMode

__all__ = ["HoldFileSystem"]

#: A file being written stays in memory up to this size, then spills to a temp file.
SPOOL_MAX = 8 * 1024 * 1024
_WRITE_MODES = ("wb", "xb", "ab")


def _put_mode(mode: str) -> PutMode:
    """fsspec's ``mode=`` for pipe_file/put_file: ``overwrite`` or ``create``."""
    if mode not in ("overwrite", "create"):
        raise InvalidInput(f"mode must be 'overwrite' or 'create', not {mode!r}")
    return "create" if mode == "create" else "overwrite"


class _HoldWriteFile(AbstractBufferedFile):  # type: ignore[misc] # fsspec is untyped
    """A file opened for writing: its bytes go to a spool (memory, then a temp file), and
    ``close()`` (or a transaction's commit) puts them into the Hold in one ``Hold.put``.

    A ``with`` block that raises discards the spool: nothing is stored. ``discard()`` does
    the same outside a ``with``; a discarded or committed file commits nothing again.
    """

    def __init__(
        self,
        fs: HoldFileSystem,
        path: str,
        key: str,
        mode: str,
        *,
        block_size: int | None,
        autocommit: bool,
        metadata: Mapping[str, str] | None,
        content_type: str | None,
    ) -> None:
        super().__init__(fs, path, mode=mode, block_size=block_size, autocommit=autocommit)
        self._hold: Hold = fs.hold
        self._key = key
        self._metadata = metadata
        self._content_type = content_type
        self._put_mode: PutMode = "create" if mode == "xb" else "overwrite"
        self._if_match: str | None = None
        self._spool: tempfile.SpooledTemporaryFile[bytes] | None = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_MAX, mode="w+b"
        )
        if mode == "ab":
            try:
                self._start_append()
            except BaseException:
                self.discard()  # else fsspec's __del__ would close, and so store, the spool
                raise

    def _start_append(self) -> None:
        """Copy the current bytes into the spool and remember their version: the put at
        close is conditional on it (create-only when there was nothing)."""
        assert self._spool is not None
        # max_age=0: the remote's current version, not a copy this Hold kept (fresh for
        # max_age), which another instance may have replaced: an append to it would fail
        # its if_match on every try until the copy aged out. One file and its info: the
        # bytes copied are the version the put is conditional on.
        try:
            current, info = self._hold.open_with_info(self._key, max_age=0)
        except NotFoundError:
            self._put_mode = "create"
            return
        with current:
            shutil.copyfileobj(current, self._spool)
        self._if_match = info.etag
        self._metadata = info.metadata if self._metadata is None else self._metadata
        self._content_type = self._content_type or info.content_type
        self.loc = self._spool.tell()

    def _upload_chunk(self, final: bool = False) -> bool:
        if self._spool is None:
            raise ValueError(f"{self.path}: this file was discarded or already stored")
        self._spool.write(self.buffer.getbuffer())
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        """Put what was written into the Hold (once); raises what ``Hold.put`` raises."""
        spool, self._spool = self._spool, None
        if spool is None:
            return
        with spool:
            spool.seek(0)
            self._hold.put(
                self._key,
                spool,  # type: ignore[arg-type] # a binary file, typed apart from BinaryIO
                mode=self._put_mode,
                if_match=self._if_match,
                metadata=self._metadata,
                content_type=self._content_type,
            )

    def discard(self) -> None:
        """Throw away what was written: nothing is stored."""
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()
        self.closed = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.discard()
        else:
            self.close()


class _HoldReadFile(AbstractBufferedFile):  # type: ignore[misc] # fsspec is untyped
    """A file opened for reading: one version of the key, from the local copy when it is
    fresh, else by ranged GETs of only the blocks read (``Hold.open(read_through=False)``)."""

    def __init__(
        self,
        fs: HoldFileSystem,
        path: str,
        source: BinaryIO,
        *,
        block_size: int | None,
        cache_type: str,
        cache_options: dict[str, Any] | None,
    ) -> None:
        self._source = source
        size = source.seek(0, io.SEEK_END)
        super().__init__(
            fs,
            path,
            mode="rb",
            block_size=block_size,
            cache_type=cache_type,
            cache_options=cache_options,
            size=size,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        self._source.seek(start)
        return self._source.read(max(0, end - start))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._source.close()


class _TextWriter(io.TextIOWrapper):
    """Text mode over a file opened for writing: a ``with`` block that raises discards it."""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and isinstance(self.buffer, _HoldWriteFile):
            self.buffer.discard()  # closed: our own close() then has nothing to flush into
            return
        self.close()


class HoldFileSystem(AbstractFileSystem):  # type: ignore[misc] # fsspec is untyped
    """The ``hold://`` protocol. See the module docstring for what each operation promises."""

    protocol: ClassVar[str | tuple[str, ...]] = ("hold",)
    root_marker = ""
    _default_hold: ClassVar[Hold | None] = None

    def __init__(self, instance: Hold | None = None, **storage_options: Any) -> None:
        super().__init__(**storage_options)
        if instance is None:
            if HoldFileSystem._default_hold is None:
                HoldFileSystem._default_hold = open_hold()
            instance = HoldFileSystem._default_hold
        self.hold = instance

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        if path.startswith("hold://"):
            path = path[len("hold://") :]
        return path.strip("/")

    def _key(self, path: str) -> str:
        return normalize_key(self._strip_protocol(path))

    # -- reads ------------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if path == "":
            return {"name": "", "size": 0, "type": "directory"}
        try:
            return _file_info(path, self.hold.head(normalize_key(path)))
        except NotFoundError:
            for _ in self.hold.list(normalize_prefix(path + "/")):
                return {"name": path, "size": 0, "type": "directory"}
            raise FileNotFoundError(errno.ENOENT, "no such key or folder", path) from None

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        prefix = normalize_prefix(path + "/") if path else ""
        entries: dict[str, dict[str, Any]] = {}
        for info in self.hold.list(prefix):
            rest = info.key[len(prefix) :]
            head, sep, _ = rest.partition("/")
            name = prefix + head
            if sep:
                entries.setdefault(name, {"name": name, "size": 0, "type": "directory"})
            else:
                entries[name] = _file_info(name, info)
        if not entries and path:
            found = self.info(path)  # a file, or FileNotFoundError
            return [found] if detail else [path]
        listed = sorted(entries.values(), key=lambda e: e["name"])
        return listed if detail else [e["name"] for e in listed]

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """The object's bytes, or ``data[start:end]`` (negative values count from the
        end). A whole object reads through the local tier; a range reads the local copy
        when fresh, else asks the remote for that range only."""
        key = self._key(path)
        if start is None and end is None:
            return self.hold.get(key)
        with self.hold.open(key, read_through=False) as source:
            size = source.seek(0, io.SEEK_END)
            begin, stop = slice(start, end).indices(size)[:2]
            if stop <= begin:
                return b""
            source.seek(begin)
            return source.read(stop - begin)

    def get_file(
        self,
        rpath: str,
        lpath: Any,
        callback: Callback = DEFAULT_CALLBACK,
        outfile: Any = None,
        **kwargs: Any,
    ) -> None:
        """Copy one object to a local file (read through: the local tier keeps it)."""
        path = self._strip_protocol(rpath)
        try:
            source = self.hold.open(normalize_key(path)) if path else None
        except NotFoundError:
            source = None
        if source is None:
            if not self.isdir(path):
                raise FileNotFoundError(errno.ENOENT, "no such key or folder", rpath)
            if outfile is None:
                Path(lpath).mkdir(parents=True, exist_ok=True)
            return
        with source:
            callback.set_size(source.seek(0, io.SEEK_END))
            source.seek(0)
            if outfile is not None:
                _copy(source, outfile, callback)
                return
            if hasattr(lpath, "write"):
                _copy(source, lpath, callback)  # a file object, as fsspec allows
                return
            Path(lpath).parent.mkdir(parents=True, exist_ok=True)
            with open(lpath, "wb") as out:
                _copy(source, out, callback)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        cache_type: str = "readahead",
        **kwargs: Any,
    ) -> Any:
        path = self._strip_protocol(path)
        key = normalize_key(path)
        if mode == "rb":
            source = self.hold.open(key, read_through=False)
            try:
                return _HoldReadFile(
                    self,
                    path,
                    source,
                    block_size=block_size,
                    cache_type=cache_type,
                    cache_options=cache_options,
                )
            except BaseException:
                source.close()
                raise
        if mode not in _WRITE_MODES:
            raise NotImplementedError(
                f"hold:// does not support mode {mode!r}: use 'rb', 'wb', 'xb' or 'ab' "
                "(or their text forms 'r', 'w', 'x', 'a')"
            )
        if mode == "xb" and self._exists_as_file(key):
            raise AlreadyExists(f"{key!r} exists and mode 'xb' is create-only", key=key)
        return _HoldWriteFile(
            self,
            path,
            key,
            mode,
            block_size=block_size,
            autocommit=autocommit,
            metadata=metadata,
            content_type=content_type,
        )

    def open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        cache_options: dict[str, Any] | None = None,
        compression: str | None = None,
        **kwargs: Any,
    ) -> Any:
        # fsspec's text mode wraps the binary file in a TextIOWrapper, whose __exit__ would
        # close (and so store) it even when the block raised: ours discards it.
        options = {"block_size": block_size, "cache_options": cache_options, **kwargs}
        if "b" in mode or "r" in mode:
            return super().open(path, mode, compression=compression, **options)
        text = {k: options.pop(k) for k in ("encoding", "errors", "newline") if k in options}
        binary = super().open(path, mode.replace("t", "") + "b", compression=compression, **options)
        return _TextWriter(binary, **text)

    def modified(self, path: str) -> datetime:
        info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "a folder has no modification time", path)
        return datetime.fromtimestamp(info["mtime"], UTC)

    # -- writes -----------------------------------------------------------------------

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """Store ``value`` under the key (``mode="create"``: only if it does not exist,
        enforced by the remote). Inside a transaction, held back until it ends."""
        put_mode = _put_mode(mode)
        if self._intrans:
            with self.open(path, "xb" if put_mode == "create" else "wb", **kwargs) as f:
                f.write(value)
            return
        self.hold.put(
            self._key(path),
            value,
            mode=put_mode,
            metadata=kwargs.get("metadata"),
            content_type=kwargs.get("content_type"),
        )

    def put_file(
        self,
        lpath: Any,
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        """Store a local file under the key (``mode="create"`` as for ``pipe_file``).
        A local folder stores nothing: folders are implied by keys."""
        put_mode = _put_mode(mode)
        local = Path(lpath)
        if local.is_dir():
            return
        if self._intrans:  # through a file, which the transaction holds back
            target = "xb" if put_mode == "create" else "wb"
            with self.open(rpath, target, **kwargs) as out, local.open("rb") as source:
                callback.set_size(local.stat().st_size)
                _copy(source, out, callback)
            return
        size = local.stat().st_size
        callback.set_size(size)
        self.hold.put(
            self._key(rpath),
            local,
            mode=put_mode,
            metadata=kwargs.get("metadata"),
            content_type=kwargs.get("content_type"),
        )
        callback.relative_update(size)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy one object with its metadata and content type, all of one version of the
        source (``Hold.open_with_info``), even if it is rewritten during the copy."""
        source, target = self._key(path1), self._key(path2)
        try:
            data, info = self.hold.open_with_info(source)
        except NotFoundError:
            if self.isdir(path1):
                return  # a folder: implied by the keys copied into it
            raise
        with data:
            self.hold.put(target, data, metadata=info.metadata, content_type=info.content_type)

    def rm_file(self, path: str) -> None:
        """Delete the key (idempotent, as ``Hold.delete``)."""
        self.hold.delete(self._key(path))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Delete the keys ``path`` names (with ``recursive``, every key under a folder).
        Folders are implied by keys: they go with their last key."""
        for name in reversed(self.expand_path(path, recursive=recursive, maxdepth=maxdepth)):
            key = normalize_key(self._strip_protocol(name))
            if self._exists_as_file(key):
                self.hold.delete(key)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass  # folders are implied by the keys under them

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass  # likewise: a folder with no key under it does not exist

    def rmdir(self, path: str) -> None:
        """Folders are implied by keys: an empty one does not exist, so this does nothing;
        a folder with keys under it raises OSError (ENOTEMPTY)."""
        prefix = normalize_prefix(self._strip_protocol(path) + "/")
        for _ in self.hold.list(prefix):
            raise OSError(errno.ENOTEMPTY, "folder is not empty", path)

    def _exists_as_file(self, key: str) -> bool:
        try:
            self.hold.head(key)
        except NotFoundError:
            return False
        return True


def _file_info(name: str, info: ObjectInfo) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": name,
        "size": info.size,
        "type": "file",
        "etag": info.etag,
        "mtime": info.last_modified.timestamp(),
    }
    if info.content_type is not None:
        found["content_type"] = info.content_type
    if info.metadata is not None:
        found["metadata"] = dict(info.metadata)
    return found


def _copy(source: BinaryIO, out: Any, callback: Callback) -> None:
    while chunk := source.read(1024 * 1024):
        out.write(chunk)
        callback.relative_update(len(chunk))
