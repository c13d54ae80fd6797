"""``hf://buckets/OWNER/NAME[/PREFIX]`` - a Hugging Face Storage Bucket, on the Hub's own
bucket API (``pip install 'cargohold[hf]'``).

The URL form is huggingface_hub's (``hf://buckets/NAMESPACE/NAME/PATH``); the token is
``HF_TOKEN`` (else huggingface_hub's login), the endpoint the ``endpoint`` URL parameter,
else ``HF_ENDPOINT``, else https://huggingface.co, read when the remote is built. Every
request is an ``HfApi`` call (``batch_bucket_files``, ``list_bucket_tree``,
``get_bucket_paths_info``, ``download_bucket_files``, ``create_bucket``), except the
ranged reads and metadata records, which are ``GET .../resolve/...`` requests as
huggingface_hub's own ``HfFileSystem`` makes them. huggingface_hub retries them (up to 5
times on 429, 5xx, timeouts and dropped connections): this module adds no retry loop of its
own, but gives each request ``connect_timeout`` and ``request_timeout`` (huggingface_hub's
client has none: a stalled answer would hold a call for ever).
:meth:`HfBucketRemote._error` is the one place their errors are translated.

What a bucket can promise, and what it cannot (docs/huggingface.md has the table):

- **No conditional writes.** The bucket API has no create-only and no if-match: a batch
  line is ``addFile``, ``copyFile`` or ``deleteFile``, nothing else. So
  :attr:`conditional_writes` is False, ``put(mode="create")`` and ``put(if_match=...)``
  raise ConfigError instead of silently overwriting, and the Hold's single-flight
  features (memo, shared downloads) need the PostgreSQL catalog on such a remote.
- **Etags are Xet hashes**: the content's own hash, computed here with ``hf_xet`` before
  the upload, and the ``xetHash`` every listing and ``paths-info`` answer carries. Equal
  bytes, equal etags, whoever wrote them.
- **Batches are not atomic.** ``apply`` (the syncer's batches), ``put_many`` and
  ``delete_many`` go out as ``batch_bucket_files`` calls of at most 1,000 operations,
  never the same path twice in one call. A path the Hub lists as failed is an error for
  that key only; every other operation of that call landed. A listed failure that names no
  path the call sent (none, or spelled otherwise) could be any of them, so it counts as an
  unknown outcome. Any other failure (a dropped
  connection after huggingface_hub's retries, a 5xx) leaves the outcome unknown, so the
  paths are read back: a put counts as done only if its path now holds its hash, a delete
  only if its path is gone. Nothing is reported done that the Hub did not take.
- **Metadata and content types** (the bucket stores neither in a way a client can set)
  live in a small JSON record at ``PREFIX/.cargohold/records/KEY.json``, written in the
  same batch, only when there is metadata or the content type is not the one guessed
  from the key. The record names the Xet hash it describes: a file replaced by another
  tool is not given stale metadata.
- **Deletes** are idempotent: a path already absent is not sent (the Hub does not say
  what it answers for one).
- **Listings** ask for the key prefix (the Hub matches prefixes lexically), hold the
  names in memory and sort them by UTF-8 bytes: the Hub does not document its order.
- **Change feed**: :meth:`HfBucketRemote.follow_changes` follows the bucket's server-sent
  events with huggingface_hub's ``BucketFollower`` (a private module: best effort), so a
  Hold without a catalog drops other instances' stale copies at once.
- **Reads**: ``head`` is one ``paths-info`` request; ``get`` and ``stream`` download by
  the Xet hash ``head`` found, so bytes and info are of one version; a range read checks
  the ``X-Xet-Hash`` the resolve answer carries against that version when the Hub sends it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from huggingface_hub import BucketFile, HfApi, hf_raise_for_status
from huggingface_hub.errors import (
    BucketBatchError,
    BucketNotFoundError,
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
)

# Re-exported by huggingface_hub.utils, but not in a way mypy sees: import from where
# they are defined.
from huggingface_hub.utils._headers import build_hf_headers
from huggingface_hub.utils._http import http_backoff

from .._fork import on_fork
from .._threads import signals_blocked
from ..config import Settings
from ..errors import (
    CargoholdError,
    ConfigError,
    NotFoundError,
    PermissionDenied,
    RemoteError,
    from_os_error,
)
from ..keys import RESERVED_PREFIX, internal_key, normalize_key
from ._base import (
    STREAM_CHUNK,
    ByteRange,
    FetchResults,
    ObjectInfo,
    ObjectStream,
    PutRequest,
    PutResults,
    check_content_type,
)
from .hf import (
    DEFAULT_ENDPOINT,
    HubRemoteBase,
    _BytesStream,
    _server_message,
    _wants_record,
    _WriteResults,
    hub_endpoint,
    hub_id,
    hub_token,
    hub_url_parts,
    record_contents,
)

__all__ = ["HfBucketRemote"]

log = logging.getLogger("cargohold.remotes.hf_buckets")

#: Operations in one ``batch_bucket_files`` call: huggingface_hub's own chunk size, so
#: each call is one POST whose answer names exactly what failed.
BATCH_OPS = 1000
RECORDS = RESERVED_PREFIX + "records/"  # where metadata records live, under the prefix
_RECORD_VERSION = 1
_READ_ATTEMPTS = 3  # reads of a key replaced while it is read are tried this many times
_T = TypeVar("_T")
# How hf_xet reports a token endpoint's refusal (a ConnectionError naming the URL).
_XET_TOKEN_REFUSED = re.compile(r"status client error \((40[13])[^)]*\).*xet-(read|write)-token")


@dataclass(eq=False)
class _Op:
    """One put (``request``) or delete (``request`` None) of a batch."""

    key: str
    request: PutRequest | None
    source: Path | None = None  # the bytes to upload, as a file
    xet_hash: str = ""
    size: int = 0
    record: Path | None = None  # the metadata record to upload with it, as a file
    record_hash: str = ""
    result: ObjectInfo | CargoholdError | None = None
    done: bool = False
    paths: list[str] = field(default_factory=list)  # every bucket path this op writes

    def finish(self, result: ObjectInfo | CargoholdError | None) -> None:
        self.result, self.done = result, True


@dataclass(frozen=True, slots=True)
class _Found:
    """A key's file in the bucket: its info, and what a download needs."""

    info: ObjectInfo
    file: Any  # huggingface_hub's BucketFile


class _FileStream(ObjectStream):
    """Chunks of a downloaded temp file. The file is unlinked once open, so nothing is
    left behind even by a stream that is never closed."""

    def __init__(self, path: Path, info: ObjectInfo) -> None:
        self._fh = path.open("rb")
        with contextlib.suppress(OSError):
            path.unlink()
        self.info = info

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self._fh.read(STREAM_CHUNK):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._fh.close()


def _xet_hashes(paths: list[Path]) -> list[tuple[str, int]]:
    """``(xet hash, size)`` of each file, computed here: the hash an upload gives them."""
    if not paths:
        return []
    import hf_xet

    return [(info.hash, int(info.file_size)) for info in hf_xet.hash_files([str(p) for p in paths])]


class HfBucketRemote(HubRemoteBase):
    """A Storage Bucket on the Hugging Face Hub, through its native API (see the module
    docstring for what it promises)."""

    key_can_be_folder = True
    conditional_writes = False
    stores_metadata = False  # metadata and content types live in records (the module docstring)

    def __init__(
        self,
        bucket_id: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        token: str | bool | None = None,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        create_bucket: bool | None = None,
    ) -> None:
        try:
            import hf_xet  # noqa: F401 - every bucket upload and download is Xet
        except ImportError:
            raise ConfigError(
                "hf://buckets/ remotes need hf_xet",
                hint="pip install hf_xet (huggingface_hub brings it on x86-64 and arm64)",
            ) from None
        settings = settings or Settings.load()
        env = os.environ if environ is None else environ
        self.bucket_id = hub_id(bucket_id, "a bucket")
        self.prefix = prefix.strip("/")
        self.endpoint = hub_endpoint(endpoint, env)
        self._token, self._who = hub_token(token, env)
        self._create = settings.hf_create_repo if create_bucket is None else create_bucket
        self._created = False
        self._settings = settings
        self._timeouts = self.timeouts_of(settings)
        self._api = HfApi(
            endpoint=self.endpoint, token=self._token or False, library_name="cargohold"
        )
        self._create_lock = threading.Lock()
        on_fork(self._after_fork)

    def _after_fork(self) -> None:
        """In a child after fork(): a lock another parent thread held stays held.
        huggingface_hub resets its own HTTP client and Xet session after a fork."""
        self._create_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> HfBucketRemote:
        """Build from ``hf://buckets/OWNER/NAME[/PREFIX][?endpoint=URL]``."""
        hint = "use hf://buckets/OWNER/NAME[/PREFIX], e.g. hf://buckets/ana/app-data/outputs"
        segments, query, prefix = hub_url_parts(url, {"endpoint"})
        if urlsplit(url).netloc != "buckets" or len(segments) < 2 or not all(segments[:2]):
            raise ConfigError(f"{url!r} names no Storage Bucket", hint=hint)
        return cls(
            f"{segments[0]}/{segments[1]}",
            prefix,
            endpoint=query.get("endpoint"),
            settings=settings,
        )

    @property
    def url(self) -> str:
        url = f"hf://buckets/{self.bucket_id}/{self.prefix}".rstrip("/")
        return url + (f"?endpoint={self.endpoint}" if self.endpoint != DEFAULT_ENDPOINT else "")

    def stats(self) -> Mapping[str, object]:
        return {"bucket": self.bucket_id}

    def follow_changes(
        self, on_change: Callable[[str, str | None], None], on_gap: Callable[[], None]
    ) -> Callable[[], None] | None:
        """The bucket's change feed, through huggingface_hub's ``BucketFollower`` (server-
        sent events, best effort: a Hub or a token without it just logs a warning). A
        record's change is reported for its key with an unknown etag. None if this
        huggingface_hub has no follower (it lives in a private module)."""
        try:
            from huggingface_hub._bucket_live_follow import BucketFileChange, BucketFollower
        except ImportError:
            return None
        stopped = threading.Event()

        records = self._path(RECORDS)

        def changes(batch: list[BucketFileChange]) -> None:
            for change in batch:
                path = change.path
                if path.startswith(records) and path.endswith(".json"):  # a key's metadata
                    key, etag = self._key_of(self._path(path[len(records) : -5])), ""
                else:
                    key, etag = self._key_of(path), change.xet_hash or ""
                if key is not None:
                    on_change(key, None if change.op == "delete" else etag)

        follower = BucketFollower(
            endpoint=self.endpoint,
            bucket_id=self.bucket_id,
            token=self._token or False,
            on_changes=changes,
            on_reconcile=on_gap,
            is_alive=lambda: not stopped.is_set(),
        )
        with signals_blocked():  # see cargohold._threads
            follower.start()

        def stop() -> None:
            stopped.set()
            follower.stop()

        return stop

    # -- paths ----------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _record_path(self, key: str) -> str:
        return self._path(f"{RECORDS}{key}.json")

    def _key_of(self, path: str) -> str | None:
        """The key stored at bucket ``path``: None for records and for names that are not
        valid keys (files another tool put there)."""
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix) + 1 :]
        if path.startswith(RECORDS):
            return None
        try:
            if path.startswith(RESERVED_PREFIX):  # cargohold's own (leases, checks)
                return path if internal_key(path[len(RESERVED_PREFIX) :]) == path else None
            return path if normalize_key(path) == path else None
        except CargoholdError:
            return None

    # -- calls ----------------------------------------------------------------------------

    def _with_bucket(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``; if the bucket is missing and ``hf_create_repo`` is on, create it
        (private) once and run ``fn`` again. Its requests carry this remote's timeouts."""
        try:
            with self._hub_timeouts():
                return fn()
        except BucketNotFoundError:
            if not self._create or self._created:
                raise
        with self._create_lock, self._hub_timeouts():
            if not self._created:
                self._api.create_bucket(self.bucket_id, private=True, exist_ok=True)
                self._created = True
                log.info(
                    "cargohold: created the private bucket %s at %s", self.bucket_id, self.endpoint
                )
        with self._hub_timeouts():
            return fn()

    def _paths_info(self, paths: Iterable[str]) -> dict[str, Any]:
        """The bucket's files among ``paths`` (missing ones left out), by path."""
        wanted = list(dict.fromkeys(paths))
        if not wanted:
            return {}
        return self._with_bucket(
            lambda: {f.path: f for f in self._api.get_bucket_paths_info(self.bucket_id, wanted)}
        )

    def _resolve(self, path: str, headers: Mapping[str, str] | None = None) -> Any:
        """``GET /buckets/ID/resolve/PATH`` (as HfFileSystem reads a bucket file), with
        huggingface_hub's retries and this remote's timeouts. Raises its errors."""
        with self._hub_timeouts():
            response = http_backoff(
                "GET",
                f"{self.endpoint}/buckets/{self.bucket_id}/resolve/{quote(path, safe='')}",
                headers={**build_hf_headers(token=self._token or False), **(headers or {})},
            )
        if response.status_code != 416:
            hf_raise_for_status(response)
        return response

    def _download(self, key: str, path: Path) -> ObjectInfo:
        found = self._found(key)
        self._download_files([(found, path)])
        return found.info

    def _download_files(self, items: list[tuple[_Found, Path]]) -> None:
        try:
            with self._hub_timeouts():
                self._api.download_bucket_files(
                    self.bucket_id, [(found.file, str(path)) for found, path in items]
                )
        except Exception as exc:  # noqa: BLE001 - translated in the one place
            self._raise(exc, items[0][0].info.key if len(items) == 1 else None, "read")

    # -- reads ----------------------------------------------------------------------------

    def _locate(self, keys: list[str]) -> dict[str, _Found]:
        """The keys that exist, with their info (metadata records read and checked)."""
        paths = {key: (self._path(key), self._record_path(key)) for key in keys}
        entries = self._paths_info(p for pair in paths.values() for p in pair)
        found: dict[str, _Found] = {}
        for key, (data, record) in paths.items():
            file = entries.get(data)
            if file is None:
                continue
            metadata: dict[str, str] = {}
            content_type = check_content_type(None, key)
            if record in entries:
                loaded = self._read_record(key, record, file.xet_hash)
                if loaded is not None:
                    metadata, content_type = loaded
            info = ObjectInfo(
                key=key,
                size=int(file.size),
                etag=str(file.xet_hash),
                last_modified=file.uploaded_at or datetime.now(UTC),
                metadata=metadata,
                content_type=content_type,
            )
            found[key] = _Found(info, file)
        return found

    def _read_record(self, key: str, path: str, xet_hash: str) -> tuple[dict[str, str], str] | None:
        try:
            raw = self._resolve(path).content
        except EntryNotFoundError:
            return None  # deleted since paths-info listed it
        return record_contents(raw, key, "xet_hash", xet_hash)

    def _found(self, key: str) -> _Found:
        found = self._locate([key]).get(key)
        if found is None:
            raise NotFoundError(f"no object {key!r} in {self.url}", key=key, remote=self.url)
        return found

    def _head(self, key: str) -> ObjectInfo:
        return self._guard(lambda: self._found(key).info, key, "read")

    def _ranged(self, found: _Found, byte_range: ByteRange) -> bytes:
        """``data[start:stop]`` of the version ``found`` names."""
        start, stop = byte_range
        size = found.info.size
        stop = size if stop is None else min(stop, size)
        if start >= stop:
            return b""
        response = self._resolve(self._path(found.info.key), {"Range": f"bytes={start}-{stop - 1}"})
        served = response.headers.get("X-Xet-Hash")
        if response.status_code == 416 or (served is not None and served != found.info.etag):
            # Replaced since paths-info answered: these bytes are not of that version.
            raise _Replaced()
        data: bytes = response.content
        return data[start:stop] if response.status_code == 200 else data

    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        return self._guard(lambda: self._open_stream(key, range), key, "read")

    def _open_stream(self, key: str, byte_range: ByteRange | None) -> ObjectStream:
        for _ in range(_READ_ATTEMPTS):
            found = self._found(key)
            if byte_range is not None:
                try:
                    return _BytesStream(self._ranged(found, byte_range), found.info)
                except _Replaced:
                    continue
            fd, name = tempfile.mkstemp(prefix="cargohold-hfb-", dir=self._settings.temp_dir)
            os.close(fd)
            path = Path(name)
            try:
                self._download_files([(found, path)])
                return _FileStream(path, found.info)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        raise RemoteError(
            f"{key!r} in {self.url} was replaced during every read of it",
            hint="another writer rewrites it without pause; try again",
            key=key,
            remote=self.url,
        )

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        # The Hub matches the prefix lexically, as a key prefix does.
        where = self._path(prefix) if prefix or not self.prefix else self.prefix + "/"
        found: list[ObjectInfo] = []
        try:
            entries = self._with_bucket(
                lambda: list(
                    self._api.list_bucket_tree(self.bucket_id, where or None, recursive=True)
                )
            )
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, prefix or None, "list")
        for entry in entries:
            if not isinstance(entry, BucketFile):
                continue  # a folder
            key = self._key_of(entry.path)
            if key is not None and key.startswith(prefix):
                modified = entry.uploaded_at or datetime.now(UTC)
                found.append(ObjectInfo(key, int(entry.size), str(entry.xet_hash), modified))
        found.sort(key=lambda info: info.key.encode())
        yield from found

    def _fetch_many(self, keys: list[str], concurrency: int) -> FetchResults:
        with tempfile.TemporaryDirectory(
            prefix="cargohold-hfb-", dir=self._settings.temp_dir
        ) as tmp:
            paths = [Path(tmp) / str(i) for i in range(len(keys))]
            results = self._download_many(list(zip(keys, paths, strict=True)), concurrency)
            out: FetchResults = []
            for result, path in zip(results, paths, strict=True):
                if isinstance(result, CargoholdError):
                    out.append(result)
                    continue
                try:
                    out.append((result, path.read_bytes()))
                except OSError as exc:
                    out.append(from_os_error(exc, f"read {path}", key=result.key))
            return out

    def _download_many(self, items: list[tuple[str, Path]], concurrency: int) -> PutResults:
        """One ``paths-info`` for every key, one Xet download group for every file."""
        try:
            located = self._locate(list(dict.fromkeys(key for key, _ in items)))
        except Exception as exc:  # noqa: BLE001 - translated in the one place
            return [self._error(exc, None, "read")] * len(items)
        present = [(located[key], path) for key, path in items if key in located]
        error: CargoholdError | None = None
        if present:
            try:
                self._download_files(present)
            except CargoholdError as exc:
                error = exc
        results: PutResults = []
        for key, _ in items:
            if key not in located:
                results.append(
                    NotFoundError(f"no object {key!r} in {self.url}", key=key, remote=self.url)
                )
            else:
                results.append(error or located[key].info)
        return results

    # -- writes ---------------------------------------------------------------------------

    def _write(self, ops: list[tuple[str, PutRequest | None]]) -> _WriteResults:
        return self._submit([_Op(key, request) for key, request in ops])

    def _submit(self, ops: list[_Op]) -> list[ObjectInfo | CargoholdError | None]:
        """Send ``ops`` in calls of at most :data:`BATCH_OPS` operations, one key at most
        once a call (a later op on the same key goes in a later call, so it lands last)."""
        tmp = Path(tempfile.mkdtemp(prefix="cargohold-hfb-", dir=self._settings.temp_dir))
        try:
            self._prepare([op for op in ops if op.request is not None], tmp)
            pending = [op for op in ops if not op.done]
            while pending:
                taken, left, keys, count = [], [], set(), 0
                for op in pending:
                    size = 1 if op.request is None else 2  # a put may add or drop a record
                    if op.key in keys or count + size > BATCH_OPS:
                        left.append(op)
                    else:
                        taken.append(op)
                        keys.add(op.key)
                        count += size
                self._send(taken)
                pending = left
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return [op.result for op in ops]

    def _prepare(self, puts: list[_Op], tmp: Path) -> None:
        """Give each put its bytes as a file, its Xet hash and size, and its metadata
        record (as a file, with its hash) if it needs one. A put whose bytes cannot be
        read is finished with that error."""
        ready: list[_Op] = []
        for i, op in enumerate(puts):
            request = op.request
            assert request is not None
            try:
                if isinstance(request.data, Path):
                    op.source = request.data
                else:
                    op.source = tmp / f"{i}.data"
                    with op.source.open("wb") as out:
                        for chunk in request.chunks():
                            out.write(chunk)
            except OSError as exc:
                op.finish(from_os_error(exc, f"read the bytes of {op.key!r}", key=op.key))
                continue
            ready.append(op)
        try:
            hashes = _xet_hashes([op.source for op in ready if op.source is not None])
        except Exception as exc:  # noqa: BLE001 - hf_xet's errors: the bytes could not be read
            for op in ready:
                op.finish(self._error(exc, op.key, "hash"))
            return
        with_records: list[_Op] = []
        for op, (xet_hash, size) in zip(ready, hashes, strict=True):
            op.xet_hash, op.size = xet_hash, size
            request = op.request
            assert request is not None
            if _wants_record(request):
                op.record = tmp / f"{len(with_records)}.record.json"
                op.record.write_text(
                    json.dumps(
                        {
                            "v": _RECORD_VERSION,
                            "key": op.key,
                            "xet_hash": xet_hash,
                            "size": size,
                            "metadata": request.metadata,
                            "content_type": request.content_type,
                        },
                        ensure_ascii=False,
                        sort_keys=True,
                    ),
                    encoding="utf-8",
                )
                with_records.append(op)
        for op, (record_hash, _) in zip(
            with_records, _xet_hashes([op.record for op in with_records if op.record]), strict=True
        ):
            op.record_hash = record_hash

    def _send(self, ops: list[_Op]) -> None:
        """One ``batch_bucket_files`` call for ``ops`` (distinct keys); finishes each op."""
        try:
            present = self._paths_info(
                [self._record_path(op.key) for op in ops]
                + [self._path(op.key) for op in ops if op.request is None]
            )
        except Exception as exc:  # noqa: BLE001
            error = self._error(exc, None, "write")
            for op in ops:
                op.finish(error)
            return
        adds: list[tuple[str | Path | bytes, str]] = []
        deletes: list[str] = []
        expected: dict[str, str | None] = {}  # path -> its xet hash once applied (None: gone)
        for op in ops:
            data, record = self._path(op.key), self._record_path(op.key)
            if op.request is None:
                gone = [p for p in (data, record) if p in present]
                deletes += gone
                op.paths = gone
                expected.update(dict.fromkeys(gone))
                if not gone:
                    op.finish(None)  # idempotent: nothing to delete
                continue
            assert op.source is not None
            adds.append((op.source, data))
            expected[data] = op.xet_hash
            op.paths = [data]
            if op.record is not None:
                adds.append((op.record, record))
                expected[record] = op.record_hash
                op.paths.append(record)
            elif record in present:
                deletes.append(record)  # an older put's metadata must not outlive it
                expected[record] = None
                op.paths.append(record)
        sending = [op for op in ops if not op.done]
        if not sending:
            return
        failed: dict[str, CargoholdError | str] = {}  # str: the reason the Hub gave
        try:
            self._with_bucket(
                lambda: self._api.batch_bucket_files(
                    self.bucket_id, add=adds or None, delete=deletes or None
                )
            )
        except BucketBatchError as exc:
            for failure in exc.failures:
                failed[str(failure.get("path"))] = str(failure.get("error") or "no reason given")
            if not failed.keys() <= expected.keys():
                # A failure naming no path this call sent (none, or spelled otherwise) may
                # be any of them: every path is read back, as after an unknown outcome.
                reasons = "; ".join(f"{path}: {error}" for path, error in failed.items())
                failed = dict.fromkeys(expected, reasons)
            # A delete the Hub refused of a path that is gone anyway is done.
            failed = self._still_failed(failed, expected)
        except Exception as exc:  # noqa: BLE001 - the outcome is unknown: read it back
            error = self._error(exc, None, "write")
            unknown: dict[str, CargoholdError | str] = dict.fromkeys(expected, error)
            failed = self._still_failed(unknown, expected)
        for op in sending:
            errors = [(p, failed[p]) for p in op.paths if p in failed]
            if errors:
                path, why = errors[0]
                op.finish(
                    why
                    if isinstance(why, CargoholdError)
                    else RemoteError(
                        f"the Hub did not apply the change of {path!r} in {self.url}: {why}",
                        hint="it is sent again with the next batch",
                        key=op.key,
                        remote=self.url,
                    )
                )
            elif op.request is None:
                op.finish(None)
            else:
                request = op.request
                op.finish(
                    ObjectInfo(
                        op.key,
                        op.size,
                        op.xet_hash,
                        datetime.now(UTC),
                        dict(request.metadata),
                        request.content_type,
                    )
                )

    def _still_failed(
        self, failed: dict[str, CargoholdError | str], expected: Mapping[str, str | None]
    ) -> dict[str, CargoholdError | str]:
        """Of ``failed`` paths, those the bucket does not show as ``expected`` now (all of
        them if it cannot be asked)."""
        if not failed:
            return failed
        try:
            now = self._paths_info(failed)
        except Exception:  # noqa: BLE001 - cannot tell: nothing may count as done
            return failed
        return {
            path: error
            for path, error in failed.items()
            if (now[path].xet_hash if path in now else None) != expected.get(path, "?")
        }

    # -- errors -----------------------------------------------------------------------------

    def _guard(self, fn: Callable[[], _T], key: str | None, action: str) -> _T:
        try:
            return fn()
        except CargoholdError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated in the one place
            self._raise(exc, key, action)

    def _translate(self, exc: BaseException, key: str | None, action: str) -> CargoholdError:
        """Translate a huggingface_hub, HTTP or hf_xet error: the one place this module
        does it."""
        context: dict[str, Any] = {"key": key, "remote": self.url}
        bucket = f"buckets/{self.bucket_id}"
        where = bucket if key is None else f"{key!r} in {bucket}"
        if isinstance(exc, BucketNotFoundError | RepositoryNotFoundError):
            return ConfigError(
                f"the bucket {self.bucket_id!r} does not exist at {self.endpoint}, or it is "
                f"private and {self._who} cannot see it",
                hint=f"create it at {self.endpoint}/new-bucket, or set "
                "CARGOHOLD_HF_CREATE_REPO=true (hf_create_repo) to have cargohold create it "
                "as a private bucket; check the name and HF_TOKEN",
                **context,
            )
        if isinstance(exc, EntryNotFoundError):
            return NotFoundError(f"no object {where}", **context)
        refused = _XET_TOKEN_REFUSED.search(str(exc)) if isinstance(exc, OSError) else None
        if refused is not None:  # hf_xet asked for its token itself, and the Hub said no
            return PermissionDenied(
                f"{self._who} may not {action} {bucket}: the Hub refused it a Xet "
                f"{refused[2]} token ({refused[1]})",
                hint="use a token with write access to this bucket",
                **context,
            )
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            message = _server_message(exc)
            if status == 401:
                return PermissionDenied(
                    f"cannot {action} {bucket}: {self._who} was refused by {self.endpoint}",
                    hint="set HF_TOKEN to a valid token with write access "
                    "(huggingface.co/settings/tokens)",
                    **context,
                )
            if status == 403:
                return PermissionDenied(
                    f"{self._who} may not {action} {bucket} ({message or 'forbidden'})",
                    hint="use a token with write access to this bucket",
                    **context,
                )
            if status == 404:
                return NotFoundError(f"no object {where}", **context)
        return self._other_error(exc, key, action, where)


class _Replaced(Exception):
    """A ranged read met a newer version than the one it was asked for."""
