"""Routes of the HTTP service (see the package docstring)."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, BinaryIO, cast

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors
from .._version import __version__
from ..hold import Hold
from ..keys import normalize_key, normalize_prefix
from ..local import local_etag
from ..memo import list_entries, namespaces
from ..remotes import ObjectInfo
from ._auth import install_access, request_access
from ._auth import require_write as writer
from ._metrics import metrics_text

__all__ = ["create_app"]

STREAM_CHUNK = 256 * 1024
INLINE_BODY_MAX = 256 * 1024


def bench_path(hold: Hold) -> Path:
    """Where ``cargohold bench`` leaves its last results: they describe this machine."""
    return hold.local.root / "bench.json"


#: HTTP status for each kind of error, most specific first.
STATUS: list[tuple[type[errors.CargoholdError], int]] = [
    (errors.InvalidInput, 400),
    (errors.ConfigError, 500),
    (errors.NotFoundError, 404),
    (errors.AlreadyExists, 409),
    (errors.PreconditionFailed, 412),
    (errors.PermissionDenied, 403),
    (errors.StorageFull, 507),
    (errors.RemoteUnavailable, 503),
    (errors.TimedOut, 504),
    (errors.HoldClosed, 503),
    (errors.CargoholdError, 500),
]


class ObjectOut(BaseModel):
    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None = None
    metadata: dict[str, str] | None = None


class ObjectPage(BaseModel):
    objects: list[ObjectOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class ErrorOut(BaseModel):
    error: str
    hint: str | None = None


class MemoFileOut(BaseModel):
    name: str
    size: int
    content_type: str
    sha256: str
    url: str


class MemoEntryOut(BaseModel):
    digest: str
    version: str
    inputs: dict[str, Any]
    fields: dict[str, Any]
    created: datetime
    build_seconds: float
    kind: str
    size: int
    value: Any = None
    files: list[MemoFileOut]


class MemoNamespaceOut(BaseModel):
    namespace: str
    version: str
    entries: int
    bytes: int


class HealthOut(BaseModel):
    ok: bool
    problems: list[str] = []


class ReadyOut(HealthOut):
    #: Seconds sending what is pending would take at the measured drain rate, and the most
    #: the backlog is let reach (drain_fraction of the shutdown grace); null: unknown / none.
    drain_seconds: float | None = None
    drain_limit: float | None = None


def _error_response(exc: errors.CargoholdError) -> JSONResponse:
    status = next(code for cls, code in STATUS if isinstance(exc, cls))
    return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status)


def _object_out(info: ObjectInfo) -> ObjectOut:
    return ObjectOut(
        key=info.key,
        size=info.size,
        etag=info.etag,
        last_modified=info.last_modified,
        content_type=info.content_type,
        metadata=dict(info.metadata) if info.metadata is not None else None,
    )


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` inclusive, ``"unsatisfiable"``, or None (serve it all)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None  # no range, or several: the whole object (allowed by RFC 9110)
    spec = header[6:].strip()
    first, _, last = spec.partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                return "unsatisfiable"
            return (max(0, size - length), size - 1) if size else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start < 0 or start >= size or end < start:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or f'"{etag}"' in tags


def _not_modified(hold: Hold, key: str, header: str | None, etag: str) -> bool:
    """If-None-Match names the current etag, or the local etag this Hold gave the same
    write before the syncer uploaded it (the bytes did not change; only the remote's
    etag replaced the local one, which ``put(if_match=...)`` accepts too)."""
    if _etag_matches(header, etag):
        return True
    if not header or '"L' not in header:
        return False
    entry = hold.local.entry(key)
    return entry is not None and not entry.deleted and _etag_matches(header, local_etag(entry))


def create_app(hold: Hold, *, title: str = "cargohold") -> FastAPI:
    """The service for ``hold``. Mount it anywhere; its links are relative to its root."""
    app = FastAPI(
        title=title,
        version=__version__,
        description="Objects, generation cache entries, stats and health of a cargohold Hold.",
    )

    @app.exception_handler(errors.CargoholdError)
    async def cargohold_error(request: Request, exc: errors.CargoholdError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException) -> Response:
        # The router's own errors get the same body as ours. A key with a newline never
        # matches the ``{key:path}`` pattern, so it arrives here as a 404: judge it by the
        # key rules instead, so the client hears what is wrong with it (400).
        path = str(request.scope["path"]).removeprefix(request.scope.get("root_path", ""))
        if exc.status_code == 404 and path.startswith("/api/objects/"):
            try:
                normalize_key(path.removeprefix("/api/objects/"))
            except errors.InvalidInput as bad:
                return _error_response(bad)
        return JSONResponse(
            {"error": str(exc.detail), "hint": None},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    # -- objects ----------------------------------------------------------------------

    @app.get("/api/objects", response_model=ObjectPage, responses={400: {"model": ErrorOut}})
    def list_objects(
        prefix: str = "",
        cursor: Annotated[
            str | None, Query(description="The last key of the previous page.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> ObjectPage:
        """Objects under ``prefix``, in key order, a page at a time."""
        page: list[ObjectOut] = []
        more = False
        prefix = normalize_prefix(prefix)
        for info in _after(lambda: hold.list(prefix), cursor):
            if len(page) == limit:
                more = True
                break
            page.append(_object_out(info))
        return ObjectPage(objects=page, next_cursor=page[-1].key if more and page else None)

    object_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/octet-stream": {}}, "description": "The object's bytes."},
        206: {"description": "The requested range."},
        304: {"description": "Not modified (If-None-Match)."},
        400: {"model": ErrorOut},
        404: {"model": ErrorOut},
        416: {"description": "Range not satisfiable."},
    }

    @app.get("/api/objects/{key:path}", name="get_object", responses=object_responses)
    def get_object(key: str, request: Request) -> Response:
        """The object's bytes: streams, honours Range, ETag and If-None-Match."""
        return _serve(hold, normalize_key(key), request, head_only=False)

    @app.head("/api/objects/{key:path}", responses=object_responses, include_in_schema=False)
    def head_object(key: str, request: Request) -> Response:
        return _serve(hold, normalize_key(key), request, head_only=True)

    @app.put(
        "/api/objects/{key:path}",
        status_code=201,
        response_model=ObjectOut,
        dependencies=[Depends(writer)],
        responses={400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    )
    async def put_object(key: str, request: Request) -> ObjectOut:
        """Store the request body under ``key`` (write-back: returns once the local tier has
        it). ``x-cargohold-meta-NAME`` headers become metadata."""
        key = normalize_key(key)
        metadata = {
            name.removeprefix("x-cargohold-meta-"): value
            for name, value in request.headers.items()
            if name.startswith("x-cargohold-meta-")
        }
        body = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115 - closed below
        try:
            async for chunk in request.stream():
                body.write(chunk)
            body.seek(0)
            content_type = request.headers.get("content-type")
            info = await run_in_threadpool(
                hold.put,
                key,
                cast(BinaryIO, body),
                metadata=metadata,
                content_type=content_type,
            )
        finally:
            body.close()
        return _object_out(info)

    @app.delete(
        "/api/objects/{key:path}",
        status_code=204,
        dependencies=[Depends(writer)],
        responses={400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    )
    def delete_object(key: str) -> Response:
        """Delete ``key`` (idempotent)."""
        hold.delete(normalize_key(key))
        return Response(status_code=204)

    # -- the generation cache -------------------------------------------------------

    @app.get("/api/memo", response_model=list[MemoNamespaceOut])
    def memo_namespaces() -> list[MemoNamespaceOut]:
        """Every namespace and version with entries."""
        out = []
        for namespace, version in namespaces(hold):
            stats = hold.memo(namespace, version=version).stats()
            out.append(
                MemoNamespaceOut(
                    namespace=namespace, version=version, entries=stats.count, bytes=stats.bytes
                )
            )
        return out

    @app.get(
        "/api/memo/{namespace}",
        response_model=list[MemoEntryOut],
        responses={400: {"model": ErrorOut}},
    )
    def memo_entries(
        namespace: str,
        request: Request,
        version: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[MemoEntryOut]:
        """A namespace's entries with their metadata, newest first, with links to their
        files: what a front end needs for a "cached prompts" list. Without ``version``,
        the entries of every version, each labelled with its ``version``."""
        out = []
        for entry in list_entries(hold, namespace, version=version, limit=limit):
            out.append(
                MemoEntryOut(
                    digest=entry.digest,
                    version=entry.version,
                    inputs=entry.inputs,
                    fields=entry.fields,
                    created=entry.created,
                    build_seconds=entry.build_seconds,
                    kind=entry.kind,
                    size=entry.size,
                    value=entry.value if entry.kind in ("str", "json") else None,
                    files=[
                        MemoFileOut(
                            name=f.name,
                            size=f.size,
                            content_type=f.content_type,
                            sha256=f.sha256,
                            url=str(
                                request.url_for(
                                    "get_object", key=f"memo/blobs/{f.sha256[:2]}/{f.sha256}"
                                )
                            ),
                        )
                        for f in entry.files
                    ],
                )
            )
        return out

    # -- stats, metrics, health ------------------------------------------------------

    remote_size = _RemoteSize(hold)

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        """The Hold's status, read counters, sync throughput per minute, recent errors,
        and the last `cargohold bench` results."""
        return _stats(hold, remote_size)

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        """Prometheus text format."""
        return metrics_text(hold)

    @app.get("/healthz", response_model=HealthOut)
    def healthz() -> HealthOut:
        """The process is up."""
        return HealthOut(ok=True)

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
    def readyz(request: Request) -> Response:
        """Ready unless the loss window passed its threshold or the remote has been
        failing for too long. Public (for the platform's probes): the problems are told
        in words to readers only."""
        problems = readiness_problems(hold)
        if problems and request_access(request) == "none":
            problems = [f"{len(problems)} problem(s), told to readers only"]
        status = hold.status()
        body = ReadyOut(
            ok=not problems,
            problems=problems,
            drain_seconds=status.drain_seconds,
            drain_limit=status.drain_limit,
        ).model_dump_json()
        return Response(body, status_code=503 if problems else 200, media_type="application/json")

    # -- the dashboard ----------------------------------------------------------------

    static = files("cargohold.server").joinpath("static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> str:
        return static.joinpath("index.html").read_text(encoding="utf-8")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    install_access(app, hold.settings)  # the gate and response headers: server/_auth.py
    return app


def _serve(hold: Hold, key: str, request: Request, *, head_only: bool) -> Response:
    info = hold.head(key)
    etag = f'"{info.etag}"'
    headers = {
        "etag": etag,
        "accept-ranges": "bytes",
        "last-modified": format_datetime(info.last_modified.astimezone(UTC), usegmt=True),
        "cache-control": "no-cache",
    }
    if _not_modified(hold, key, request.headers.get("if-none-match"), info.etag):
        return Response(status_code=304, headers=headers)
    media_type = info.content_type or "application/octet-stream"
    wanted = _parse_range(request.headers.get("range"), info.size)
    if wanted == "unsatisfiable":
        return Response(
            status_code=416, headers={**headers, "content-range": f"bytes */{info.size}"}
        )
    status = 200
    start, end = 0, info.size - 1
    if isinstance(wanted, tuple):
        start, end = wanted
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{info.size}"
    length = max(0, end - start + 1)
    headers["content-length"] = str(length)
    if head_only:
        return Response(status_code=status, headers=headers, media_type=media_type)
    if length <= INLINE_BODY_MAX:
        data = (
            hold.get(key)[start : end + 1]
            if info.size <= INLINE_BODY_MAX
            else _read_range(hold, key, start, length)
        )
        return Response(data, status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        _stream(hold, key, start, length),
        status_code=status,
        headers=headers,
        media_type=media_type,
    )


def _read_range(hold: Hold, key: str, start: int, length: int) -> bytes:
    with hold.open(key) as fh:
        fh.seek(start)
        return fh.read(length)


def _stream(hold: Hold, key: str, start: int, length: int) -> Iterator[bytes]:
    with hold.open(key) as fh:  # one version from first byte to last, even if rewritten
        fh.seek(start)
        left = length
        while left > 0:
            chunk = fh.read(min(STREAM_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def readiness_problems(hold: Hold) -> list[str]:
    """Why the Hold should not take traffic, if it should not."""
    status = hold.status()
    settings = hold.settings
    problems = []
    if (
        status.drain_seconds is not None
        and status.drain_limit is not None
        and status.drain_seconds > status.drain_limit
    ):
        problems.append(
            f"what is pending would take about {status.drain_seconds:.1f}s to send, past "
            f"{status.drain_limit:.1f}s of the shutdown grace: a stop now could not ship it all"
        )
    if status.loss_window > settings.ready_max_loss_window:
        problems.append(
            f"the oldest unsynced write is {status.loss_window:.0f}s old "
            f"(limit {settings.ready_max_loss_window:.0f}s): {status.last_error or 'the remote is behind'}"
        )
    last_ok = status.last_sync.timestamp() if status.last_sync else None
    failing_since = status.last_error_at.timestamp() if status.last_error_at else None
    # Changes set aside as refused wait for the operator, not for the remote: they do not
    # make it failing (a key the remote can never take says nothing of its health).
    waiting = status.pending_count - len(status.refused)
    if failing_since and (last_ok is None or failing_since > last_ok) and waiting > 0:
        first_failure = _first_failure_since(hold, last_ok)
        if (
            first_failure is not None
            and time.time() - first_failure > settings.ready_max_unreachable
        ):
            problems.append(
                f"the remote has been failing for {time.time() - first_failure:.0f}s: {status.last_error}"
            )
    return problems


def _first_failure_since(hold: Hold, last_ok: float | None) -> float | None:
    failures = [when for when, _ in hold.syncer.state.errors if last_ok is None or when > last_ok]
    return min(failures) if failures else None


class _RemoteSize:
    """The remote tier's size from the shared catalog (an index count, kept 30 s), or None
    without one: listing a remote to size it could take minutes."""

    def __init__(self, hold: Hold, keep: float = 30.0) -> None:
        self.hold = hold
        self.keep = keep
        self._at = -math.inf
        self._size: dict[str, Any] | None = None

    def __call__(self) -> dict[str, Any] | None:
        catalog = self.hold.catalog
        if catalog is None or not catalog.available:
            return None
        now = time.monotonic()
        if now - self._at >= self.keep:
            self._size = None
            with contextlib.suppress(errors.CargoholdError):
                objects, total = catalog.count("")
                self._size = {"objects": objects, "bytes": total, "source": "catalog"}
            self._at = now
        return self._size


def _stats(hold: Hold, remote_size: _RemoteSize) -> dict[str, Any]:
    status = hold.status()
    state = hold.syncer.state
    now = time.time()
    per_minute: dict[int, list[int]] = {}
    for when, count, size in state.history:
        minute = int((now - when) // 60)
        if minute < 60:
            bucket = per_minute.setdefault(minute, [0, 0])
            bucket[0] += count
            bucket[1] += size
    bench = None
    with contextlib.suppress(OSError, ValueError):
        bench = json.loads(bench_path(hold).read_bytes())
    return {
        "remote": status.remote,
        "embedded_default": status.embedded_default,
        "pending_count": status.pending_count,
        "pending_bytes": status.pending_bytes,
        "loss_window": status.loss_window,
        "drain_seconds": status.drain_seconds,
        "drain_limit": status.drain_limit,
        "drain_objects_per_s": status.drain_objects_per_s,
        "drain_bytes_per_s": status.drain_bytes_per_s,
        "last_sync": status.last_sync.isoformat() if status.last_sync else None,
        "last_error": status.last_error,
        "local_bytes": status.local_bytes,
        "local_max_bytes": status.local_max_bytes,
        "remote_size": remote_size(),
        "syncing": status.syncing,
        "refused": status.refused,
        "remote_stats": dict(status.remote_stats),
        "reads": hold.reads,
        "read_throughs": hold.read_throughs,
        "synced_objects": state.synced_objects,
        "synced_bytes": state.synced_bytes,
        "throughput": [
            {"minutes_ago": minute, "objects": v[0], "bytes": v[1]}
            for minute, v in sorted(per_minute.items())
        ],
        "errors": [
            {"at": datetime.fromtimestamp(when, UTC).isoformat(), "message": message}
            for when, message in reversed(state.errors)
        ],
        "bench": bench,
    }


def _after(listing: Callable[[], Iterator[ObjectInfo]], cursor: str | None) -> Iterator[ObjectInfo]:
    """The listing from just after ``cursor`` (the last key of the previous page).

    Listings come in the remote's order, which is not always byte order: SeaweedFS lists
    folder by folder (``a/b`` before ``a-c``). So a page starts after the cursor's place in
    the listing, not after the keys that sort before it in bytes, which could come later
    and would never be shown. If the cursor's key is gone (deleted since), the page holds
    every key after it in either order: a key may then be shown twice, never skipped.
    """
    if cursor is None:
        yield from listing()
        return
    passed = False
    for info in listing():
        if passed:
            yield info
        elif info.key == cursor:
            passed = True
    if not passed:
        in_bytes, in_folders = cursor.encode(), _folder_order(cursor)
        for info in listing():
            if info.key.encode() > in_bytes or _folder_order(info.key) > in_folders:
                yield info


def _folder_order(key: str) -> tuple[bytes, ...]:
    """Folder by folder, as a directory walk lists keys (SeaweedFS)."""
    return tuple(segment.encode() for segment in key.split("/"))
