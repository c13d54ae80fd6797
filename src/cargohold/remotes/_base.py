"""The remote protocol: the small set of operations every durable tier implements.

A remote stores objects under keys (see :mod:`cargohold.keys`). :class:`Remote` holds the
public methods: they validate and normalise their arguments once, here, then call the
``_``-prefixed methods a remote module implements. A remote module therefore never sees
an invalid key, metadata it cannot store, or a mode combination that makes no sense, and
each one translates its SDK's errors into :mod:`cargohold.errors` in one place.

The conformance suite (``tests/conformance``) holds every remote to the same behaviour.
"""

from __future__ import annotations

import functools
import io
import mimetypes
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ClassVar, Literal, Self, TypeAlias, TypeVar

from .._threads import signals_blocked
from ..errors import CargoholdError, ConfigError, InvalidInput, InvalidMetadata
from ..keys import RESERVED_PREFIX, InternalKey, normalize_key, normalize_prefix

__all__ = [
    "ByteRange",
    "Delete",
    "ObjectInfo",
    "ObjectStream",
    "Put",
    "PutData",
    "PutMode",
    "Remote",
]

_T = TypeVar("_T")
_R = TypeVar("_R")
# Aliases, because inside Remote the name ``list`` is the method.
PutResults: TypeAlias = list["ObjectInfo | CargoholdError"]
GetResults: TypeAlias = list[bytes | CargoholdError]
DeleteResults: TypeAlias = list[CargoholdError | None]
FetchResults: TypeAlias = list["tuple[ObjectInfo, bytes] | CargoholdError"]
_Keys: TypeAlias = list[str]
_Requests: TypeAlias = list["PutRequest"]
_Deletes: TypeAlias = list["Delete"]
_Downloads: TypeAlias = list[tuple[str, Path]]

PutMode: TypeAlias = Literal["overwrite", "create"]
"""``overwrite``: last writer wins. ``create``: fail with AlreadyExists if the key exists."""

PutData: TypeAlias = bytes | bytearray | memoryview | BinaryIO | os.PathLike[str]
"""What ``put`` takes: bytes, a binary file object (read from its current position), or a path."""

ByteRange: TypeAlias = tuple[int, int | None]
"""``(start, stop)``: the bytes ``data[start:stop]``; ``stop=None`` reads to the end."""

MAX_METADATA_BYTES = 2048  # S3's limit on user metadata, names and values together
_METADATA_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_CONTENT_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=(\"[^\"\\]*\"|[\w.+-]+))*", re.ASCII)
STREAM_CHUNK = 1024 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a remote knows about one object.

    ``etag`` is an opaque version tag: equal etags mean equal bytes, and it is what
    ``put(..., if_match=etag)`` compares. ``metadata`` and ``content_type`` are ``None`` in
    listings from remotes whose listings do not carry them (S3); ``head`` always has them.
    For a ``put`` result, ``last_modified`` is this machine's clock when the put completed.
    """

    key: str
    size: int
    etag: str
    last_modified: datetime
    metadata: Mapping[str, str] | None = field(default=None, compare=False)
    content_type: str | None = None


class ObjectStream(ABC):
    """A streaming read: iterate for chunks of bytes; ``info`` describes what is being read.

    ``info.etag`` is the version of the bytes this stream returns, even if the object is
    replaced while it is read. Reading to the end releases the connection or file; a
    stream abandoned part-way should be closed (or used with ``with``).
    """

    info: ObjectInfo

    @abstractmethod
    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most streams need nothing
        """Release what the stream holds; safe to call twice."""

    def read_all(self) -> bytes:
        with self:
            return b"".join(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Put:
    """One put of a batch for :meth:`Remote.put_many`; the fields mean what ``put``'s do."""

    key: str
    data: PutData
    mode: PutMode = "overwrite"
    if_match: str | None = None
    metadata: Mapping[str, str] | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """One delete of a batch for :meth:`Remote.apply`; the fields mean what ``delete``'s do."""

    key: str
    if_match: str | None = None


@dataclass(slots=True)
class PutRequest:
    """A validated put, as a remote module receives it."""

    key: str
    data: bytes | memoryview | BinaryIO | Path
    mode: PutMode
    if_match: str | None
    metadata: dict[str, str]
    content_type: str

    def size_hint(self) -> int | None:
        """The number of bytes to upload, when it is known without reading them."""
        data = self.data
        if isinstance(data, bytes | memoryview):
            return len(data)
        if isinstance(data, Path):
            return data.stat().st_size
        try:
            if data.seekable():
                return os.fstat(data.fileno()).st_size - data.tell()
        except (OSError, io.UnsupportedOperation, AttributeError):
            return None
        return None

    def chunks(self, size: int = STREAM_CHUNK) -> Iterator[bytes | memoryview]:
        """The bytes to upload, in chunks of at most ``size`` (memory stays bounded)."""
        data = self.data
        if isinstance(data, bytes | memoryview):
            view = memoryview(data)
            for start in range(0, len(view), size):
                yield view[start : start + size]
            return
        if isinstance(data, Path):
            with data.open("rb") as fh:
                yield from _read_chunks(fh, size)
            return
        yield from _read_chunks(data, size)


def _read_chunks(fh: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk


class Remote(ABC):
    """The durable tier. Every method is safe to call from many threads at once.

    Subclasses implement the ``_``-prefixed methods; arguments reaching them are validated.
    """

    #: Whether a key may also be the folder of other keys (``a`` and ``a/b`` both stored).
    #: True for object stores; False for the file remote, which stores keys as files.
    key_can_be_folder: ClassVar[bool] = True

    #: The most operations of one batch run at once, whatever ``concurrency`` asks: None
    #: for no cap. A remote whose operations are Python work on this machine caps it, as
    #: each thread more competes with the app for the GIL (see FileRemote).
    max_concurrency: ClassVar[int | None] = None

    #: Whether the remote itself enforces ``delete(key, if_match=etag)``: the delete
    #: happens only if the key's current etag is ``etag``, checked atomically by the
    #: store. A remote that cannot (the S3 remote: obstore sends no condition on
    #: DeleteObject, and stores differ on honouring one) refuses ``if_match`` on deletes.
    conditional_deletes: ClassVar[bool] = False

    #: Whether the remote itself enforces ``put(mode="create")`` and ``put(if_match=...)``,
    #: so that of racing writers in any number of processes exactly one wins. A remote
    #: without them (a Hugging Face bucket's native API) refuses such puts with
    #: ConfigError rather than write unconditionally, and the Hold's single-flight
    #: features need the catalog's leases on it.
    conditional_writes: ClassVar[bool] = True

    #: Whether the store keeps user metadata with each object, so that one request reads
    #: both. False (the Hub's S3 gateway): the remote keeps metadata in a record of its own
    #: under ``.cargohold/``, naming the version it describes. ``head``, ``stream`` and the
    #: batch reads still return it, at the cost of a second request, and a record whose
    #: object was replaced by another tool is ignored; see the remote's module.
    stores_metadata: ClassVar[bool] = True

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL this remote was opened with, with any secret removed."""

    # -- reads ------------------------------------------------------------------------

    def get(self, key: str, *, range: ByteRange | None = None) -> bytes:
        """The object's bytes (or ``data[start:stop]`` for a range).

        Raises NotFoundError if there is no such object. A reader never sees a partial
        object: the bytes are all of one version.
        """
        return self._get(normalize_key(key), _check_range(range))

    def stream(self, key: str, *, range: ByteRange | None = None) -> ObjectStream:
        """Read an object in chunks without holding it all in memory.

        Raises NotFoundError at once if there is no such object.
        """
        return self._stream(normalize_key(key), _check_range(range))

    def head(self, key: str) -> ObjectInfo:
        """Size, etag, last modified time, metadata and content type. Raises NotFoundError."""
        return self._head(normalize_key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, each once, in ascending key order.

        The order is the remote's: UTF-8 byte order on AWS S3, moto, memory and file;
        folder order (``a/b`` before ``a-c``, as a directory walk gives) on SeaweedFS.

        Lazy: pages through any number of keys while holding one page in memory. Keys
        under the reserved ``.cargohold/`` prefix are listed only when asked for by an
        :class:`~cargohold.keys.InternalKey` prefix.
        """
        prefix = normalize_prefix(prefix)
        if isinstance(prefix, InternalKey) or not RESERVED_PREFIX.startswith(prefix):
            return self._list(prefix)
        return (info for info in self._list(prefix) if not info.key.startswith(RESERVED_PREFIX))

    # -- writes -----------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: PutData,
        *,
        mode: PutMode = "overwrite",
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key``; atomic: no reader ever sees a partial object.

        ``mode="create"`` fails with AlreadyExists if the key exists; ``if_match=etag``
        fails with PreconditionFailed unless the object still has that etag. The remote
        itself enforces both, so of many racing writers exactly one wins.
        Metadata names are lower-cased (as S3 does). Without ``content_type``, one is
        guessed from the key's extension.
        """
        return self._put(
            self._checked(_request(Put(key, data, mode, if_match, metadata, content_type)))
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove the object. Idempotent: deleting a missing key is not an error.

        ``if_match=etag`` deletes only if the object still has that etag, else raises
        PreconditionFailed (a missing key too): a delete decided on one version never
        removes a newer one another writer put meanwhile. The remote itself enforces it
        (only where :attr:`conditional_deletes` is True; elsewhere ``if_match`` raises
        InvalidInput at once, and nothing is deleted).
        """
        key = normalize_key(key)
        if if_match is None:
            self._delete(key)
        else:
            self._delete_if_match(key, self._check_delete_condition(if_match))

    # -- batches ----------------------------------------------------------------------

    def put_many(self, puts: Iterable[Put | PutRequest], *, concurrency: int = 32) -> PutResults:
        """Run many puts with up to ``concurrency`` in flight, as the syncer does.

        Results come back in order. One put failing does not stop the others: its result
        is its error. Invalid input raises before anything is sent. (A ``PutRequest`` is
        taken as already checked: cargohold's syncer sends what the Hold validated.)
        """
        requests = [self._checked(p if isinstance(p, PutRequest) else _request(p)) for p in puts]
        return self._put_many(requests, self._concurrency(concurrency))

    def apply(
        self,
        puts: Iterable[Put | PutRequest],
        deletes: Iterable[str | Delete],
        *,
        concurrency: int = 32,
    ) -> tuple[PutResults, DeleteResults]:
        """Puts and deletes together, as the syncer sends a batch of the journal. A remote
        that writes in commits (a Hugging Face dataset repo) makes them one commit; others
        run ``put_many`` and ``delete_many``. Results in order, one per operation.

        A :class:`Delete` with ``if_match`` is conditional, as ``delete(key, if_match=)``:
        its result is PreconditionFailed when the key no longer has that etag. Invalid
        input (``if_match`` on a remote without :attr:`conditional_deletes`) raises before
        anything is sent."""
        requests = [self._checked(p if isinstance(p, PutRequest) else _request(p)) for p in puts]
        checked = [
            Delete(normalize_key(d), None)
            if isinstance(d, str)
            else Delete(
                normalize_key(d.key),
                None if d.if_match is None else self._check_delete_condition(d.if_match),
            )
            for d in deletes
        ]
        return self._apply(requests, checked, self._concurrency(concurrency))

    def get_many(self, keys: Iterable[str], *, concurrency: int = 32) -> GetResults:
        """Read many objects with up to ``concurrency`` in flight; results (or errors) in order."""
        return self._get_many([normalize_key(k) for k in keys], self._concurrency(concurrency))

    def fetch_many(self, keys: Iterable[str], *, concurrency: int = 32) -> FetchResults:
        """Read many (small) objects with their info, up to ``concurrency`` in flight:
        ``(info, bytes)`` or the error for each key, in order."""
        return self._fetch_many([normalize_key(k) for k in keys], self._concurrency(concurrency))

    def download_many(
        self, items: Iterable[tuple[str, Path]], *, concurrency: int = 32
    ) -> PutResults:
        """Stream many objects into files, with up to ``concurrency`` in flight.

        Each ``(key, path)`` writes the object's bytes to ``path`` (created or truncated;
        give a temp path and rename it if readers must never see it part-written) and
        returns the info of the version written, or the error. Memory stays bounded.
        """
        checked = [(normalize_key(key), Path(path)) for key, path in items]
        return self._download_many(checked, self._concurrency(concurrency))

    def delete_many(self, keys: Iterable[str], *, concurrency: int = 32) -> DeleteResults:
        """Delete many objects (idempotent); None for each success, else its error, in order."""
        return self._delete_many([normalize_key(k) for k in keys], self._concurrency(concurrency))

    # -- lifecycle --------------------------------------------------------------------

    def follow_changes(
        self, on_change: Callable[[str, str | None], None], on_gap: Callable[[], None]
    ) -> Callable[[], None] | None:
        """Start hearing of changes other writers make, if this remote has a change feed:
        ``on_change(key, etag)`` for each (``etag`` None: deleted; ``""``: changed, etag
        unknown), ``on_gap()`` when changes may have been missed. Best effort, from a
        thread of the remote's. Returns the function that stops it, or None when the
        remote has no feed (the default): callers then rely on ``max_age``."""
        return None

    def stats(self) -> Mapping[str, object]:
        """What this remote wants shown in ``Hold.status()`` and ``cargohold doctor``
        (a commit budget, say). Plain JSON-able values; empty by default."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # -- what a remote module implements ----------------------------------------------

    def _get(self, key: str, range: ByteRange | None) -> bytes:
        return self._stream(key, range).read_all()

    @abstractmethod
    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream: ...

    @abstractmethod
    def _head(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def _put(self, request: PutRequest) -> ObjectInfo: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    def _delete_if_match(self, key: str, etag: str) -> None:
        """Delete ``key`` only if its etag is ``etag`` (else PreconditionFailed), atomically.
        Called only when :attr:`conditional_deletes` is True, which a remote sets once it
        implements this."""
        raise NotImplementedError(
            f"{type(self).__name__} sets conditional_deletes but has no _delete_if_match"
        )

    def _check_delete_condition(self, if_match: object) -> str:
        if not isinstance(if_match, str) or not if_match:
            raise InvalidInput(f"if_match must be an etag string, not {if_match!r}")
        if not self.conditional_deletes:
            raise InvalidInput(
                f"{self.url} cannot enforce a conditional delete (if_match): its store "
                "checks no condition on deletes",
                hint="delete without if_match (the last writer wins), or use a remote with "
                "conditional deletes (memory, file, hf://datasets)",
            )
        return if_match

    def _checked(self, request: PutRequest) -> PutRequest:
        """``request``, unless it is conditional and this remote cannot enforce that."""
        if not self.conditional_writes and (request.mode == "create" or request.if_match):
            raise refuse_conditional(self, request.key)
        return request

    def _concurrency(self, asked: int) -> int:
        checked = _check_concurrency(asked)
        return checked if self.max_concurrency is None else min(checked, self.max_concurrency)

    # Batches default to a thread pool over the single operations; a remote with a
    # native asynchronous or bulk API overrides them.

    def _put_many(self, requests: _Requests, concurrency: int) -> PutResults:
        return _in_threads(self._put, requests, concurrency)

    def _apply(
        self, requests: _Requests, deletes: _Deletes, concurrency: int
    ) -> tuple[PutResults, DeleteResults]:
        puts = self._put_many(requests, concurrency) if requests else []
        if all(d.if_match is None for d in deletes):
            return puts, self._delete_many([d.key for d in deletes], concurrency) if deletes else []

        def delete(d: Delete) -> None:
            if d.if_match is None:
                self._delete(d.key)
            else:
                self._delete_if_match(d.key, d.if_match)

        return puts, _in_threads(delete, deletes, concurrency)

    def _get_many(self, keys: _Keys, concurrency: int) -> GetResults:
        return _in_threads(lambda key: self._get(key, None), keys, concurrency)

    def _delete_many(self, keys: _Keys, concurrency: int) -> DeleteResults:
        return _in_threads(self._delete, keys, concurrency)

    def _fetch_many(self, keys: _Keys, concurrency: int) -> FetchResults:
        def fetch(key: str) -> tuple[ObjectInfo, bytes]:
            with self._stream(key, None) as stream:
                return stream.info, b"".join(stream)

        return _in_threads(fetch, keys, concurrency)

    def _download_many(self, items: _Downloads, concurrency: int) -> PutResults:
        return _in_threads(lambda item: self._download(*item), items, concurrency)

    def _download(self, key: str, path: Path) -> ObjectInfo:
        with self._stream(key, None) as stream, path.open("wb") as out:
            for chunk in stream:
                out.write(chunk)
            return stream.info


def _in_threads(
    fn: Callable[[_T], _R], items: list[_T], concurrency: int
) -> list[_R | CargoholdError]:
    def run(item: _T) -> _R | CargoholdError:
        try:
            return fn(item)
        except CargoholdError as exc:
            return exc

    if len(items) <= 1:
        return [run(item) for item in items]
    with ThreadPoolExecutor(
        min(concurrency, len(items)), thread_name_prefix="cargohold-batch"
    ) as pool:
        with signals_blocked():  # the pool's threads start in map (see cargohold._threads)
            results = pool.map(run, items)
        return list(results)


# -- argument checks shared by every remote ---------------------------------------------


def _request(put: Put) -> PutRequest:
    return PutRequest(
        key=normalize_key(put.key),
        data=check_data(put.data),
        mode=check_mode(put.mode, put.if_match),
        if_match=put.if_match,
        metadata=check_metadata(put.metadata),
        content_type=check_content_type(put.content_type, put.key),
    )


def refuse_conditional(remote: Remote, key: str | None = None) -> ConfigError:
    """The error for a create-only or if-match put on a remote that cannot enforce it:
    never a silent last-writer-wins."""
    return ConfigError(
        f"{remote.url} cannot enforce create-only or if-match puts (mode='create', "
        "if_match=...): the Hugging Face bucket API has no conditional write",
        hint="use the bucket through its S3 gateway, hf-s3://OWNER/NAME with S3 keys "
        "generated from a token (it honours If-None-Match and If-Match); the memo's and "
        "shared downloads' single-flight can instead use the PostgreSQL catalog's leases "
        "(CARGOHOLD_CATALOG), but a create-only or if-match put itself cannot",
        key=key,
        remote=remote.url,
    )


def _check_concurrency(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"concurrency must be an int >= 1, not {value!r}")
    return value


def _check_range(value: ByteRange | None) -> ByteRange | None:
    if value is None:
        return None
    try:
        start, stop = value
    except (TypeError, ValueError):
        raise InvalidInput(f"range must be a (start, stop) pair, not {value!r}") from None
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise InvalidInput(f"range start must be an int >= 0, not {start!r}")
    if stop is not None and (not isinstance(stop, int) or isinstance(stop, bool) or stop < start):
        raise InvalidInput(f"range stop must be None or an int >= start ({start}), not {stop!r}")
    return (start, stop)


def check_mode(mode: str, if_match: str | None) -> PutMode:
    if mode not in ("overwrite", "create"):
        raise InvalidInput(f"mode must be 'overwrite' or 'create', not {mode!r}")
    if if_match is not None:
        if mode == "create":
            raise InvalidInput("mode='create' and if_match cannot be combined: pick one")
        if not isinstance(if_match, str) or not if_match:
            raise InvalidInput(f"if_match must be an etag string, not {if_match!r}")
    return "create" if mode == "create" else "overwrite"


def check_data(data: object) -> bytes | memoryview | BinaryIO | Path:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return memoryview(data).cast("B") if isinstance(data, memoryview) else bytes(data)
    if isinstance(data, os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise InvalidInput(f"put was given the path {str(path)!r}, which is not a file")
        return path
    if isinstance(data, str):
        raise InvalidInput(
            "put takes bytes, a binary file object or a pathlib.Path, not str: "
            "encode text with .encode(), or wrap a file name in Path()"
        )
    if isinstance(data, io.TextIOBase):
        raise InvalidInput("put was given a text file: open it in binary mode ('rb')")
    if hasattr(data, "read"):
        return data  # type: ignore[return-value]
    raise InvalidInput(
        f"put takes bytes, a binary file object or a pathlib.Path, not {type(data).__name__}"
    )


@functools.lru_cache(maxsize=1024)
def _guess_type(extension: str) -> str:
    guessed, _ = mimetypes.guess_type("x" + extension, strict=False) if extension else (None, None)
    return guessed or DEFAULT_CONTENT_TYPE


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Lower-case the names and check them and the total size against what S3 stores."""
    if not metadata:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata(
            f"metadata must be a mapping of str to str, not {type(metadata).__name__}"
        )
    clean: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidMetadata(
                f"metadata names and values must be str, got {name!r}: {type(value).__name__}"
            )
        lowered = name.lower()
        if not _METADATA_NAME.fullmatch(lowered):
            raise InvalidMetadata(
                f"metadata name {name!r} may hold only letters, digits, '-' and '_', "
                "starting with a letter or digit"
            )
        if lowered in clean:
            raise InvalidMetadata(f"metadata names {name!r} and another differ only in case")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise InvalidMetadata(f"metadata value for {name!r} contains a control character")
        clean[lowered] = value
        total += len(lowered.encode()) + len(value.encode())
    if total > MAX_METADATA_BYTES:
        raise InvalidMetadata(
            f"metadata is {total} bytes; remotes store at most {MAX_METADATA_BYTES} "
            "(names and values in UTF-8): keep large fields in an object of their own"
        )
    return clean


def check_content_type(content_type: str | None, key: str) -> str:
    """Validate a content type, or guess one from the key's extension."""
    if content_type is None:
        name = key.rsplit("/", 1)[-1]
        return _guess_type(name[name.rfind(".") :].lower() if "." in name else "")
    if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type.strip()):
        raise InvalidInput(
            f"content_type {content_type!r} is not a media type such as 'video/mp4' "
            "or 'text/plain; charset=utf-8'"
        )
    return content_type.strip()
