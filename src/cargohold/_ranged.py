"""A read-only file over one version of a remote object, fetched by ranged GETs.

``Hold.open(key, read_through=False)`` returns one when the local tier has no fresh copy:
reading 10 bytes of a 200 MiB object then asks the remote for those 10 bytes, instead of
downloading the whole object first.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from .errors import RemoteError
from .remotes import ObjectInfo, Remote

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["RangedRemoteFile"]

#: What ``peek`` (and so ``readline`` and iteration) fetches at once.
PEEK_WINDOW = 64 * 1024


class RangedRemoteFile(io.BufferedIOBase):
    """The bytes of the version ``info`` describes, read with one ranged GET per ``read(n)``.

    Guarantees: every byte returned belongs to that version. Each GET's answer carries the
    etag of what it read; if the object was replaced since ``info`` was taken, the read
    raises RemoteError (naming the key) rather than mix two versions. ``read(n)`` asks the
    remote for exactly the bytes it returns (fewer at the end of the object); ``peek`` and
    ``readline`` fetch a window of ``PEEK_WINDOW`` bytes and serve later reads from it
    while it covers them. Not safe to share between threads (like any file object).
    """

    def __init__(self, remote: Remote, info: ObjectInfo) -> None:
        super().__init__()
        self._remote = remote
        self.info = info
        self._pos = 0
        self._window_start = 0
        self._window = b""

    @property
    def name(self) -> str:
        return self.info.key

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.info.size + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, not {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        end = self.info.size if size is None or size < 0 else min(self.info.size, self._pos + size)
        if end <= self._pos:
            return b""
        data = self._cached(self._pos, end)
        if data is None:
            data = self._fetch(self._pos, end)
        self._pos += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def peek(self, size: int = 0) -> bytes:
        """At least one byte from the current position (none at the end), not moving it."""
        self._check_open()
        if self._pos >= self.info.size:
            return b""
        if self._cached(self._pos, self._pos + 1) is None:
            end = min(self.info.size, self._pos + max(size, PEEK_WINDOW))
            self._window_start, self._window = self._pos, self._fetch(self._pos, end)
        return self._window[self._pos - self._window_start :]

    def close(self) -> None:
        self._window = b""
        super().close()

    def _cached(self, start: int, end: int) -> bytes | None:
        offset = start - self._window_start
        if offset >= 0 and end - self._window_start <= len(self._window):
            return self._window[offset : end - self._window_start]
        return None

    def _fetch(self, start: int, end: int) -> bytes:
        key = self.info.key
        with self._remote.stream(key, range=(start, end)) as stream:
            if stream.info.etag != self.info.etag:
                raise RemoteError(
                    f"{key!r} was replaced in {self._remote.url} while it was being read "
                    f"(etag {self.info.etag} became {stream.info.etag})",
                    key=key,
                    remote=self._remote.url,
                    hint="open it again to read the new version",
                )
            data = b"".join(stream)
        if len(data) != end - start:
            raise RemoteError(
                f"{self._remote.url} returned {len(data)} bytes for bytes {start}-{end - 1} "
                f"of {key!r} ({self.info.size} bytes)",
                key=key,
                remote=self._remote.url,
            )
        return data

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
