"""The S3 remote's operations through botocore, for a process forked after obstore's
runtime started there (why: see :mod:`cargohold.remotes.s3`).

Same settings as the obstore path (taken from the values ``S3Remote`` resolved, never read
again from the environment), same behaviour under the conformance suite. This module
translates no error: every botocore exception goes to the remote's ``fail``, the one
place :mod:`cargohold.remotes.s3` maps errors, which reads them through :func:`describe`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol
from urllib.parse import quote, unquote

import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)

from .._threads import signals_blocked
from ._base import STREAM_CHUNK, ByteRange, ObjectInfo, ObjectStream, PutRequest
from .s3 import (
    _SAFE_METADATA,
    PART_CONCURRENCY,
    PART_SIZE,
    S3Remote,
    _EmptyStream,
    _unquote_etag,
)

__all__ = ["BotoS3", "Failure", "describe"]


class _Fail(Protocol):
    def __call__(
        self, exc: BaseException, key: str | None, action: str, *, create: bool = False
    ) -> NoReturn: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """What a botocore exception says, in the terms ``S3Remote._translate`` decides on."""

    status: int | None  # the HTTP status, when the store answered
    code: str | None  # S3's error code (NoSuchKey, AccessDenied, ...), when it sent one
    unreachable: bool  # no answer: refused, reset, timed out
    text: str


def describe(exc: BaseException) -> Failure | None:
    """The facts of a botocore exception; None for any other exception."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code")
        if code is not None and code.isdigit():  # HEAD has no body: the code is the status
            code = None
        return Failure(status, code, False, str(exc))
    if isinstance(exc, NoCredentialsError):
        return Failure(None, "NoCredentials", False, str(exc))
    unreachable = (
        EndpointConnectionError,
        ConnectionClosedError,
        ConnectTimeoutError,
        ReadTimeoutError,
        HTTPClientError,
    )
    if isinstance(exc, unreachable):
        return Failure(None, None, True, str(exc))
    if isinstance(exc, BotoCoreError):
        return Failure(None, None, False, str(exc))
    return None


def _range_header(range: ByteRange) -> str:
    start, stop = range
    return f"bytes={start}-" if stop is None else f"bytes={start}-{stop - 1}"


def _status(exc: BaseException) -> int | None:
    facts = describe(exc)
    return None if facts is None else facts.status


class BotoS3:
    """One botocore S3 client for an :class:`~cargohold.remotes.s3.S3Remote`, built on
    first use. Thread-safe, as botocore clients are."""

    def __init__(self, remote: S3Remote, fail: _Fail) -> None:
        self._remote = remote
        self._fail = fail
        self._lock = threading.Lock()
        self._client: Any = None
        self.bucket = remote.bucket
        self._prefix = f"{remote.prefix}/" if remote.prefix else ""

    @property
    def client(self) -> Any:
        with self._lock:  # creating botocore clients is not thread-safe
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def _new_client(self) -> Any:
        options = self._remote._store_options
        config: dict[str, Any] = options["config"]
        client_options: dict[str, Any] = options["client_options"]
        retry: dict[str, Any] = options["retry_config"]
        endpoint = self._remote.endpoint
        virtual = config.get("virtual_hosted_style_request", False)
        settings: dict[str, Any] = {
            "region_name": config["region"],
            "connect_timeout": client_options["connect_timeout"].total_seconds(),
            "read_timeout": client_options["timeout"].total_seconds(),
            # botocore's standard mode retries what obstore does: throttling, 5xx, dropped
            # connections, with jittered exponential backoff. It has no total time budget.
            "retries": {"total_max_attempts": retry["max_retries"] + 1, "mode": "standard"},
            "s3": {"addressing_style": "virtual" if virtual else "path"},
            # Batches run 32 requests at once on the Remote's threads, multipart puts 8.
            "max_pool_connections": 32 + PART_CONCURRENCY,
            "user_agent_extra": "cargohold",
            # Only where S3 requires them: several S3-compatible stores refuse the CRC
            # trailers newer botocore adds to every put.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            # The endpoint is the one S3Remote resolved (None means AWS).
            "ignore_configured_endpoint_urls": True,
        }
        keys: dict[str, Any] = {}
        if config.get("skip_signature"):
            settings["signature_version"] = UNSIGNED
        elif (credentials := options.get("credential_provider")) is not None:
            keys = {
                "aws_access_key_id": credentials.access_key_id,
                "aws_secret_access_key": credentials.secret_access_key,
                "aws_session_token": credentials.token,
            }
        # else AWS with no keys given: botocore's own chain (instance, container, SSO),
        # as obstore falls back on instance credentials.
        session = botocore.session.Session()
        return session.create_client(
            "s3",
            endpoint_url=endpoint.rstrip("/") if endpoint else None,
            config=Config(**settings),
            **keys,
        )

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _full(self, key: str) -> str:
        return self._prefix + key

    # -- reads ------------------------------------------------------------------------

    def _get_object(self, key: str, range: ByteRange | None) -> dict[str, Any] | None:
        """The GetObject response; None when the range starts past the end (416)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if range is not None:
            args["Range"] = _range_header(range)
        try:
            response: dict[str, Any] = self.client.get_object(**args)
        except Exception as exc:  # noqa: BLE001 - handed to the one translation
            if range is not None and _status(exc) == 416:
                return None  # like data[start:stop]
            self._fail(exc, key, "read")
        return response

    def get(self, key: str, range: ByteRange | None) -> bytes:
        if range is not None and range[1] == range[0]:
            self.head(key)  # an empty range still needs the object to exist
            return b""
        response = self._get_object(key, range)
        if response is None:
            return b""
        return _BotoStream(self, key, response).read_all()

    def stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        if range is not None and range[1] == range[0]:
            return _EmptyStream(self.head(key))
        response = self._get_object(key, range)
        if response is None:
            return _EmptyStream(self.head(key))
        return _BotoStream(self, key, response)

    def head(self, key: str) -> ObjectInfo:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:  # noqa: BLE001
            self._fail(exc, key, "read")
        return self.info(key, response)

    def info(self, key: str, response: dict[str, Any]) -> ObjectInfo:
        size = response["ContentLength"]
        content_range = response.get("ContentRange")
        if content_range:  # "bytes 0-9/1024": the object's size is after the slash
            size = int(content_range.rsplit("/", 1)[1])
        return ObjectInfo(
            key=key,
            size=size,
            etag=_unquote_etag(response.get("ETag")),
            last_modified=response["LastModified"],
            metadata={name.lower(): unquote(value) for name, value in response["Metadata"].items()},
            content_type=response.get("ContentType"),
        )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._full(prefix),
            PaginationConfig={"PageSize": 1000},
        )
        cut = len(self._prefix)
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"][cut:],
                        size=item["Size"],
                        etag=_unquote_etag(item.get("ETag")),
                        last_modified=item["LastModified"],
                    )
        except Exception as exc:  # noqa: BLE001
            self._fail(exc, prefix or None, "list")

    # -- writes -----------------------------------------------------------------------

    def put(self, request: PutRequest) -> ObjectInfo:
        key = request.key
        create = request.mode == "create"
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full(key),
            "ContentType": request.content_type,
            "Metadata": {
                name: quote(value, safe=_SAFE_METADATA) for name, value in request.metadata.items()
            },
        }
        chunks = request.chunks(PART_SIZE)
        try:
            if create or request.if_match is not None:
                # S3 checks conditions on a single PUT: the object goes in one request,
                # held in memory (as the obstore path does).
                if create:
                    args["IfNoneMatch"] = "*"
                else:
                    args["IfMatch"] = f'"{request.if_match}"'
                body = b"".join(chunks)
                response = self.client.put_object(Body=body, **args)
                etag, size = response.get("ETag"), len(body)
            else:
                first = bytes(next(chunks, b""))
                second = next(chunks, None)
                if second is None:
                    response = self.client.put_object(Body=first, **args)
                    etag, size = response.get("ETag"), len(first)
                else:
                    parts = itertools.chain([first, second], chunks)
                    etag, size = self._multipart(args, parts)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc, key, "write", create=create)
        return self._remote._put_result(request, size, etag)

    def _multipart(
        self, args: dict[str, Any], parts: Iterable[bytes | memoryview]
    ) -> tuple[str, int]:
        """Upload ``parts`` with at most PART_CONCURRENCY in flight (memory stays bounded);
        abort the upload on any failure, so no parts are left behind."""
        client = self.client
        upload = client.create_multipart_upload(**args)["UploadId"]
        where = {"Bucket": args["Bucket"], "Key": args["Key"], "UploadId": upload}
        size = 0
        done: list[dict[str, Any]] = []
        try:
            with ThreadPoolExecutor(PART_CONCURRENCY, thread_name_prefix="cargohold-part") as pool:
                flying: list[tuple[int, Future[dict[str, Any]]]] = []
                for number, part in enumerate(parts, start=1):
                    size += len(part)
                    body = bytes(part)
                    with signals_blocked():  # a worker may start here (cargohold._threads)
                        future = pool.submit(
                            client.upload_part, PartNumber=number, Body=body, **where
                        )
                    flying.append((number, future))
                    if len(flying) >= PART_CONCURRENCY:
                        number, future = flying.pop(0)
                        done.append({"PartNumber": number, "ETag": future.result()["ETag"]})
                for number, future in flying:
                    done.append({"PartNumber": number, "ETag": future.result()["ETag"]})
            response = client.complete_multipart_upload(MultipartUpload={"Parts": done}, **where)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                client.abort_multipart_upload(**where)
            raise
        return response.get("ETag", ""), size

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:  # noqa: BLE001
            if _status(exc) == 404:
                return  # S3 itself answers 204 for a missing key; some stores say 404
            self._fail(exc, key, "delete")


class _BotoStream(ObjectStream):
    def __init__(self, boto: BotoS3, key: str, response: dict[str, Any]) -> None:
        self._boto = boto
        self._key = key
        self._body = response["Body"]
        self.info = boto.info(key, response)

    def __iter__(self) -> Iterator[bytes]:
        chunks = self._body.iter_chunks(STREAM_CHUNK)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001
                self._boto._fail(exc, self._key, "read")
            yield chunk

    def close(self) -> None:
        self._body.close()
