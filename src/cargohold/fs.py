"""An fsspec filesystem over a Hold: ``hold://tables/t.parquet`` for pandas, pyarrow, Dask.

Registered as the ``hold`` protocol (an ``fsspec.specs`` entry point), so once cargohold is
installed::

    pandas.read_parquet("hold://tables/t.parquet")
    with fsspec.open("hold://videos/a.mp4", "rb") as f: ...

Without arguments the filesystem opens a Hold with ``cargohold.open()`` (settings from the
``CARGOHOLD_*`` variables) and keeps it for the life of the process; pass ``instance=``
(as ``storage_options={"instance": hold}``) to use one you opened. Folders are implied by keys, as
in an object store: ``mkdir`` does nothing and a folder exists while a key is under it.
Reads go through the Hold (local tier first, read-through on a miss); a file opened for
writing is put when it is closed (write-back, like ``Hold.put``).
"""

from __future__ import annotations

import tempfile
from typing import Any, ClassVar

from fsspec import AbstractFileSystem

from .errors import NotFoundError
from .hold import Hold
from .hold import open as open_hold
from .keys import normalize_key, normalize_prefix

__all__ = ["HoldFileSystem"]


class _Writer(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
    """A file for writing (in memory up to 8 MiB, then on disk) that puts its bytes into
    the Hold when it is closed."""

    def __init__(self, hold: Hold, key: str) -> None:
        super().__init__(max_size=8 * 1024 * 1024, mode="w+b")
        self._hold = hold
        self._key = key
        self._put = False

    def close(self) -> None:
        if not self._put and not self.closed:
            self._put = True
            self.flush()
            self.seek(0)
            self._hold.put(self._key, self)  # type: ignore[arg-type]
        super().close()


class HoldFileSystem(AbstractFileSystem):  # type: ignore[misc] # fsspec is untyped
    """The ``hold://`` protocol. See the module docstring."""

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
    def _strip_protocol(cls, path: str) -> str:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("hold://"):
            path = path[len("hold://") :]
        return path.strip("/")

    # -- reads ------------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if path == "":
            return {"name": "", "size": 0, "type": "directory"}
        try:
            info = self.hold.head(normalize_key(path))
            return {
                "name": path,
                "size": info.size,
                "type": "file",
                "etag": info.etag,
                "mtime": info.last_modified.timestamp(),
                "content_type": info.content_type,
            }
        except NotFoundError:
            for _ in self.hold.list(normalize_prefix(path + "/")):
                return {"name": path, "size": 0, "type": "directory"}
            raise FileNotFoundError(path) from None

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
                entries[name] = {
                    "name": name,
                    "size": info.size,
                    "type": "file",
                    "etag": info.etag,
                    "mtime": info.last_modified.timestamp(),
                }
        if not entries and path:
            self.info(path)  # a file, or FileNotFoundError
            return [self.info(path)] if detail else [path]
        listed = sorted(entries.values(), key=lambda e: e["name"])
        return listed if detail else [e["name"] for e in listed]

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        key = normalize_key(self._strip_protocol(path))
        try:
            data = self.hold.get(key)
        except NotFoundError:
            raise FileNotFoundError(path) from None
        return data[start:end]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        key = normalize_key(self._strip_protocol(path))
        if "r" in mode:
            try:
                return self.hold.open(key)
            except NotFoundError:
                raise FileNotFoundError(path) from None
        if "w" in mode:
            return _Writer(self.hold, key)
        raise ValueError(f"mode {mode!r} is not supported: use 'rb' or 'wb'")

    # -- writes -----------------------------------------------------------------------

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self.hold.put(normalize_key(self._strip_protocol(path)), value)

    def rm_file(self, path: str) -> None:
        self.hold.delete(normalize_key(self._strip_protocol(path)))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        pass  # folders are implied by the keys under them

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass

    def rmdir(self, path: str) -> None:
        pass
