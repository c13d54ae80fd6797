"""``s3://bucket/prefix`` - any S3-compatible store, through obstore.

AWS, Cloudflare R2, Tigris, MinIO, SeaweedFS and Hugging Face Storage Buckets. obstore
(Rust's ``object_store``) was chosen over boto3 for speed: on these machines it did about
4x the small PUTs per second at a sixth of the CPU per request (see docs/benchmarks.md).

URL query parameters (and the constructor's arguments). What they say always wins over
any ``AWS_*`` variable, including the ones obstore reads by itself (``AWS_ENDPOINT_URL_S3``,
``AWS_VIRTUAL_HOSTED_STYLE_REQUEST``, ``AWS_SKIP_SIGNATURE``, ``AWS_SESSION_TOKEN``,
``AWS_ALLOW_HTTP``); a variable only fills in what they leave unsaid:

=====================  ===============================================================
``endpoint``           e.g. ``http://127.0.0.1:8333``; else ``AWS_ENDPOINT_URL_S3``,
                       ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT``; else AWS
``region``             else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else ``us-east-1``
``path_style``         ``true``/``false``: bucket in the path rather than the host name;
                       default true
``access_key_id``,     credentials, taken as one set: when the URL gives any of them it
``secret_access_key``  gives the key pair (and a token only if it names one), and no
``session_token``      variable adds to them; else all three come from
                       ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
                       ``AWS_SESSION_TOKEN``, which are preferred: they never end up in logs
``anonymous``          ``true``: send unsigned requests (public buckets)
``allow_http``         ``true``: allow plain http to an endpoint that is not loopback
=====================  ===============================================================

Plain ``http://`` endpoints are allowed for loopback addresses only, unless
``allow_http=true``: credentials and data would otherwise cross a network unencrypted.

Large objects stream: puts of more than 8 MiB go up in 8 MiB parts (a multipart upload),
gets are read in 1 MiB chunks, so memory stays bounded whatever the size. The exception
is a conditional put (``create`` or ``if_match``): S3 only checks conditions on a single
PUT, so obstore sends such an object in one request, holding it in memory.

Throttling (429, 503 SlowDown), 5xx and dropped connections are retried by obstore with
exponential backoff and jitter, for at most ``retry_timeout`` seconds in total; after
that the request fails with RemoteUnavailable.

After ``os.fork()`` (gunicorn ``--preload``, ``multiprocessing`` with fork), a child of a
process that has already made an obstore call does its S3 requests through botocore
instead (:mod:`cargohold.remotes._s3_boto`), with the same settings and the same errors.
obstore runs its requests on one tokio runtime per process, a static started by the
first call, and tokio does not survive fork (tokio-rs/tokio#4301, obstore#214): its
worker threads are gone in the child, so any obstore call there waits forever, even on a
store built after the fork. Worse, the child shares the runtime's epoll descriptor with
the parent, so a child that tries can steal the wake-ups of the parent's requests and hang
the parent too. A process that forks before any obstore call starts its own runtime and
keeps obstore. (obstore used directly by the app, outside cargohold, is not seen: such an
app should fork before using it.) In botocore mode batches run on a thread pool, the
retry budget is ``max_retries`` attempts without the ``retry_timeout`` total, and
``request_timeout`` bounds each wait for the socket rather than the whole request.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import MemoryStore, S3Store

from .._fork import abandon, on_fork
from .._threads import signals_blocked
from ..config import Settings, parse_bool
from ..errors import (
    AlreadyExists,
    CargoholdError,
    ConfigError,
    NotFoundError,
    PermissionDenied,
    PreconditionFailed,
    RemoteError,
    RemoteUnavailable,
    from_os_error,
)
from ._aio import LoopThread, bounded_gather
from ._base import (
    STREAM_CHUNK,
    ByteRange,
    DeleteResults,
    FetchResults,
    GetResults,
    ObjectInfo,
    ObjectStream,
    PutRequest,
    PutResults,
    Remote,
)

if TYPE_CHECKING:
    from obstore import GetOptions, GetResult, ObjectMeta, PutMode
    from obstore.store import S3Credential

    from ._s3_boto import BotoS3

__all__ = ["S3Remote"]

PART_SIZE = 8 * 1024 * 1024
PART_CONCURRENCY = 8
_QUERY_KEYS = {
    "endpoint",
    "region",
    "path_style",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "anonymous",
    "allow_http",
}
# Metadata values travel as HTTP headers, which carry ASCII only: encode everything else
# (and '%' itself) as %XX, and decode on the way back.
_SAFE_METADATA = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_STATUS = re.compile(r"status code: (\d{3})|status: (\d{3})")
_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


class _Obstore:
    """Whether obstore may be used in this process (see the module docstring)."""

    started = False  # this process made an obstore call: its tokio runtime may be running
    inherited = False  # forked from a process where it was: obstore must not be touched
    lock = threading.Lock()  # guards building an S3Remote's botocore client
    starting = threading.Lock()  # guards start()

    @classmethod
    def start(cls) -> None:
        """Mark obstore used in this process and start its tokio runtime with the stop
        signals blocked. obstore starts the runtime (and its worker threads) on the first
        call of any store, on whichever thread makes it, often the app's main thread (a
        read-through); started here, the workers inherit the blocked mask, so the kernel
        never gives them the host's SIGTERM (see cargohold._threads). A blocking-pool
        thread tokio adds later, from a thread of the app that calls obstore (a DNS
        lookup), does not: obstore has no hook for that."""
        with cls.starting:
            if cls.started:
                return
            cls.started = True  # first: a fork from here on must not use obstore
            with signals_blocked():
                obstore.put(MemoryStore(), "runtime", b"")


def _after_fork_in_child() -> None:
    _Obstore.inherited = _Obstore.inherited or _Obstore.started
    _Obstore.lock = threading.Lock()  # the parent's may have been held by a thread now gone
    _Obstore.starting = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _unquote_etag(etag: str | None) -> str:
    return (etag or "").removeprefix("W/").strip('"')


class _S3Stream(ObjectStream):
    def __init__(self, remote: S3Remote, key: str, result: GetResult) -> None:
        self._remote = remote
        self._key = key
        self._result = result
        self.info = remote._info_from(key, result.meta, result.attributes)

    def __iter__(self) -> Iterator[bytes]:
        chunks = self._result.stream(min_chunk_size=STREAM_CHUNK)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - translated below, the one place
                self._remote._raise(exc, self._key, "read")
            yield chunk


@dataclass(frozen=True, slots=True)
class _StaticCredentials:
    """One set of S3 keys, handed to obstore as its credential provider (called once:
    the credential never expires). The repr leaves the secret out."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)

    def __call__(self) -> S3Credential:
        return {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "token": self.token,
            "expires_at": None,
        }


def _credentials(
    access_key_id: str | None,
    secret_access_key: str | None,
    session_token: str | None,
    env: Mapping[str, str],
) -> _StaticCredentials | None:
    """The keys to sign with, taken as one set: all from the URL or arguments when any of
    them is given there (a variable never completes or adds to them), else all from the
    ``AWS_*`` variables; None when neither has a key pair."""
    if access_key_id or secret_access_key or session_token:
        if not (access_key_id and secret_access_key):
            given = "access_key_id" if access_key_id else "secret_access_key"
            if session_token and not (access_key_id or secret_access_key):
                given = "session_token"
            raise ConfigError(
                f"S3 credentials given in part: {given} without "
                f"{'secret_access_key' if access_key_id else 'access_key_id'}",
                hint="give access_key_id and secret_access_key together (in the URL or as "
                "arguments), or neither and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            )
        return _StaticCredentials(access_key_id, secret_access_key, session_token or None)
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        return None
    token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_TOKEN") or None
    return _StaticCredentials(key, secret, token)


class S3Remote(Remote):
    """A bucket (and optional prefix) in an S3-compatible store. See the module docstring."""

    # obstore's delete sends no precondition, and S3-compatible stores differ on If-Match
    # for DeleteObject (AWS honours it since 2024; the Hub's S3 gateway documents
    # conditions on PutObject only; SeaweedFS and MinIO do not say): refused, not guessed.
    conditional_deletes = False

    _boto_s3: BotoS3 | None = None  # built on first use in a child forked after obstore ran

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        path_style: bool | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        anonymous: bool = False,
        allow_http: bool = False,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        settings = settings or Settings.load()
        env = os.environ if environ is None else environ
        if len(bucket) < 3:
            raise ConfigError(
                f"S3 bucket name {bucket!r} is too short: names have 3 to 63 characters"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = (
            endpoint
            or env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or env.get("AWS_ENDPOINT")
        )
        # obstore always starts from AmazonS3Builder::from_env(), so any AWS_* variable it
        # knows applies unless the config below sets that key itself; and some variables
        # beat a config key outright (AWS_ENDPOINT_URL_S3 beats `endpoint`). So every
        # setting the URL or an argument can give is resolved here (explicit > variable >
        # default) and always written, leaving obstore's own reading of the environment
        # nothing to decide: this is the one place that happens.
        client: dict[str, Any] = {  # replaces, not merges with, the AWS_* client variables
            "connect_timeout": timedelta(seconds=settings.connect_timeout),
            "timeout": timedelta(seconds=settings.request_timeout),
            "user_agent": "cargohold",
        }
        use_path_style = True if path_style is None else path_style
        config: dict[str, Any] = {"virtual_hosted_style_request": not use_path_style}
        if self.endpoint:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"S3 endpoint {self.endpoint!r} is not an http(s) URL",
                    hint="use a form like https://s3.example.com or http://127.0.0.1:8333",
                )
            if parts.scheme == "http":
                if not (_is_loopback(parts.hostname) or allow_http):
                    raise ConfigError(
                        f"S3 endpoint {self.endpoint!r} is plain http to a host that is not "
                        "loopback: credentials and data would cross the network unencrypted",
                        hint="use https, or add allow_http=true to the URL if the network is private",
                    )
                client["allow_http"] = True
            if use_path_style:
                config["endpoint"] = self.endpoint.rstrip("/")
            else:
                config["endpoint"] = f"{parts.scheme}://{bucket}.{parts.netloc}"
            config["aws_endpoint_url_s3"] = config["endpoint"]
        config["region"] = (
            region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        config["skip_signature"] = anonymous
        credentials = (
            None
            if anonymous
            else _credentials(access_key_id, secret_access_key, session_token, env)
        )
        if credentials is None and self.endpoint and not anonymous:
            # Only AWS has instance and container credentials to fall back on; against any
            # other store, obstore would wait on AWS's metadata address and then fail.
            missing = (
                "AWS_SECRET_ACCESS_KEY" if env.get("AWS_ACCESS_KEY_ID") else "AWS_ACCESS_KEY_ID"
            )
            raise ConfigError(
                f"no S3 credentials for {self.endpoint}: {missing} is not set",
                hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or access_key_id and "
                "secret_access_key in the URL), or add anonymous=true for a public bucket",
            )
        self._access_key_id = credentials.access_key_id if credentials else None
        retry: dict[str, Any] = {
            "max_retries": settings.max_retries,
            "retry_timeout": timedelta(seconds=settings.retry_timeout),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=5),
                "base": 2,
            },
        }
        self._store_options: dict[str, Any] = {
            "prefix": self.prefix or None,
            "config": config,
            "client_options": client,
            "retry_config": retry,
            # Static keys go in as a provider, not as config keys: with config keys,
            # obstore would still add AWS_SESSION_TOKEN from the environment to keys
            # the URL gave, a token that belongs to other keys.
            "credential_provider": credentials,
        }
        self._store = self._new_store()
        self._loop = LoopThread(f"cargohold-s3-{bucket}")
        on_fork(self._after_fork)

    def _new_store(self) -> S3Store:
        try:
            return S3Store(self.bucket, **self._store_options)
        except Exception as exc:
            raise ConfigError(f"cannot configure S3 bucket {self.bucket!r}: {exc}") from exc

    @property
    def _store(self) -> S3Store:
        """The obstore store; asking for it marks obstore as used in this process."""
        if not _Obstore.started:
            _Obstore.start()
        return self._obstore_store

    @_store.setter
    def _store(self, store: S3Store) -> None:
        self._obstore_store = store

    def _boto(self) -> BotoS3 | None:
        """The botocore client to use instead of obstore, in a child forked after obstore
        ran in its parent; None everywhere else (see the module docstring)."""
        if not _Obstore.inherited:
            return None
        with _Obstore.lock:
            if self._boto_s3 is None:
                from ._s3_boto import BotoS3

                self._boto_s3 = BotoS3(self, self._raise)
            return self._boto_s3

    def _after_fork(self) -> None:
        """In a child after fork(): the store's connections and the event loop's thread
        are the parent's. A new store and loop (see :mod:`cargohold._fork`), and a new
        botocore client if this process (a child itself) had one."""
        abandon(self._obstore_store, self._loop, self._boto_s3)
        self._store = self._new_store()  # building one starts no runtime: safe here
        self._loop = LoopThread(f"cargohold-s3-{self.bucket}")
        self._boto_s3 = None

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> S3Remote:
        """Build from ``s3://bucket/prefix?endpoint=...`` (see the module docstring)."""
        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigError(f"{url!r} names no bucket", hint="use s3://BUCKET[/PREFIX]")
        return cls(parts.netloc, unquote(parts.path), settings=settings, **url_options(url))

    @property
    def url(self) -> str:
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}?endpoint={self.endpoint}" if self.endpoint else base

    # -- reads ------------------------------------------------------------------------

    def _get(self, key: str, range: ByteRange | None) -> bytes:
        if (boto := self._boto()) is not None:
            return boto.get(key, range)
        if range is not None and range[1] == range[0]:
            self._head(key)  # an empty range still needs the object to exist
            return b""
        try:
            result = obstore.get(self._store, key, options=self._range_options(range))
            return bytes(result.bytes())
        except Exception as exc:  # noqa: BLE001
            if range is not None and _status(exc) == 416:
                return b""  # the range starts past the end: like data[start:stop]
            self._raise(exc, key, "read")

    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        if (boto := self._boto()) is not None:
            return boto.stream(key, range)
        if range is not None and range[1] == range[0]:
            return _EmptyStream(self._head(key))
        try:
            result = obstore.get(self._store, key, options=self._range_options(range))
        except Exception as exc:  # noqa: BLE001
            if range is not None and _status(exc) == 416:
                return _EmptyStream(self._head(key))
            self._raise(exc, key, "read")
        return _S3Stream(self, key, result)

    @staticmethod
    def _range_options(range: ByteRange | None) -> GetOptions | None:
        if range is None:
            return None
        start, stop = range
        if stop is None:
            return {"range": {"offset": start}}
        return {"range": (start, stop)}

    def _head(self, key: str) -> ObjectInfo:
        # A GET with head=True is a HEAD request that also returns the attributes
        # (metadata, content type), which obstore's head() drops.
        if (boto := self._boto()) is not None:
            return boto.head(key)
        try:
            result = obstore.get(self._store, key, options={"head": True})
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, key, "read")
        return self._info_from(key, result.meta, result.attributes)

    def _info_from(self, key: str, meta: ObjectMeta, attributes: Mapping[str, str]) -> ObjectInfo:
        metadata: dict[str, str] = {}
        content_type = None
        for name, value in attributes.items():
            if name == "Content-Type":
                content_type = value
            elif name[:1].islower():  # user metadata; other attributes are capitalised headers
                metadata[name] = unquote(value)
        return ObjectInfo(
            key=key,
            size=meta["size"],
            etag=_unquote_etag(meta["e_tag"]),
            last_modified=meta["last_modified"],
            metadata=metadata,
            content_type=content_type,
        )

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        if (boto := self._boto()) is not None:
            return boto.list(prefix)
        return self._obstore_list(prefix)

    def _obstore_list(self, prefix: str) -> Iterator[ObjectInfo]:
        # obstore matches prefixes by whole segments ('a/b' lists 'a/b/...', not 'a/bc').
        # For a partial last segment, list its folder from just before the prefix, filter,
        # and stop at the first key past it (listings are in byte order).
        folder, _, partial = prefix.rpartition("/")
        offset = None
        if partial:
            before = partial[:-1] + chr(ord(partial[-1]) - 1) if ord(partial[-1]) > 0x20 else ""
            offset = f"{folder}/{before}" if folder else before
            offset = offset or None
        try:
            pages = obstore.list(self._store, folder or None, offset=offset, chunk_size=1000)
            for page in pages:
                for meta in page:
                    key = meta["path"]
                    if key.startswith(prefix):
                        yield ObjectInfo(
                            key=key,
                            size=meta["size"],
                            etag=_unquote_etag(meta["e_tag"]),
                            last_modified=meta["last_modified"],
                        )
                    elif partial and key > prefix:
                        return
        except CargoholdError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, prefix or None, "list")

    # -- writes -----------------------------------------------------------------------

    def _put_args(self, request: PutRequest) -> dict[str, Any]:
        attributes: dict[str, str] = {"Content-Type": request.content_type}
        for name, value in request.metadata.items():
            attributes[name] = quote(value, safe=_SAFE_METADATA)
        mode: PutMode = request.mode
        if request.if_match is not None:
            mode = {"e_tag": f'"{request.if_match}"'}
        # obstore reads bytes, paths and file objects itself, in parts when large.
        return {
            "path": request.key,
            "file": request.data,
            "attributes": attributes,
            "mode": mode,
            "chunk_size": PART_SIZE,
            "max_concurrency": PART_CONCURRENCY,
        }

    def _put_result(self, request: PutRequest, size: int | None, etag: str | None) -> ObjectInfo:
        if size is None:  # a file object of unknown length: ask the store
            size = self._head(request.key).size
        return ObjectInfo(
            key=request.key,
            size=size,
            etag=_unquote_etag(etag),
            last_modified=datetime.now(UTC),
            metadata=dict(request.metadata),
            content_type=request.content_type,
        )

    def _put(self, request: PutRequest) -> ObjectInfo:
        if (boto := self._boto()) is not None:
            return boto.put(request)
        size = request.size_hint()
        try:
            result = obstore.put(self._store, **self._put_args(request))
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, request.key, "write")
        return self._put_result(request, size, result["e_tag"])

    # -- batches: many requests on one event loop ---------------------------------------

    def _put_many(self, requests: list[PutRequest], concurrency: int) -> PutResults:
        if self._boto() is not None:  # botocore is synchronous: the base class's threads
            return super()._put_many(requests, concurrency)

        async def one(request: PutRequest) -> ObjectInfo | CargoholdError:
            size = request.size_hint()
            try:
                result = await obstore.put_async(self._store, **self._put_args(request))
                return self._put_result(request, size, result["e_tag"])
            except Exception as exc:  # noqa: BLE001
                return self._error(exc, request.key, "write")

        return self._loop.run(bounded_gather(one, requests, concurrency))

    def _get_many(self, keys: list[str], concurrency: int) -> GetResults:
        if self._boto() is not None:
            return super()._get_many(keys, concurrency)

        async def one(key: str) -> bytes | CargoholdError:
            try:
                result = await obstore.get_async(self._store, key)
                return bytes(await result.bytes_async())
            except Exception as exc:  # noqa: BLE001
                return self._error(exc, key, "read")

        return self._loop.run(bounded_gather(one, keys, concurrency))

    def _fetch_many(self, keys: list[str], concurrency: int) -> FetchResults:
        if self._boto() is not None:
            return super()._fetch_many(keys, concurrency)

        async def one(key: str) -> tuple[ObjectInfo, bytes] | CargoholdError:
            try:
                result = await obstore.get_async(self._store, key)
                info = self._info_from(key, result.meta, result.attributes)
                return info, bytes(await result.bytes_async())
            except Exception as exc:  # noqa: BLE001
                return self._error(exc, key, "read")

        return self._loop.run(bounded_gather(one, keys, concurrency))

    def _download_many(self, items: list[tuple[str, Path]], concurrency: int) -> PutResults:
        if self._boto() is not None:
            return super()._download_many(items, concurrency)

        async def one(item: tuple[str, Path]) -> ObjectInfo | CargoholdError:
            key, path = item
            try:
                result = await obstore.get_async(self._store, key)
                info = self._info_from(key, result.meta, result.attributes)
                out = path.open("wb")
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, OSError) and exc.filename == str(path):
                    return from_os_error(exc, f"write {path}", key=key)
                return self._error(exc, key, "read")
            with out:
                stream = result.stream(min_chunk_size=STREAM_CHUNK)
                while True:
                    try:
                        chunk = await stream.__anext__()
                    except StopAsyncIteration:
                        return info
                    except Exception as exc:  # noqa: BLE001
                        return self._error(exc, key, "read")
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        return from_os_error(exc, f"write {path}", key=key)

        return self._loop.run(bounded_gather(one, items, concurrency))

    def _delete_many(self, keys: list[str], concurrency: int) -> DeleteResults:
        if self._boto() is not None:
            return super()._delete_many(keys, concurrency)

        async def one(key: str) -> CargoholdError | None:
            try:
                await obstore.delete_async(self._store, key)
            except FileNotFoundError:
                return None
            except Exception as exc:  # noqa: BLE001
                return self._error(exc, key, "delete")
            return None

        return self._loop.run(bounded_gather(one, keys, concurrency))

    def close(self) -> None:
        self._loop.close()
        if self._boto_s3 is not None:
            self._boto_s3.close()

    def _delete(self, key: str) -> None:
        if (boto := self._boto()) is not None:
            boto.delete(key)
            return
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            return  # S3 itself answers 204 for a missing key; some stores say 404
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, key, "delete")

    # -- errors -----------------------------------------------------------------------

    def _raise(
        self, exc: BaseException, key: str | None, action: str, *, create: bool = False
    ) -> NoReturn:
        raise self._error(exc, key, action, create=create) from exc

    def _error(
        self, exc: BaseException, key: str | None, action: str, *, create: bool = False
    ) -> CargoholdError:
        """Translate an obstore or botocore error into cargohold's tree: the one place this
        module does it. ``create``: the failed request was a create-only put."""
        error = self._translate(exc, key, action, create)
        error.__cause__ = exc
        return error

    def _translate(
        self, exc: BaseException, key: str | None, action: str, create: bool
    ) -> CargoholdError:
        where = self.url if key is None else f"{key!r} in {self.url}"
        failure = _Failure.of(exc, action, create, botocore=self._boto_s3 is not None)
        code, status, text = failure.code, failure.status, failure.text
        context: dict[str, Any] = {"key": key, "remote": self.url}
        if code == "NoSuchBucket":
            return ConfigError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint or 'AWS'}",
                hint="create the bucket, or fix the bucket name in the remote URL",
                **context,
            )
        if failure.kind == "missing":
            if action == "write":  # only an if-match put can miss (AWS and moto say 404)
                return PreconditionFailed(f"{where} no longer exists", **context)
            return NotFoundError(f"no object {where}", **context)
        if failure.kind == "exists":
            return AlreadyExists(f"{where} already exists", **context)
        if failure.kind == "changed":
            return PreconditionFailed(f"{where} no longer has the expected etag", **context)
        if failure.kind == "denied":
            return self._permission_error(code, action, where, context)
        if (status is not None and (status >= 500 or status == 429)) or failure.unreachable:
            return RemoteUnavailable(
                f"cannot {action} {where}: the S3 endpoint did not answer successfully "
                f"after retries ({_first_line(text)})",
                hint="check that the endpoint is up and reachable from this host",
                **context,
            )
        return RemoteError(f"cannot {action} {where}: {_first_line(text)}", **context)

    def _permission_error(
        self, code: str | None, action: str, where: str, context: dict[str, Any]
    ) -> PermissionDenied:
        key_id = self._access_key_id or "(none)"
        if code == "InvalidAccessKeyId":
            message = f"the access key id {key_id!r} was refused: the store does not know it"
            hint = "set AWS_ACCESS_KEY_ID (or access_key_id in the URL) to a key the store has"
        elif code == "SignatureDoesNotMatch":
            message = f"the secret access key for {key_id!r} was refused: signatures do not match"
            hint = "set AWS_SECRET_ACCESS_KEY to the secret that belongs to that access key id"
        elif code in ("ExpiredToken", "InvalidToken"):
            message = f"the session token for {key_id!r} was refused ({code})"
            hint = "refresh AWS_SESSION_TOKEN"
        else:
            message = f"access key {key_id!r} may not {action} {where} ({code or 'access denied'})"
            hint = (
                f"grant that key this permission on bucket {self.bucket!r}, or use a key that "
                "has it (some stores also answer AccessDenied when the bucket does not exist)"
            )
        return PermissionDenied(message, hint=hint, **context)


def url_options(url: str) -> dict[str, Any]:
    """The constructor's keyword arguments that an S3 URL's query gives (the parameters in
    the module docstring); ConfigError for an unknown or malformed one."""
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown S3 URL parameter {unknown[0]!r}",
            hint=f"known parameters are {', '.join(sorted(_QUERY_KEYS))}",
        )
    try:
        path_style = parse_bool(query["path_style"]) if "path_style" in query else None
        anonymous = parse_bool(query.get("anonymous", "false"))
        allow_http = parse_bool(query.get("allow_http", "false"))
    except ValueError as exc:
        raise ConfigError(f"bad S3 URL parameter in {redact_url(url)!r}", hint=str(exc)) from None
    return {
        "endpoint": query.get("endpoint"),
        "region": query.get("region"),
        "access_key_id": query.get("access_key_id"),
        "secret_access_key": query.get("secret_access_key"),
        "session_token": query.get("session_token"),
        "path_style": path_style,
        "anonymous": anonymous,
        "allow_http": allow_http,
    }


@dataclass(frozen=True, slots=True)
class _Failure:
    """What an obstore or botocore error says, in the terms ``_translate`` decides on."""

    kind: Literal["missing", "exists", "changed", "denied"] | None
    code: str | None  # S3's error code, when the store sent one
    status: int | None
    unreachable: bool
    text: str

    @classmethod
    def of(cls, exc: BaseException, action: str, create: bool, *, botocore: bool) -> _Failure:
        text = str(exc)
        if botocore:
            from ._s3_boto import describe

            facts = describe(exc)
            if facts is not None:
                return cls(
                    _kind_of_status(facts.status, facts.code, action, create),
                    facts.code,
                    facts.status,
                    facts.unreachable,
                    facts.text,
                )
        found = _CODE.search(text)
        code = found.group(1) if found else None
        status = _status(exc)
        kind: Literal["missing", "exists", "changed", "denied"] | None = None
        if isinstance(exc, FileNotFoundError):
            kind = "missing"
        elif isinstance(exc, AlreadyExistsError):
            kind = "exists"
        elif isinstance(exc, PreconditionError):
            kind = "changed"
        elif isinstance(exc, PermissionDeniedError | UnauthenticatedError) or status in (401, 403):
            kind = "denied"
        return cls(kind, code, status, _looks_unreachable(text), text)


def _kind_of_status(
    status: int | None, code: str | None, action: str, create: bool
) -> Literal["missing", "exists", "changed", "denied"] | None:
    """What obstore's error classes say, for a botocore error (its status and code)."""
    if status == 404 or code in ("NoSuchKey", "NotFound"):
        return "missing"
    # 409 ConditionalRequestConflict: AWS's answer to a conditional put racing another.
    if action == "write" and (status == 412 or code == "ConditionalRequestConflict"):
        return "exists" if create else "changed"
    if status in (401, 403) or code == "NoCredentials":
        return "denied"
    return None


class _EmptyStream(ObjectStream):
    def __init__(self, info: ObjectInfo) -> None:
        self.info = info

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


def _status(exc: BaseException) -> int | None:
    match = _STATUS.search(str(exc))
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def _looks_unreachable(text: str) -> bool:
    lowered = text.lower()
    return any(
        marker in lowered
        for marker in (
            "error sending request",
            "connection refused",
            "tcp connect",
            "timed out",
            "timeout",
            "dns error",
            "connection reset",
            "broken pipe",
            "unexpected eof",
        )
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "no details"


def redact_url(url: str) -> str:
    """``url`` with secrets in its query replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = [
        (name, "***" if name in ("secret_access_key", "session_token") else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    query = "&".join(f"{name}={value}" for name, value in pairs)
    return parts._replace(query=query).geturl()
