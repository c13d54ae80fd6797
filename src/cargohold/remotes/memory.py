"""``memory://`` - a remote in this process's memory.

A real implementation of the protocol, not a mock: conditional puts and deletes are
enforced under a lock, etags are content digests as on S3, and listings are in UTF-8 byte order. Useful in
tests and for throwaway holds. ``memory://NAME`` returns the same store to every caller in
the process that opens that name; ``memory://`` alone gives a private one.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from .._fork import on_fork
from ..errors import AlreadyExists, NotFoundError, PreconditionFailed
from ._base import STREAM_CHUNK, ByteRange, ObjectInfo, ObjectStream, PutRequest, Remote

__all__ = ["MemoryRemote"]


@dataclass(frozen=True, slots=True)
class _Stored:
    data: bytes
    info: ObjectInfo


class _Store:
    """The objects of one named memory remote, shared by every MemoryRemote opened on it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, _Stored] = {}
        self.order: list[bytes] = []  # keys as UTF-8, sorted, for listings in S3's order
        on_fork(self._after_fork)

    def _after_fork(self) -> None:
        """A child after fork() has a copy of the objects (memory is not shared) and a
        lock another parent thread may have held: a new one."""
        self.lock = threading.Lock()


class _BytesStream(ObjectStream):
    def __init__(self, data: bytes, info: ObjectInfo) -> None:
        self._data = data
        self.info = info

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._data), STREAM_CHUNK):
            yield self._data[start : start + STREAM_CHUNK]


class MemoryRemote(Remote):
    """Objects in a dict guarded by a lock. See the module docstring."""

    conditional_deletes = True

    _named: ClassVar[dict[str, _Store]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "") -> None:
        self._name = name
        if name:
            with self._named_lock:
                self._store = self._named.setdefault(name, _Store())
        else:
            self._store = _Store()

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop the named store (the next ``memory://NAME`` starts empty)."""
        with cls._named_lock:
            cls._named.pop(name, None)

    def _lookup(self, key: str) -> _Stored:
        stored = self._store.objects.get(key)
        if stored is None:
            raise NotFoundError(f"no object {key!r} in {self.url}", key=key, remote=self.url)
        return stored

    def _get(self, key: str, range: ByteRange | None) -> bytes:
        data = self._lookup(key).data
        return data if range is None else data[range[0] : range[1]]

    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        stored = self._lookup(key)
        data = stored.data if range is None else stored.data[range[0] : range[1]]
        return _BytesStream(data, stored.info)

    def _head(self, key: str) -> ObjectInfo:
        return self._lookup(key).info

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # One page under the lock at a time, resuming after the last key seen, so writers
        # running during a long listing neither block on it nor break it.
        encoded = prefix.encode()
        store = self._store
        after: bytes | None = None
        while True:
            with store.lock:
                if after is None:
                    start = bisect.bisect_left(store.order, encoded)
                else:
                    start = bisect.bisect_right(store.order, after)
                page = store.order[start : start + 1000]
                infos = [store.objects[k.decode()].info for k in page if k.startswith(encoded)]
            yield from infos
            if len(page) < 1000 or not page[-1].startswith(encoded):
                return
            after = page[-1]

    def _put(self, request: PutRequest) -> ObjectInfo:
        data = b"".join(request.chunks())  # read outside the lock: sources may be slow
        info = ObjectInfo(
            key=request.key,
            size=len(data),
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            last_modified=datetime.now(UTC),
            metadata=dict(request.metadata),
            content_type=request.content_type,
        )
        store = self._store
        with store.lock:
            current = store.objects.get(request.key)
            if request.mode == "create" and current is not None:
                raise AlreadyExists(
                    f"{request.key!r} already exists in {self.url}",
                    key=request.key,
                    remote=self.url,
                )
            if request.if_match is not None and (
                current is None or current.info.etag != request.if_match
            ):
                raise PreconditionFailed(
                    f"{request.key!r} in {self.url} no longer has etag {request.if_match}",
                    key=request.key,
                    remote=self.url,
                )
            if current is None:
                bisect.insort(store.order, request.key.encode())
            store.objects[request.key] = _Stored(data, info)
        return info

    def _delete(self, key: str) -> None:
        with self._store.lock:
            self._remove(key)

    def _delete_if_match(self, key: str, etag: str) -> None:
        with self._store.lock:
            current = self._store.objects.get(key)
            if current is None or current.info.etag != etag:
                what = "does not exist" if current is None else f"no longer has etag {etag}"
                raise PreconditionFailed(f"{key!r} in {self.url} {what}", key=key, remote=self.url)
            self._remove(key)

    def _remove(self, key: str) -> None:
        """Drop ``key``; call with the store's lock held."""
        store = self._store
        if store.objects.pop(key, None) is not None:
            index = bisect.bisect_left(store.order, key.encode())
            del store.order[index]
