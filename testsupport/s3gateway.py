"""A stand-in for the Hugging Face Hub's S3 gateway (``https://s3.hf.co``), in front of SeaweedFS.

This is a mock, and says so: the gateway cannot be reached from tests, so this loopback
proxy enforces what hub-docs ``storage-buckets-s3.md`` documents (see
docs/design/hub-remotes.md, Part 2) and forwards the rest to a real SeaweedFS:

- **Addressing.** Path-style only: ``/NAMESPACE/BUCKET/KEY``, the namespace being the last
  segment of the endpoint (``https://s3.hf.co/ana``). A Host header naming anything but this
  proxy (a virtual-hosted ``bucket.host``) is refused. A bucket belongs to one namespace
  (:meth:`S3Gateway.own`); asked under another it does not exist.
- **Credentials.** A request must be signed (an ``Authorization`` header or a presigned
  ``X-Amz-Signature``); the signature itself is not checked (SeaweedFS runs without keys).
- **Listing.** ListObjectsV2 only (``list-type=2``); ``/`` is the only delimiter.
- **Metadata.** ``x-amz-meta-*`` is not stored. Whether the gateway drops such headers or
  refuses the request is not documented, so the stand-in does either: ``metadata="drop"``
  or ``metadata="refuse"``. ``Content-Type`` is kept.
- **Checksums.** ``aws-chunked`` bodies with trailing checksums are refused (the gateway
  "does not parse" them).
- **GetObject** is answered with a 302 to a second loopback listener, the "CDN", which
  serves the bytes from a signed URL and refuses, and records in :attr:`S3Gateway.leaks`,
  any request carrying ``Authorization``. Clients whose user agent contains ``aws-cli``,
  ``botocore`` or ``aws-sdk-rust`` are served by the gateway itself, as documented.
- **Preconditions.** ``If-Match`` / ``If-None-Match`` are honoured on PutObject (SeaweedFS
  checks them) and on CopyObject's source; stripped, so ignored, on GetObject, DeleteObject
  and CompleteMultipartUpload (not documented as honoured there).
- **Unsupported.** ACL, tagging, versioning, lifecycle, policy, encryption, notification
  and the other bucket sub-resources answer 501 NotImplemented; their request headers
  (``x-amz-acl``, ``x-amz-tagging``, SSE, storage class) and ``versionId`` are "accepted but
  ignored": stripped. CopyObject across namespaces and UploadPartCopy answer 501.
- **Keys** must not start or end with ``/``, contain ``//`` or ``../``, start with ``./``,
  end with ``..``, or contain ``\\`` or NUL.

Every refusal is recorded in :attr:`S3Gateway.refusals` (method, path, status, code).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self
from urllib.parse import parse_qsl, quote, unquote, urlencode
from xml.sax.saxutils import escape

from testsupport.faultproxy import forward, read_body, reply

__all__ = ["PROXIED_AGENTS", "Refusal", "S3Gateway", "gateway_key_problem"]

#: User agents the gateway serves GetObject to itself instead of redirecting them.
PROXIED_AGENTS = ("aws-cli", "botocore", "aws-sdk-rust")
_UNSUPPORTED = frozenset(
    {
        "acl",
        "tagging",
        "versioning",
        "versions",
        "lifecycle",
        "policy",
        "policyStatus",
        "encryption",
        "notification",
        "object-lock",
        "retention",
        "legal-hold",
        "replication",
        "website",
        "cors",
        "logging",
        "ownershipControls",
        "publicAccessBlock",
        "accelerate",
        "requestPayment",
        "torrent",
        "restore",
    }
)
_IGNORED_HEADERS = (
    "x-amz-acl",
    "x-amz-grant-",
    "x-amz-tagging",
    "x-amz-server-side-encryption",
    "x-amz-storage-class",
    "x-amz-object-lock-",
    "x-amz-website-redirect-location",
)
_CONDITIONS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")
_URL_LIFETIME = 300  # seconds a CDN URL stays valid


@dataclass(frozen=True, slots=True)
class Refusal:
    """One request the gateway refused, and why."""

    method: str
    path: str
    status: int
    code: str
    message: str


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def gateway_key_problem(key: str) -> str | None:
    """What the gateway's key rules say against ``key``, or None when it may be stored."""
    rules = (
        (key.startswith("/") or key.endswith("/"), "starts or ends with '/'"),
        ("//" in key, "contains '//'"),
        ("../" in key, "contains '../'"),
        (key.startswith("./"), "starts with './'"),
        (key.endswith(".."), "ends with '..'"),
        ("\\" in key, "contains a backslash"),
        ("\x00" in key, "contains NUL"),
    )
    return next((why for broken, why in rules if broken), None)


def _listen(serve: Callable[[BaseHTTPRequestHandler], None]) -> ThreadingHTTPServer:
    """A server on a free loopback port whose every request goes to ``serve``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            serve(self)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


class S3Gateway:
    """The gateway on one loopback port and its CDN on another, both in this process.

    ``upstream`` is SeaweedFS (``http://127.0.0.1:PORT``), run without credentials: the
    gateway forwards unsigned requests to it.
    """

    def __init__(self, upstream: str, *, metadata: Literal["drop", "refuse"] = "drop") -> None:
        if metadata not in ("drop", "refuse"):
            raise ValueError(f"metadata must be 'drop' or 'refuse', not {metadata!r}")
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.metadata = metadata
        self.refusals: list[Refusal] = []
        self.redirects: list[str] = []  # paths of the GetObject requests answered with a 302
        self.proxied_reads: list[str] = []  # paths of the GetObject requests served directly
        self.cdn_reads: list[str] = []  # the CDN's paths it served bytes for
        self.leaks: list[str] = []  # CDN requests that carried Authorization: must stay empty
        self._owners: dict[str, str] = {}
        self._secret = os.urandom(16)
        self._lock = threading.Lock()
        self._gateway = _listen(self._gateway_request)
        self._cdn = _listen(self._cdn_request)

    # -- set-up ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The gateway's base URL (``https://s3.hf.co``'s stand-in)."""
        return f"http://127.0.0.1:{self._gateway.server_address[1]}"

    def namespace_endpoint(self, namespace: str) -> str:
        """The endpoint the docs tell clients to use: the gateway scoped to a namespace."""
        return f"{self.endpoint}/{namespace}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def own(self, namespace: str, bucket: str) -> None:
        """Make ``bucket`` (already made in SeaweedFS) a bucket of ``namespace``."""
        with self._lock:
            self._owners[bucket] = namespace

    # -- the gateway -------------------------------------------------------------------

    def _refuse(self, handler: BaseHTTPRequestHandler, refused: _Refused) -> None:
        with self._lock:
            self.refusals.append(
                Refusal(
                    handler.command, handler.path, refused.status, refused.code, refused.message
                )
            )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
            f"{refused.code}</Code><Message>{escape(refused.message)}</Message></Error>"
        ).encode()
        reply(handler, refused.status, [("Content-Type", "application/xml")], body)

    def _gateway_request(self, handler: BaseHTTPRequestHandler) -> None:
        body = read_body(handler)
        try:
            method, path, headers = self._check(handler)
        except _Refused as refused:
            self._refuse(handler, refused)
            return
        upstream_path, _, query = path.partition("?")
        has_key = upstream_path.lstrip("/").partition("/")[2] != ""
        is_get_object = method == "GET" and has_key and "uploadId=" not in query
        agent = headers.get("user-agent", "").lower()
        if is_get_object and not any(name in agent for name in PROXIED_AGENTS):
            self._redirect(handler, path)
            return
        if is_get_object:
            with self._lock:
                self.proxied_reads.append(handler.path)
        status, answer, data = forward(self.upstream, method, path, body, headers)
        reply(handler, status, answer, data)

    def _redirect(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        """302 to a signed CDN URL, as the gateway sends clients to the nearest CDN edge.
        A missing object is answered here (404), not by the CDN."""
        upstream_path = path.split("?", 1)[0]
        status, answer, data = forward(self.upstream, "HEAD", upstream_path, b"", {})
        if status != 200:
            status, answer, data = forward(self.upstream, "GET", upstream_path, b"", {})
            reply(handler, status, answer, data)
            return
        expires = str(int(time.time()) + _URL_LIFETIME)
        signature = self._sign(upstream_path, expires)
        query = urlencode({"expires": expires, "signature": signature})
        with self._lock:
            self.redirects.append(handler.path)
        location = f"{self.cdn_endpoint}/cdn{upstream_path}?{query}"
        reply(handler, 302, [("Location", location)], b"")

    def _sign(self, path: str, expires: str) -> str:
        # Over the decoded path: a client may re-encode the Location it follows.
        message = f"{unquote(path)}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _check(self, handler: BaseHTTPRequestHandler) -> tuple[str, str, dict[str, str]]:
        """The request to forward upstream (method, path without the namespace, headers),
        or :class:`_Refused` for what the gateway does not do."""
        method = handler.command
        headers = {k.lower(): v for k, v in handler.headers.items()}
        port = self._gateway.server_address[1]
        if headers.get("host") not in (f"127.0.0.1:{port}", f"localhost:{port}"):
            raise _Refused(
                400,
                "InvalidRequest",
                f"virtual-hosted-style requests (Host: {headers.get('host')}) are not "
                "supported: use path-style addressing",
            )
        raw_path, _, raw_query = handler.path.partition("?")
        params = parse_qsl(raw_query, keep_blank_values=True)
        names = {name for name, _ in params}
        if "authorization" not in headers and "X-Amz-Signature" not in names:
            raise _Refused(403, "AccessDenied", "the request is not signed")
        segments = raw_path.lstrip("/").split("/", 2)
        namespace = unquote(segments[0])
        if len(segments) < 2 or not segments[1]:
            raise _Refused(501, "NotImplemented", "the stand-in serves bucket and object requests")
        bucket = unquote(segments[1])
        with self._lock:
            owner = self._owners.get(bucket)
        if owner != namespace:
            raise _Refused(404, "NoSuchBucket", f"namespace {namespace!r} has no bucket {bucket!r}")
        if unsupported := sorted(names & _UNSUPPORTED):
            raise _Refused(501, "NotImplemented", f"?{unsupported[0]} is not supported")
        key = unquote(segments[2]) if len(segments) == 3 and segments[2] else None
        if key is not None and (problem := gateway_key_problem(key)) is not None:
            raise _Refused(400, "InvalidArgument", f"key {key!r} {problem}")
        if method == "GET" and key is None and not names & {"uploads", "location"}:
            if dict(params).get("list-type") != "2":
                raise _Refused(
                    501, "NotImplemented", "ListObjectsV1 is not supported: use ListObjectsV2"
                )
            if dict(params).get("delimiter", "/") != "/":
                raise _Refused(400, "InvalidArgument", "only '/' is allowed as the delimiter")
        self._check_body(headers)
        headers = self._headers_to_forward(headers, method, key, names)
        if "x-amz-copy-source" in headers:
            if "partNumber" in names:
                raise _Refused(501, "NotImplemented", "UploadPartCopy is not supported")
            headers["x-amz-copy-source"] = self._copy_source(
                headers["x-amz-copy-source"], namespace
            )
        kept = [(name, value) for name, value in params if name != "versionId"]
        query = "?" + urlencode(kept, quote_via=quote) if kept else ""
        rest = "/" + segments[2] if key is not None else ""
        return method, f"/{segments[1]}{rest}{query}", headers

    def _check_body(self, headers: Mapping[str, str]) -> None:
        streaming = headers.get("x-amz-content-sha256", "")
        chunked = "aws-chunked" in headers.get("content-encoding", "")
        if headers.get("x-amz-trailer") or (chunked and streaming.endswith("-TRAILER")):
            raise _Refused(
                400,
                "InvalidRequest",
                "aws-chunked bodies with trailing checksums are not supported: send "
                "checksums only when required (request_checksum_calculation=when_required)",
            )

    def _headers_to_forward(
        self, headers: dict[str, str], method: str, key: str | None, names: set[str]
    ) -> dict[str, str]:
        metadata = [name for name in headers if name.startswith("x-amz-meta-")]
        if metadata and self.metadata == "refuse":
            raise _Refused(
                400, "InvalidArgument", f"user metadata ({metadata[0]}) is not supported"
            )
        # SeaweedFS runs without keys: requests go to it unsigned. The gateway has answered
        # any Expect: 100-continue itself.
        dropped = {"authorization", "expect", *metadata}
        dropped.update(name for name in headers if name.startswith(_IGNORED_HEADERS))
        ignores_conditions = (
            (method == "GET" and key is not None)
            or method == "DELETE"
            or (method == "POST" and "uploadId" in names)
        )
        if ignores_conditions:
            dropped.update(_CONDITIONS)
        return {name: value for name, value in headers.items() if name not in dropped}

    def _copy_source(self, source: str, namespace: str) -> str:
        """The copy source as SeaweedFS names it, or 501 for one in another namespace. The
        source is ``BUCKET/KEY`` in the request's namespace, or ``NAMESPACE/BUCKET/KEY``."""
        first, _, rest = unquote(source).lstrip("/").partition("/")
        with self._lock:
            owners = dict(self._owners)
        if first == namespace and owners.get(rest.partition("/")[0]) == namespace:
            first, _, rest = rest.partition("/")
        if owners.get(first) != namespace:
            raise _Refused(
                501,
                "NotImplemented",
                "server-side copy works only within one namespace "
                f"({source!r} is not in {namespace!r})",
            )
        return quote(f"/{first}/{rest}")

    # -- the CDN -----------------------------------------------------------------------

    def _cdn_request(self, handler: BaseHTTPRequestHandler) -> None:
        read_body(handler)
        if handler.headers.get("Authorization") is not None:
            with self._lock:
                self.leaks.append(f"{handler.command} {handler.path}")
            reply(handler, 400, [], b"the CDN must never be sent the Authorization header")
            return
        raw_path, _, raw_query = handler.path.partition("?")
        params = dict(parse_qsl(raw_query))
        path = raw_path.removeprefix("/cdn")
        expires = params.get("expires", "0")
        good = hmac.compare_digest(self._sign(path, expires), params.get("signature", ""))
        if handler.command != "GET" or not good or int(expires) < time.time():
            reply(handler, 403, [], b"not a valid CDN URL")
            return
        wanted = {"range": handler.headers["Range"]} if handler.headers["Range"] else {}
        status, answer, data = forward(self.upstream, "GET", path, b"", wanted)
        with self._lock:
            self.cdn_reads.append(path)
        reply(handler, status, answer, data)

    # -- servers -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        for server in (self._gateway, self._cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop both listeners."""
        for server in (self._gateway, self._cdn):
            server.shutdown()
            server.server_close()
