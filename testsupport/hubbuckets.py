"""Hugging Face Storage Buckets in the Hub stand-in: the native bucket API, for tests of
the ``hf://buckets/`` remote.

A stand-in, not the Hub. Written from what ``huggingface_hub`` 2.5 sends and parses
(``HfApi.create_bucket``, ``bucket_info``, ``delete_bucket``, ``list_bucket_tree``,
``get_bucket_paths_info``, ``batch_bucket_files``, ``get_bucket_file_metadata``,
``download_bucket_files``; see docs/design/hub-remotes.md, 1.2 to 1.7) and the Hub's
documentation. :class:`~testsupport.hubstandin.HubStandIn` mounts it: same port, same
tokens, same injected faults (:class:`~testsupport.hubstandin.Fault`, e.g. a 429 with
``RateLimit`` headers on ``/batch``).

What it serves:

- ``POST /api/buckets/{ns}/{name}`` (``ns`` ``me`` = the caller; 409 if it exists),
  ``GET`` (info: ``id, private, createdAt, updatedAt, size, totalFiles``; a missing or
  hidden bucket is 404 ``X-Error-Code: RepoNotFound``), ``DELETE``.
- ``GET .../xet-write-token`` and ``.../xet-read-token``: the Xet token, as a JSON body
  (``casUrl``, ``accessToken``, ``exp``: what hf_xet reads) and as ``X-Xet-*`` headers
  (what huggingface_hub reads). The ``casUrl`` is ``local:///DIR``: hf_xet then stores
  xorbs and shards in that folder itself, so bytes really go through Xet and every
  ``xetHash`` is the content's, with no CAS server. One limit the Hub does not have: the
  folder's dedup database opens in one process at a time, so tests drive a bucket from
  one client process at a time (a second gets "Database already open").
- ``POST .../batch`` (``application/x-ndjson``: ``addFile`` / ``deleteFile`` lines):
  ``200 {"failed": [...]}``, or 422 with the same body when every operation failed.
  An ``addFile`` whose ``xetHash`` was never uploaded fails, and so does a
  ``deleteFile`` of a missing path (**assumed**: the Hub documents neither; this is the
  strict choice, so a client must cope with it). A path twice in one batch is 400
  (**assumed**: failures are keyed by path, so the outcome would be ambiguous).
  ``copyFile`` is not modelled (400).
- ``GET .../tree[/{prefix}]?recursive=`` with a **lexical** prefix (``logs`` also lists
  ``logs.json``, as huggingface_hub documents), 1,000 entries a page (**assumed**) with
  ``Link: rel="next"`` paging. The order is folder by folder (``a/b`` before ``a-c``),
  which is not byte order: the Hub does not document its order.
- ``POST .../paths-info`` ``{"paths": [...]}`` (at most 1,000, **assumed** from the
  client's chunking): file entries only, missing paths left out.
- ``HEAD|GET /buckets/{ns}/{name}/resolve/{path}`` (``/`` may come as ``%2F``):
  ``X-Xet-Hash``, the ``xet-auth`` link to the read token, ``Content-Length``; GET
  serves the bytes (read back through hf_xet) with a single ``Range`` (206, 416).

- ``GET /api/buckets/{ns}/{name}/events[?cursor=|since=]``: the change feed as
  huggingface_hub's ``BucketFollower`` reads it (server-sent events): the changes after
  the cursor (or the ISO instant) as ``changes`` events, then ``ready`` with the last
  cursor, then each batch's changes as it lands; a keep-alive comment every
  :data:`PING_SECONDS` (**assumed**: the Hub pings about every 30 s) and a ``reconnect``
  after :data:`SESSION_SECONDS`. An unknown cursor is 400. Every change is kept (no
  ``reset``); :attr:`BucketStandIn.feed` False answers 404, as a Hub without the feed.

Faults (:class:`BatchFault`, :meth:`BucketStandIn.inject`): listed paths fail (200 with
the rest applied, 422 when all fail); a batch applied in part or whole whose answer is
lost (the connection dropped) or is a 503 with ``Retry-After: 0`` (huggingface_hub
retries both, so ``times`` says for how many of its attempts).

Not modelled: ``copyFile``, bucket listing (``GET /api/buckets/{ns}``), moves and
settings, organisations, quotas.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote

from hf_xet import XetFileInfo
from huggingface_hub.utils._xet import get_xet_session

if TYPE_CHECKING:
    from .hubstandin import HubStandIn

__all__ = ["BatchFault", "BucketStandIn"]

PAGE = 1000  # tree entries a page (assumed: the Hub does not say)
PATHS_PER_REQUEST = 1000  # huggingface_hub sends paths-info in chunks of 1,000
EMPTY_HASH = "0" * 64  # the Xet hash of no bytes
SELF_TOKEN = "/_xet/token"  # the token the stand-in reads its own CAS with
PING_SECONDS = 1.0  # the feed's keep-alive (assumed: short, so followers stop promptly)
SESSION_SECONDS = 30.0  # a feed session ends with ``reconnect`` after this long
_READ_ALL = 2**62  # a size past any file: hf_xet then reads a file to its end
_API = re.compile(r"^/api/buckets/([^/]+)/([^/]+)(?:/(tree|paths-info|batch|xet-write-token|xet-read-token|events)(?:/(.*))?)?$")  # fmt: skip
_RESOLVE = re.compile(r"^/buckets/([^/]+)/([^/]+)/resolve/(.+)$")


class _Handler(Protocol):
    """What this module uses of the stand-in's request handler."""

    command: str
    headers: Any
    close_connection: bool

    def _body(self) -> bytes: ...
    def _json(self) -> dict[str, Any]: ...
    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None: ...
    def _send_json(self, value: object, headers: dict[str, str] | None = None) -> None: ...
    def _range(self, size: int) -> tuple[int | None, int]: ...
    def send_response(self, code: int) -> None: ...
    def send_header(self, name: str, value: str) -> None: ...
    def end_headers(self) -> None: ...

    @property
    def wfile(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class _File:
    xet_hash: str
    size: int
    mtime_ms: int
    uploaded: datetime
    content_type: str | None


@dataclass
class _Bucket:
    bucket_id: str
    owner: str
    private: bool
    created: datetime
    updated: datetime
    files: dict[str, _File] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The change feed: (cursor number, when, the changes of one batch), oldest first.
    events: list[tuple[int, datetime, list[dict[str, Any]]]] = field(default_factory=list)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


@dataclass
class BatchFault:
    """Spoil the next ``times`` batch requests to bucket ``bucket_id`` (every bucket if None).

    ``failing`` paths are reported failed with their message (the others are applied).
    ``spelled`` says how the answer names a failing path (None: its entry has no ``path``),
    for a client that must not trust the answer to name paths as it sent them (a mock of
    answers the Hub does not document: its failure entries' shape is **assumed**).
    ``unapplied`` paths are silently not applied. With ``answer="lost"`` the answer is
    dropped (the connection closed), with ``answer="503"`` it is a 503 with
    ``Retry-After: 0``; either way what was applied stays applied."""

    failing: Mapping[str, str] = field(default_factory=dict)
    spelled: Mapping[str, str | None] = field(default_factory=dict)
    unapplied: Collection[str] = ()
    answer: str = "normal"  # "normal", "lost" or "503"
    times: int = 1
    bucket_id: str | None = None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_path(path: object) -> str:
    if not isinstance(path, str):
        raise _error(400, f"a path must be a string, not {path!r}")
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or "\\" in path or "\0" in path:
        raise _error(400, f"Invalid path: {path!r}")  # assumed text
    return path


def _error(status: int, message: str, code: str | None = None) -> Exception:
    from .hubstandin import HubError

    return HubError(status, message, code)


def _folder_order(path: str) -> list[bytes]:
    return [segment.encode() for segment in path.split("/")]


class BucketStandIn:
    """The buckets of one :class:`~testsupport.hubstandin.HubStandIn`."""

    def __init__(self, hub: HubStandIn) -> None:
        self.hub = hub
        self.cas_dir = Path(tempfile.mkdtemp(prefix="cargohold-xet-cas-"))
        self.faults: list[BatchFault] = []
        #: Every batch received: (bucket id, the NDJSON lines), in order.
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {EMPTY_HASH: 0}  # xet hashes known to be stored
        #: Whether the change feed is served (False: 404, as a Hub without it).
        self.feed = True
        self._following: dict[str, int] = {}  # feed sessions past ``ready``, by bucket

    def close(self) -> None:
        shutil.rmtree(self.cas_dir, ignore_errors=True)

    # -- set-up and inspection for tests --------------------------------------------------

    def create_bucket(self, bucket_id: str, *, private: bool = False) -> str:
        owner = bucket_id.split("/", 1)[0]
        now = datetime.now(UTC)
        with self._lock:
            if bucket_id in self._buckets:
                raise _error(409, f"You already created a bucket named {bucket_id}")  # assumed
            self._buckets[bucket_id] = _Bucket(bucket_id, owner, private, now, now)
        return bucket_id

    def inject(self, fault: BatchFault) -> None:
        with self._lock:
            self.faults.append(fault)

    def paths(self, bucket_id: str) -> dict[str, str]:
        """Every path in the bucket with its xet hash."""
        bucket = self._bucket(bucket_id)
        with bucket.lock:
            return {path: f.xet_hash for path, f in bucket.files.items()}

    def files(self, bucket_id: str) -> dict[str, bytes]:
        """Every file in the bucket with its bytes, read back through hf_xet."""
        return {path: self.read(h) for path, h in self.paths(bucket_id).items()}

    def following(self, bucket_id: str) -> int:
        """How many followers of the bucket's change feed are live now (past ``ready``)."""
        with self._lock:
            return self._following.get(bucket_id, 0)

    def read(self, xet_hash: str, start: int = 0, stop: int | None = None) -> bytes:
        """The bytes of stored content (``[start:stop]``)."""
        size = self._sizes.get(xet_hash, _READ_ALL)
        stop = size if stop is None else min(stop, size)
        if xet_hash == EMPTY_HASH or start >= stop:
            return b""
        return b"".join(self._stream(xet_hash, size, start, stop))

    # -- the model ------------------------------------------------------------------------

    def _bucket(self, bucket_id: str) -> _Bucket:
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            raise _error(404, "Bucket not found", "RepoNotFound")  # assumed text
        return bucket

    def _token_url(self, bucket_id: str, kind: str) -> str:
        return f"{self.hub.endpoint}/api/buckets/{bucket_id}/xet-{kind}-token"

    def _stream(self, xet_hash: str, size: int, start: int, stop: int) -> Iterator[bytes]:
        url = f"{self.hub.endpoint}{SELF_TOKEN}"
        group = get_xet_session().new_download_stream_group(
            token_refresh_url=url, token_refresh_headers={}, custom_headers={}
        )
        yield from group.download_stream(XetFileInfo(xet_hash, size), start=start, end=stop)

    def _size_of(self, xet_hash: object) -> int | None:
        """The size of content stored in the local CAS under ``xet_hash``, or None if no
        such content was uploaded."""
        if not isinstance(xet_hash, str) or not re.fullmatch(r"[0-9a-f]{64}", xet_hash):
            return None
        with self._lock:
            known = self._sizes.get(xet_hash)
        if known is not None:
            return known
        try:
            size = sum(len(chunk) for chunk in self._stream(xet_hash, _READ_ALL, 0, _READ_ALL))
        except Exception:  # hf_xet's error for content it cannot find
            return None
        if size == 0:
            return None  # hf_xet reads nothing for a hash it does not hold
        with self._lock:
            self._sizes[xet_hash] = size
        return size

    def _can_read(self, bucket: _Bucket, user: str | None) -> None:
        if bucket.private and user != bucket.owner:
            raise _error(401 if user is None else 404, "Bucket not found", "RepoNotFound")

    def _can_write(self, bucket: _Bucket, user: str | None, role: str | None) -> None:
        self._can_read(bucket, user)
        if user is None:
            raise _error(401, "You must be authenticated to write to a bucket")  # assumed
        if role != "write" or user != bucket.owner:
            raise _error(403, f"You don't have the rights to write to {bucket.bucket_id}")

    def _entry(self, path: str, file: _File) -> dict[str, Any]:
        return {
            "type": "file",
            "path": path,
            "size": file.size,
            "xetHash": file.xet_hash,
            "mtime": _iso(datetime.fromtimestamp(file.mtime_ms / 1000, UTC)),
            "uploadedAt": _iso(file.uploaded),
        }

    def _fault(self, bucket_id: str) -> BatchFault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.bucket_id in (None, bucket_id):
                    fault.times -= 1
                    return fault
        return None

    # -- endpoints ------------------------------------------------------------------------

    def batch(
        self, bucket: _Bucket, lines: list[dict[str, Any]]
    ) -> tuple[list[dict[str, str]], BatchFault | None]:
        paths = [_check_path(line.get("path")) for line in lines]
        if len(set(paths)) != len(paths):
            raise _error(400, "The same path appears twice in one batch")  # assumed
        for line in lines:
            if line.get("type") not in ("addFile", "deleteFile"):
                raise _error(400, f"Unsupported operation type: {line.get('type')!r}")
            if line["type"] == "addFile" and not isinstance(line.get("mtime"), int):
                raise _error(400, "addFile needs an integer mtime (milliseconds)")  # assumed
        fault = self._fault(bucket.bucket_id)
        failing = dict(fault.failing) if fault else {}
        unapplied = set(fault.unapplied) if fault else set()
        sizes = {
            line["path"]: self._size_of(line.get("xetHash"))
            for line in lines
            if line["type"] == "addFile" and line["path"] not in failing
        }
        failed: list[dict[str, str]] = []
        changes: list[dict[str, Any]] = []
        now = datetime.now(UTC)
        with bucket.lock:
            for line in lines:
                path = line["path"]
                if path in failing:
                    named = fault.spelled.get(path, path) if fault else path
                    entry = {"error": failing[path]}
                    failed.append(entry if named is None else {"path": named, **entry})
                    continue
                if line["type"] == "addFile":
                    size = sizes[path]
                    if size is None:
                        failed.append({"path": path, "error": "Xet hash not found"})  # assumed
                        continue
                    if path in unapplied:
                        continue
                    before = bucket.files.get(path)
                    bucket.files[path] = _File(
                        line["xetHash"], size, line["mtime"], now, line.get("contentType")
                    )
                    entry = self._entry(path, bucket.files[path])
                    del entry["type"]
                    changes.append({**entry, "op": "add" if before is None else "update"})
                else:
                    if path not in bucket.files:
                        failed.append({"path": path, "error": "File not found"})  # assumed
                        continue
                    if path in unapplied:
                        continue
                    del bucket.files[path]
                    changes.append({"path": path, "op": "delete"})
            bucket.updated = now
            if changes:
                seq = bucket.events[-1][0] + 1 if bucket.events else 1
                bucket.events.append((seq, now, changes))
                bucket.changed.notify_all()
        return failed, fault

    def tree(
        self, bucket: _Bucket, prefix: str, *, recursive: bool, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        with bucket.lock:
            files = {p: f for p, f in bucket.files.items() if p.startswith(prefix)}
        folder = prefix.rpartition("/")[0] + "/" if "/" in prefix else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, file in files.items():
            rest = path[len(folder) :]
            if recursive or "/" not in rest:
                entries[path] = self._entry(path, file)
            else:
                name = folder + rest.split("/", 1)[0]
                entries.setdefault(
                    name, {"type": "directory", "path": name, "uploadedAt": _iso(file.uploaded)}
                )
        ordered = sorted(entries, key=_folder_order)
        if cursor is not None:
            after = _folder_order(cursor)
            ordered = [p for p in ordered if _folder_order(p) > after]
        page = ordered[:PAGE]
        following = page[-1] if len(ordered) > PAGE else None
        return [entries[p] for p in page], following

    def info(self, bucket: _Bucket) -> dict[str, Any]:
        with bucket.lock:
            size = sum(f.size for f in bucket.files.values())
            count = len(bucket.files)
        return {
            "id": bucket.bucket_id,
            "private": bucket.private,
            "createdAt": _iso(bucket.created),
            "updatedAt": _iso(bucket.updated),
            "size": size,
            "totalFiles": count,
        }

    # -- routing (called by the stand-in's handler) ----------------------------------------

    def route(
        self,
        handler: _Handler,
        raw_path: str,
        query: dict[str, list[str]],
        user: str | None,
        role: str | None,
    ) -> bool:
        """Serve a bucket request; False if ``raw_path`` is not a bucket route."""
        if raw_path == SELF_TOKEN:
            self._token(handler)
            return True
        if match := _RESOLVE.match(raw_path):
            bucket = self._bucket(f"{unquote(match[1])}/{unquote(match[2])}")
            self._can_read(bucket, user)
            self._resolve(handler, bucket, unquote(match[3]))
            return True
        match = _API.match(raw_path)
        if match is None:
            return False
        namespace, name, action = unquote(match[1]), unquote(match[2]), match[3]
        method = handler.command
        if action is None:
            if method == "POST":
                if user is None or role != "write":
                    raise _error(
                        401 if user is None else 403, "You must use a write token to create buckets"
                    )
                namespace = user if namespace == "me" else namespace
                if namespace != user:
                    raise _error(
                        403, f"You don't have the rights to create a bucket under {namespace}"
                    )
                body = handler._json()
                self.create_bucket(
                    f"{namespace}/{name}", private=body.get("visibility") == "private"
                )
                handler._send_json({"url": f"{self.hub.endpoint}/buckets/{namespace}/{name}"})
                return True
            bucket = self._bucket(f"{namespace}/{name}")
            self._can_read(bucket, user)
            if method == "GET":
                handler._send_json(self.info(bucket))
            elif method == "DELETE":
                self._can_write(bucket, user, role)
                with self._lock:
                    del self._buckets[bucket.bucket_id]
                handler._send_json({})
            else:
                raise _error(405, f"{method} is not served on {raw_path}")
            return True
        bucket = self._bucket(f"{namespace}/{name}")
        self._can_read(bucket, user)
        if action in ("xet-write-token", "xet-read-token") and method == "GET":
            if action == "xet-write-token":
                self._can_write(bucket, user, role)
            self._token(handler)
        elif action == "batch" and method == "POST":
            self._can_write(bucket, user, role)
            self._batch(handler, bucket)
        elif action == "paths-info" and method == "POST":
            paths = handler._json().get("paths")
            if not isinstance(paths, list) or len(paths) > PATHS_PER_REQUEST:
                raise _error(400, f"paths must be a list of at most {PATHS_PER_REQUEST} paths")
            with bucket.lock:
                found = [
                    self._entry(p, bucket.files[p])
                    for p in dict.fromkeys(paths)
                    if p in bucket.files
                ]
            handler._send_json(found)
        elif action == "events" and method == "GET":
            if not self.feed:
                raise _error(404, "Not Found")
            self._events(handler, bucket, query)
        elif action == "tree" and method == "GET":
            prefix = unquote(match[4] or "")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            cursor = query.get("cursor", [None])[0]
            page, following = self.tree(bucket, prefix, recursive=recursive, cursor=cursor)
            headers = {}
            if following is not None:
                base = f"{self.hub.endpoint}/api/buckets/{bucket.bucket_id}/tree"
                if prefix:
                    base += "/" + quote(prefix, safe="")
                params = f"recursive={str(recursive).lower()}&cursor={quote(following, safe='')}"
                headers["Link"] = f'<{base}?{params}>; rel="next"'
            handler._send_json(page, headers)
        else:
            raise _error(405, f"{method} is not served on {raw_path}")
        return True

    def _token(self, handler: _Handler) -> None:
        expires = int(time.time()) + 3600
        cas = f"local://{self.cas_dir}"
        body = {"casUrl": cas, "accessToken": "standin-xet-token", "exp": expires}
        handler._send_json(
            body,
            {
                "X-Xet-Cas-Url": cas,
                "X-Xet-Access-Token": "standin-xet-token",
                "X-Xet-Token-Expiration": str(expires),
            },
        )

    def _batch(self, handler: _Handler, bucket: _Bucket) -> None:
        if not handler.headers.get("Content-Type", "").startswith("application/x-ndjson"):
            raise _error(400, "a batch body is NDJSON (application/x-ndjson)")  # assumed
        try:
            lines = [json.loads(line) for line in handler._body().splitlines() if line.strip()]
        except ValueError:
            raise _error(400, "a batch line is not JSON") from None
        if not lines or not all(isinstance(line, dict) for line in lines):
            raise _error(400, "a batch holds one JSON object a line")
        with self._lock:
            self.batches.append((bucket.bucket_id, lines))
        failed, fault = self.batch(bucket, lines)
        if fault is not None and fault.answer == "lost":
            handler.close_connection = True  # applied, but the client never hears so
            return
        if fault is not None and fault.answer == "503":
            handler._send(
                503,
                b'{"error": "injected: service unavailable"}',
                {"Retry-After": "0", "Content-Type": "application/json"},
            )
            return
        status = 422 if failed and len(failed) == len(lines) else 200
        handler._send(
            status, json.dumps({"failed": failed}).encode(), {"Content-Type": "application/json"}
        )

    def _events(self, handler: _Handler, bucket: _Bucket, query: dict[str, list[str]]) -> None:
        """One session of the change feed (see the module docstring)."""
        cursor, since = query.get("cursor", [None])[0], query.get("since", [None])[0]
        with bucket.lock:
            if cursor is not None:
                if not cursor.isdigit() or int(cursor) > (
                    bucket.events[-1][0] if bucket.events else 0
                ):
                    raise _error(400, f"Invalid cursor: {cursor!r}")  # assumed text
                replay = [e for e in bucket.events if e[0] > int(cursor)]
            elif since:
                try:
                    after = datetime.fromisoformat(since.replace("Z", "+00:00"))
                except ValueError:
                    raise _error(400, f"Invalid since: {since!r}") from None
                replay = [e for e in bucket.events if e[1] > after]
            else:
                replay = []
            last = bucket.events[-1][0] if bucket.events else None
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True  # the stream ends when the connection does

        def send(name: str, data: object) -> None:
            handler.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            handler.wfile.flush()

        try:
            for seq, _, changes in replay:
                send("changes", {"cursor": str(seq), "changes": changes})
            send("ready", {} if last is None else {"cursor": str(last)})
            with self._lock:
                self._following[bucket.bucket_id] = self._following.get(bucket.bucket_id, 0) + 1
        except OSError:
            return  # the follower went away
        try:
            ends = time.monotonic() + SESSION_SECONDS
            while self.hub._server is not None and time.monotonic() < ends:
                with bucket.changed:
                    bucket.changed.wait(PING_SECONDS)
                    fresh = [e for e in bucket.events if last is None or e[0] > last]
                for seq, _, changes in fresh:
                    send("changes", {"cursor": str(seq), "changes": changes})
                    last = seq
                if not fresh:
                    handler.wfile.write(b": ping\n\n")
                    handler.wfile.flush()
            send("reconnect", {} if last is None else {"cursor": str(last)})
        except OSError:
            pass  # the follower went away
        finally:
            with self._lock:
                self._following[bucket.bucket_id] -= 1

    def _resolve(self, handler: _Handler, bucket: _Bucket, path: str) -> None:
        with bucket.lock:
            file = bucket.files.get(path)
        if file is None:
            raise _error(404, f"File not found: {path}", "EntryNotFound")  # assumed text
        headers = {
            "X-Xet-Hash": file.xet_hash,
            "Link": f'<{self._token_url(bucket.bucket_id, "read")}>; rel="xet-auth"',
            "ETag": f'"{file.xet_hash}"',
            "Accept-Ranges": "bytes",
            "Content-Type": file.content_type or "application/octet-stream",
        }
        if handler.command == "HEAD":
            handler._send(200, b"", {**headers, "X-Linked-Size": str(file.size)})
            return
        start, stop = handler._range(file.size)
        if start is None:
            return  # a 416 was sent
        data = self.read(file.xet_hash, start, stop)
        if handler.headers.get("Range"):
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{file.size}"
            handler._send(206, data, headers)
        else:
            handler._send(200, data, headers)
