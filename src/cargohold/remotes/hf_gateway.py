"""``hf-s3://OWNER/NAME[/PREFIX]`` - a Hugging Face Storage Bucket through the Hub's S3 gateway.

The S3 remote (:mod:`cargohold.remotes.s3`) on ``https://s3.hf.co/OWNER`` (the
``hf_bucket_endpoint`` setting), fitted to what the gateway implements, as hub-docs
``storage-buckets-s3.md`` describes it (docs/huggingface.md has the user's view):

- **Requests.** Path-style only, region ``us-east-1``. Listings are ListObjectsV2 without a
  delimiter (obstore and botocore send nothing else); no checksum trailers (obstore sends
  none, botocore is set to ``when_required``); no ACL, tagging, versioning, lifecycle or
  copy request is ever made. Puts above 8 MiB are multipart uploads, which the gateway
  supports (it expires unfinished ones after 7 days, so a part-done upload costs nothing
  for long).
- **Compare-and-swap.** The gateway honours ``If-None-Match: *`` and ``If-Match`` on
  PutObject, so ``mode="create"`` and ``if_match`` hold here as on any S3 store: of racing
  writers exactly one wins. (The native bucket API, ``hf://buckets/``, cannot do this.)
- **Reads.** The gateway answers GetObject with a 302 to a CDN URL, except for clients whose
  user agent says ``aws-cli``, ``botocore`` or ``aws-sdk-rust``, which it serves itself.
  obstore (reqwest) follows the redirect and leaves the ``Authorization`` header behind on
  the way to another host; ``tests/hf/test_s3_gateway.py`` proves both on the stand-in. A
  forked child's botocore path (see :mod:`cargohold.remotes.s3`) is served by the gateway.
- **Metadata.** The gateway keeps ``Content-Type`` but no ``x-amz-meta-*`` headers, so this
  remote never sends any (``stores_metadata`` is False). A put with metadata writes the
  object, then a record ``.cargohold/metadata/<key>``: JSON naming the object's etag and
  its metadata; a put without metadata deletes that record. ``head``, ``stream``,
  ``fetch_many`` and ``download_many`` read the record after the object and use it only if
  it names the etag they read, so bytes replaced by another tool (or by a write whose
  record is not there yet) never get another version's metadata. Costs: one more request
  per write and per metadata-bearing read, and a delete removes both. Not atomic across
  the two: between a put's object and its record, a reader sees the new bytes with no
  metadata; and two writers of one key with different bytes at the same moment can leave
  the later object without its metadata (never with the other's). ``get`` reads no record.
- **Keys.** The gateway refuses keys with a segment ending in ``..`` (its rules forbid
  ``../`` and a trailing ``..``); the other rules are cargohold's own. A put of such a key is
  an InvalidKey saying so; a delete of one is a no-op (no such object can exist).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from ..config import Settings
from ..errors import CargoholdError, ConfigError, InvalidKey, NotFoundError
from ..keys import RESERVED_PREFIX, InternalKey
from ._base import (
    ByteRange,
    DeleteResults,
    FetchResults,
    ObjectInfo,
    ObjectStream,
    PutRequest,
    PutResults,
)
from .s3 import S3Remote, url_options

__all__ = ["RECORDS", "HfGatewayRemote", "record_key"]

log = logging.getLogger(__name__)

#: Where the metadata records live, beside the objects, out of user listings.
RECORDS = RESERVED_PREFIX + "metadata/"
_RECORD_VERSION = 1
_HINT = "use hf-s3://OWNER/NAME[/PREFIX], e.g. hf-s3://ana/app-data/outputs"


def record_key(key: str) -> InternalKey:
    """The key of ``key``'s metadata record (``key`` is already a valid key)."""
    return InternalKey(RECORDS + key)


class HfGatewayRemote(S3Remote):
    """A Storage Bucket (and optional prefix) through the Hub's S3 gateway; see the module."""

    stores_metadata: ClassVar[bool] = False

    def __init__(
        self,
        namespace: str,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        settings: Settings | None = None,
        **options: Any,
    ) -> None:
        settings = settings or Settings.load()
        self.namespace = namespace
        self._default_endpoint = settings.hf_bucket_endpoint.replace("{namespace}", namespace)
        if not (options.get("access_key_id") or os.environ.get("AWS_ACCESS_KEY_ID")):
            raise ConfigError(
                f"no S3 credentials for the Hugging Face Storage Bucket {namespace}/{bucket}",
                hint="generate S3 credentials from a Hugging Face token (huggingface.co/settings/"
                "tokens, Generate S3 credentials) and set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY",
            )
        if problem := _gateway_problem(prefix.strip("/")):
            raise ConfigError(f"bucket prefix {prefix!r} {problem}", hint=_HINT)
        if options.get("path_style") is False:
            raise ConfigError(
                "the Hub's S3 gateway serves path-style requests only",
                hint="remove path_style=false from the hf-s3:// URL",
            )
        options["path_style"] = True
        options.setdefault("region", "us-east-1")
        super().__init__(
            bucket,
            prefix,
            endpoint=endpoint or self._default_endpoint,
            settings=settings,
            **options,
        )

    @classmethod
    def from_hf_url(cls, url: str, settings: Settings | None = None) -> HfGatewayRemote:
        """Build from ``hf-s3://OWNER/NAME[/PREFIX][?endpoint=&access_key_id=...]``: the
        same query parameters as ``s3://`` URLs (see :mod:`cargohold.remotes.s3`), the
        endpoint by default ``hf_bucket_endpoint`` with OWNER for ``{namespace}``."""
        parts = urlsplit(url)
        owner = parts.netloc
        name, _, prefix = unquote(parts.path).strip("/").partition("/")
        if not owner or not name:
            raise ConfigError(f"{url!r} names no Storage Bucket", hint=_HINT)
        return cls(owner, name, prefix, settings=settings, **url_options(url))

    @property
    def url(self) -> str:
        base = f"hf-s3://{self.namespace}/{self.bucket}/{self.prefix}".rstrip("/")
        if self.endpoint == self._default_endpoint:
            return base
        return f"{base}?endpoint={self.endpoint}"

    # -- writes -----------------------------------------------------------------------

    def _put(self, request: PutRequest) -> ObjectInfo:
        self._check_key(request.key)
        info = super()._put(replace(request, metadata={}))
        if request.metadata:
            super()._put(self._record(request, info.etag))
        else:
            super()._delete(record_key(request.key))
        return replace(info, metadata=dict(request.metadata))

    # On the botocore path (a forked child), S3Remote's batches are the base class's threads
    # over the single operations, which here already handle records: they are used as
    # they are. On obstore's path, batches send objects and records in two rounds.

    def _put_many(self, requests: list[PutRequest], concurrency: int) -> PutResults:
        if self._boto() is not None:
            return super()._put_many(requests, concurrency)
        # A key the gateway refuses gets its InvalidKey in its place; the rest are sent.
        errors = [self._key_error(request.key) for request in requests]
        sendable = [r for r, error in zip(requests, errors, strict=True) if error is None]
        bare = [replace(request, metadata={}) for request in sendable]
        sent = super()._put_many(bare, concurrency) if bare else []
        results = iter(self._then_records(sendable, sent, concurrency))
        return [next(results) if error is None else error for error in errors]

    def _then_records(
        self, requests: list[PutRequest], results: PutResults, concurrency: int
    ) -> PutResults:
        """Write (or delete) the record of each put that landed; a put whose record
        failed reports that error."""
        done = [
            (r, info)
            for r, info in zip(requests, results, strict=True)
            if isinstance(info, ObjectInfo)
        ]
        records = [self._record(r, info.etag) for r, info in done if r.metadata]
        stale: list[str] = [record_key(r.key) for r, info in done if not r.metadata]
        written = iter(super()._put_many(records, concurrency) if records else [])
        deleted = iter(super()._delete_many(stale, concurrency) if stale else [])
        merged: PutResults = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, ObjectInfo):
                outcome = next(written) if request.metadata else next(deleted)
                if isinstance(outcome, CargoholdError):
                    result = outcome
                else:
                    result = replace(result, metadata=dict(request.metadata))
            merged.append(result)
        return merged

    def _record(self, request: PutRequest, etag: str) -> PutRequest:
        body = {"v": _RECORD_VERSION, "etag": etag, "metadata": request.metadata}
        return PutRequest(
            key=record_key(request.key),
            data=json.dumps(body, ensure_ascii=False, sort_keys=True).encode(),
            mode="overwrite",
            if_match=None,
            metadata={},
            content_type="application/json",
        )

    def _delete(self, key: str) -> None:
        if self._key_error(key) is not None:
            return  # the gateway can hold no such object
        super()._delete(key)
        super()._delete(record_key(key))

    def _delete_many(self, keys: list[str], concurrency: int) -> DeleteResults:
        if self._boto() is not None:
            return super()._delete_many(keys, concurrency)
        # Keys the gateway cannot hold need nothing deleted: their result stays None.
        possible = [key for key in keys if self._key_error(key) is None]
        results = super()._delete_many(possible + [record_key(k) for k in possible], concurrency)
        count = len(possible)
        errors = {key: results[i] or results[count + i] for i, key in enumerate(possible)}
        return [errors.get(key) for key in keys]

    def _check_key(self, key: str) -> None:
        if (error := self._key_error(key)) is not None:
            raise error

    def _key_error(self, key: str) -> InvalidKey | None:
        problem = _gateway_problem(key)
        if problem is None:
            return None
        return InvalidKey(
            f"key {key!r} {problem}, which the Hub's S3 gateway refuses",
            hint="rename the key (e.g. end the segment with '_' instead of '..')",
            key=key,
            remote=self.url,
        )

    # -- reads ------------------------------------------------------------------------

    def _head(self, key: str) -> ObjectInfo:
        return self._with_metadata(super()._head(key))

    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        stream = super()._stream(key, range)
        try:
            stream.info = self._with_metadata(stream.info)
        except BaseException:
            stream.close()
            raise
        return stream

    def _fetch_many(self, keys: list[str], concurrency: int) -> FetchResults:
        if self._boto() is not None:
            return super()._fetch_many(keys, concurrency)
        fetched = super()._fetch_many(keys, concurrency)
        infos = self._add_records([r if isinstance(r, CargoholdError) else r[0] for r in fetched])
        merged: FetchResults = []
        for info, result in zip(infos, fetched, strict=True):
            if isinstance(info, CargoholdError):
                merged.append(info)  # the read's error, or its record's
            elif isinstance(result, tuple):
                merged.append((info, result[1]))
        return merged

    def _download_many(self, items: list[tuple[str, Path]], concurrency: int) -> PutResults:
        downloaded = super()._download_many(items, concurrency)
        if self._boto() is not None:
            return downloaded
        return self._add_records(downloaded)

    def _with_metadata(self, info: ObjectInfo) -> ObjectInfo:
        try:
            body = super()._get(record_key(info.key), None)
        except NotFoundError:
            body = None
        return replace(info, metadata=self._metadata(info, body))

    def _add_records(self, infos: PutResults) -> PutResults:
        """``infos`` with each object's metadata from its record (read in one batch)."""
        found = [info for info in infos if isinstance(info, ObjectInfo)]
        bodies = super()._get_many([record_key(info.key) for info in found], 32) if found else []
        read = iter(bodies)
        merged: PutResults = []
        for info in infos:
            if isinstance(info, ObjectInfo):
                body = next(read)
                if isinstance(body, CargoholdError) and not isinstance(body, NotFoundError):
                    merged.append(body)
                    continue
                record = None if isinstance(body, NotFoundError) else body
                info = replace(info, metadata=self._metadata(info, record))
            merged.append(info)
        return merged

    def _metadata(self, info: ObjectInfo, body: bytes | None) -> dict[str, str]:
        """The metadata a record gives ``info``'s version: none without a record, or when the
        record names another etag (the object was replaced since it was written)."""
        if body is None:
            return {}
        try:
            record = json.loads(body)
            if record["etag"] != info.etag:
                return {}
            return {str(name): str(value) for name, value in record["metadata"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("cargohold: ignoring an unreadable metadata record for %r", info.key)
            return {}


def _gateway_problem(key: str) -> str | None:
    """Which of the gateway's key rules ``key`` (already a valid cargohold key) breaks:
    cargohold's own rules leave only a segment ending in ``..``."""
    if any(segment.endswith("..") for segment in key.split("/")):
        return "has a segment ending in '..'"
    return None
