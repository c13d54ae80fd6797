"""Routes of the HTTP service (see the package docstring)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, BinaryIO, cast

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors
from .._fork import at_fork
from .._threads import start_thread
from .._version import __version__
from ..hold import Hold
from ..keys import normalize_key, normalize_prefix
from ..memo import list_entries, namespaces
from ..remotes import ObjectInfo, PutMode
from ._auth import install_access, request_access, route_path
from ._auth import require_write as writer
from ._metrics import metrics_text
from ._objects import (
    BodyReader,
    BodyStalled,
    ClientGone,
    Public,
    TooLarge,
    VersionBody,
    parse_range,
    parse_tags,
)

__all__ = ["create_app"]

INLINE_BODY_MAX = 256 * 1024

log = logging.getLogger("cargohold")


def bench_path(hold: Hold) -> Path:
    """Where ``cargohold bench`` leaves its last results: they describe this machine."""
    return hold.local_dir / "bench.json"


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


# The precondition and range headers, as the OpenAPI document lists them.
IfMatch = Annotated[
    str | None,
    Header(
        description='Only if the object has one of these ETags (`"etag"`, a list, or '
        "`*` for any). Otherwise 412; of racing writers with the same ETag, one wins."
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(description="`*`: only if the key does not exist (create-only), else 412."),
]
RangeHeader = Annotated[
    str | None,
    Header(
        alias="range",
        description="`bytes=START-END`, `bytes=START-` or `bytes=-LAST`: one range.",
    ),
]
IfRange = Annotated[
    str | None,
    Header(
        description="Serve Range only if the object still has this (strong) ETag, "
        "else the whole object. Dates never match."
    ),
]
GetIfNoneMatch = Annotated[
    str | None, Header(description="304 if the object still has one of these ETags.")
]


def _status(exc: errors.CargoholdError) -> int:
    return next(code for cls, code in STATUS if isinstance(exc, cls))


def _object_out(info: ObjectInfo) -> ObjectOut:
    return ObjectOut(
        key=info.key,
        size=info.size,
        etag=info.etag,
        last_modified=info.last_modified,
        content_type=info.content_type,
        metadata=dict(info.metadata) if info.metadata is not None else None,
    )


def _not_modified(hold: Hold, key: str, header: str | None, etag: str) -> bool:
    """If-None-Match names the version served (``etag``): as that etag, or as the local
    etag this Hold gave the same write before the syncer uploaded it."""
    if not header:
        return False
    tags = parse_tags(header)
    return tags is None or any(_names_version(hold, key, tag.value, etag) for tag in tags)


def _names_version(hold: Hold, key: str, tag: str, etag: str) -> bool:
    """``tag`` names the version whose etag is ``etag``: it is that etag, or both name
    the key's current version (a local etag and the remote's for the same write: the
    syncer may swap one for the other between two requests of a client)."""
    if tag == etag:
        return True
    # Only a local etag (``L...``, see cargohold.local.local_etag) can name the same
    # bytes under another tag: others are not worth two lookups.
    return tag.startswith("L") and hold.has_etag(key, tag) and hold.has_etag(key, etag)


def _range_still_valid(hold: Hold, key: str, if_range: str, etag: str) -> bool:
    """If-Range holds: one strong tag naming the version served (``etag``). Dates and
    weak tags never hold (the whole object is served)."""
    tags = parse_tags(if_range)
    if tags is None or len(tags) != 1 or tags[0].weak:
        return False
    return _names_version(hold, key, tags[0].value, etag)


def create_app(hold: Hold, *, title: str = "cargohold") -> FastAPI:
    """The service for ``hold``. Mount it anywhere; its links are relative to its root.

    It serves its OpenAPI document (``/openapi.json``) but no ``/docs`` or ``/redoc``
    page: FastAPI builds those from scripts on a CDN (jsDelivr), and a script loaded
    from another origin would run with the service's origin, next to its API and the
    dashboard's token. No response of the service refers to another origin."""
    app = FastAPI(
        title=title,
        version=__version__,
        description="Objects, generation cache entries, stats and health of a cargohold Hold.",
        docs_url=None,
        redoc_url=None,
    )
    public = Public(hold)

    def _error_response(
        exc: errors.CargoholdError, headers: dict[str, str] | None = None
    ) -> JSONResponse:
        # Messages name the remote and local files for the operator's logs: a client
        # hears the same, without paths or endpoints.
        return JSONResponse(public.error(exc), status_code=_status(exc), headers=headers)

    @app.exception_handler(errors.CargoholdError)
    async def cargohold_error(request: Request, exc: errors.CargoholdError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for problem in exc.errors():
            where = " ".join(str(part) for part in problem.get("loc", ()))
            problems.append(f"{where}: {problem.get('msg', 'invalid')}")
        return JSONResponse(
            {
                "error": "; ".join(problems) or "invalid request",
                "hint": "the API's OpenAPI document (openapi.json) lists what each route takes",
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(request: Request, exc: StarletteHTTPException) -> Response:
        # The router's own errors get the same body as ours. A key with a newline never
        # matches the ``{key:path}`` pattern, so it arrives here as a 404: judge it by the
        # key rules instead, so the client hears what is wrong with it (400).
        path = route_path(request.scope)  # the gate's own reading of the path
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

    error = {"model": ErrorOut}
    object_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/octet-stream": {}}, "description": "The object's bytes."},
        206: {"description": "The requested range."},
        304: {"description": "Not modified (If-None-Match)."},
        400: error,
        404: error,
        416: {"description": "Range not satisfiable."},
        422: error,
    }
    write_responses: dict[int | str, dict[str, Any]] = {
        400: error,
        401: error,
        403: error,
        412: {"model": ErrorOut, "description": "If-Match or If-None-Match did not hold."},
        422: error,
        503: error,
        504: error,
    }

    @app.get("/api/objects/{key:path}", name="get_object", responses=object_responses)
    def get_object(
        key: str,
        request: Request,
        range_: RangeHeader = None,
        if_range: IfRange = None,
        if_none_match: GetIfNoneMatch = None,
    ) -> Response:
        """The object's bytes: streams, honours Range, If-Range, ETag and If-None-Match.
        Headers and body always describe one version, even while the key is rewritten."""
        return _serve(hold, normalize_key(key), request, head_only=False)

    @app.head("/api/objects/{key:path}", responses=object_responses, include_in_schema=False)
    def head_object(key: str, request: Request) -> Response:
        return _serve(hold, normalize_key(key), request, head_only=True)

    @app.put(
        "/api/objects/{key:path}",
        status_code=201,
        response_model=ObjectOut,
        dependencies=[Depends(writer)],
        responses={
            200: {"model": ObjectOut, "description": "Replaced an existing object."},
            201: {"model": ObjectOut, "description": "Created the object."},
            **write_responses,
            408: {"model": ErrorOut, "description": "The body stalled (http_idle_timeout)."},
            413: {"model": ErrorOut, "description": "The body is larger than max_upload_bytes."},
            507: {"model": ErrorOut, "description": "No room to store it."},
        },
        openapi_extra={
            "requestBody": {
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                "required": False,
            }
        },
    )
    async def put_object(
        key: str,
        request: Request,
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """Store the request body under ``key`` (write-back: returns once the local tier has
        it; with If-Match or If-None-Match: * once the remote has it, which enforces them).
        ``x-cargohold-meta-NAME`` headers become metadata. The body streams into the
        Hold's own file, stored once, up to ``max_upload_bytes``.

        201 when the key did not exist, 200 when an object was replaced (RFC 9110,
        section 9.3.4); see ``_put_status`` for how that is known."""
        key = normalize_key(key)
        cap = hold.settings.max_upload_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            return _too_large(cap)
        metadata = {
            name.removeprefix("x-cargohold-meta-"): value
            for name, value in request.headers.items()
            if name.startswith("x-cargohold-meta-")
        }
        content_type = request.headers.get("content-type")
        body = BodyReader(request.receive, cap, hold.settings.http_idle_timeout)

        def store() -> tuple[int, ObjectInfo]:
            mode, expected = _put_condition(hold, key, if_match, if_none_match)
            status = _put_status(hold, key, mode, expected)
            try:
                return status, hold.put(
                    key,
                    cast(BinaryIO, body),
                    metadata=metadata,
                    content_type=content_type,
                    mode=mode,
                    if_match=expected,
                )
            except errors.AlreadyExists as exc:  # If-None-Match: * is a precondition (412)
                raise _precondition_failed(key, str(exc)) from exc

        try:
            status, info = await run_in_threadpool(store)
        except TooLarge:
            return _too_large(cap)
        except BodyStalled as stalled:
            log.info("cargohold: the upload of %r stalled (%s); nothing stored", key, stalled)
            return JSONResponse(
                {
                    "error": f"the request body stalled: {stalled}",
                    "hint": "send the body without pauses (CARGOHOLD_HTTP_IDLE_TIMEOUT)",
                },
                status_code=408,
                headers={"connection": "close"},
            )
        except ClientGone:
            log.info("cargohold: client went away during the upload of %r; nothing stored", key)
            return Response(status_code=400)  # no one hears it
        return JSONResponse(
            _object_out(info).model_dump(mode="json"),
            status_code=status,
            headers={"etag": f'"{info.etag}"'},
        )

    @app.delete(
        "/api/objects/{key:path}",
        status_code=204,
        dependencies=[Depends(writer)],
        responses=write_responses,
    )
    def delete_object(
        key: str, if_match: IfMatch = None, if_none_match: IfNoneMatch = None
    ) -> Response:
        """Delete ``key`` (idempotent). With If-Match, only if it still has that ETag (a
        check then a delete, atomic among this process's conditional writes only: the
        remote has no conditional delete); with If-None-Match: *, only if it is missing."""
        key = normalize_key(key)
        if if_none_match is not None:
            if parse_tags(if_none_match) is not None:
                raise errors.InvalidInput(
                    "If-None-Match on DELETE takes only *", hint="send If-None-Match: *"
                )
            if _exists(hold, key):
                raise _precondition_failed(key, f"{key!r} exists")
            return Response(status_code=204)
        if if_match is None:
            hold.delete(key)
        else:
            hold.delete(key, if_match=_current_match(hold, key, if_match))
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
                            # A path, not url_for's absolute URL: behind a TLS proxy the
                            # service hears http and the client's Host, so that URL would
                            # be http:// on an https dashboard (blocked by its CSP) and
                            # echo whatever Host was sent.
                            url=request.url_for(
                                "get_object", key=f"memo/blobs/{f.sha256[:2]}/{f.sha256}"
                            ).path,
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
        stats = _stats(hold, remote_size)
        # What the service shows: the remote's name, not its endpoint or local paths.
        stats = {name: public.value(value) for name, value in stats.items() if name != "remote"}
        return {"remote": public.remote, **stats}

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
        in words to readers only, and without local paths or endpoints."""
        problems = [str(public.text(problem)) for problem in readiness_problems(hold)]
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


def _too_large(cap: int) -> JSONResponse:
    # Connection: close, as the rest of the body is not read.
    return JSONResponse(
        {
            "error": f"the body is larger than this service takes ({cap} bytes)",
            "hint": "send a smaller object, or raise CARGOHOLD_MAX_UPLOAD_BYTES",
        },
        status_code=413,
        headers={"connection": "close"},
    )


def _precondition_failed(key: str, why: str) -> errors.PreconditionFailed:
    return errors.PreconditionFailed(
        f"precondition failed for {key!r}: {why}",
        key=key,
        hint="read the object again (GET or HEAD) for its current ETag",
    )


def _exists(hold: Hold, key: str) -> bool:
    try:
        hold.head(key)
    except errors.NotFoundError:
        return False
    return True


def _current_match(hold: Hold, key: str, header: str) -> str:
    """The etag to pass on as ``if_match`` for an If-Match header.

    One strong tag is passed on as it is (the remote, or the Hold for a local etag, then
    compares it). ``*`` or a list: the current etag, if it is ``*`` or in the list (a
    writer that lands in between makes the conditional write fail: 412, never a lost
    update); else 412. Weak tags never match (If-Match compares strongly)."""
    tags = parse_tags(header)
    if tags is not None and len(tags) == 1 and not tags[0].weak:
        return tags[0].value
    try:
        current = hold.head(key).etag
    except errors.NotFoundError:
        raise _precondition_failed(key, f"{key!r} does not exist") from None
    if tags is None or any(
        not tag.weak and _names_version(hold, key, tag.value, current) for tag in tags
    ):
        return current
    raise _precondition_failed(key, f"{key!r} has none of the ETags in If-Match")


def _put_condition(
    hold: Hold, key: str, if_match: str | None, if_none_match: str | None
) -> tuple[PutMode, str | None]:
    """``(mode, if_match)`` for ``Hold.put`` from a PUT's preconditions."""
    if if_none_match is not None:
        if parse_tags(if_none_match) is not None:
            raise errors.InvalidInput(
                "If-None-Match on PUT takes only *",
                hint="send If-None-Match: * to create only, or If-Match: ETAG to replace one version",
            )
        if if_match is not None:
            raise errors.InvalidInput(
                "If-Match and If-None-Match: * together can never both hold",
                hint="send one of them",
            )
        return "create", None
    if if_match is None:
        return "overwrite", None
    return "overwrite", _current_match(hold, key, if_match)


def _put_status(hold: Hold, key: str, mode: PutMode, if_match: str | None) -> int:
    """What a PUT that succeeds answers: 201 if it creates ``key``, 200 if it replaces it.

    A conditional PUT knows: create-only succeeds only on a missing key, If-Match only on
    an existing one (the remote enforces both). An unconditional one asks before it
    writes (the local tier, else one HEAD to the remote), so a key that existed when the
    request came answers 200. Two unconditional PUTs racing to create one key may both
    answer 201 (each found it missing); a delete racing a PUT may turn a 200 into a 201
    the other way round. When the remote cannot say, the answer is 200: a created object
    called replaced misleads less than the opposite, and the write is stored all the
    same. A write must answer at the local tier's speed during an outage, so the HEAD is
    not tried while this process's syncer backs off from a failing remote, and otherwise
    waited for at most ``_ASK_SECONDS`` (a HEAD to a remote that went down, or that only
    another process syncs with, would wait out the remote's retries: ``retry_timeout``)."""
    if mode == "create":
        return 201
    if if_match is not None or hold.remote_failing:
        return 200
    return 201 if _existed(hold, key) is False else 200


#: The longest a PUT waits to learn whether its key existed; and how many such questions
#: may be left running (each on a thread of its own, until the remote answers).
_ASK_SECONDS = 1.0
_ASKERS = 8
_askers = threading.BoundedSemaphore(_ASKERS)


def _existed(hold: Hold, key: str) -> bool | None:
    """Whether ``key`` exists (the local tier, else one HEAD), or None when that is not
    known within ``_ASK_SECONDS`` (the question goes on, on a daemon thread, and its answer
    is dropped) or too many questions are still waiting for the remote."""
    if not _askers.acquire(blocking=False):
        return None
    answer: list[bool | None] = [None]

    def ask() -> None:
        try:
            hold.head(key, max_age=math.inf)  # a local copy answers without the remote
            answer[0] = True
        except errors.NotFoundError:
            answer[0] = False
        except errors.CargoholdError as exc:
            log.info("cargohold: could not tell whether %r exists (%s): answering 200", key, exc)
        finally:
            _askers.release()

    # A daemon: an exit never waits for a question nobody is waiting for any more.
    asker = start_thread(ask, name="cargohold-put-status")
    asker.join(_ASK_SECONDS)
    return answer[0]


def _reset_askers() -> None:
    global _askers
    _askers = threading.BoundedSemaphore(_ASKERS)  # permits held by the parent's threads


at_fork(_reset_askers)


def _serve(hold: Hold, key: str, request: Request, *, head_only: bool) -> Response:
    """One version's headers and bytes. GET opens the version first and takes every
    header from that open file's info (never a ``head`` then a later read, which a
    rewrite in between would mix); HEAD reads one row's info."""
    if head_only:
        return _respond(hold, key, request, hold.head(key), None)
    if request.headers.get("if-none-match"):
        # A revalidation: answered from one row's info when it is still current, with no
        # download of a body it does not need.
        info = hold.head(key)
        if _not_modified(hold, key, request.headers.get("if-none-match"), info.etag):
            return _respond(hold, key, request, info, None)
    fh, info = hold.open_with_info(key)
    try:
        return _respond(hold, key, request, info, fh)
    except BaseException:
        fh.close()
        raise


def _respond(
    hold: Hold, key: str, request: Request, info: ObjectInfo, fh: BinaryIO | None
) -> Response:
    """The response for ``info``; a body from ``fh`` (taken over: closed by the response
    or here), none without it (HEAD)."""
    etag = f'"{info.etag}"'
    headers = {
        "etag": etag,
        "accept-ranges": "bytes",
        "last-modified": format_datetime(info.last_modified.astimezone(UTC), usegmt=True),
        "cache-control": "no-cache",
    }
    media_type = info.content_type or "application/octet-stream"
    wanted = None
    status = 200
    if _not_modified(hold, key, request.headers.get("if-none-match"), info.etag):
        status = 304
    else:
        range_header = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if range_header and (
            if_range is None or _range_still_valid(hold, key, if_range, info.etag)
        ):
            wanted = parse_range(range_header, info.size)
    if status == 304 or wanted == "unsatisfiable":
        if fh is not None:
            fh.close()
        if status == 304:
            return Response(status_code=304, headers=headers)
        headers["content-range"] = f"bytes */{info.size}"
        return Response(status_code=416, headers=headers)
    start, end = 0, info.size - 1
    if isinstance(wanted, tuple):
        start, end = wanted
        status = 206
        headers["content-range"] = f"bytes {start}-{end}/{info.size}"
    length = max(0, end - start + 1)
    headers["content-length"] = str(length)
    if fh is None:
        return Response(status_code=status, headers=headers, media_type=media_type)
    if length > INLINE_BODY_MAX:
        return VersionBody(
            fh,
            key=key,
            start=start,
            length=length,
            status_code=status,
            headers=headers,
            media_type=media_type,
        )
    with fh:
        fh.seek(start)
        data = fh.read(length)
    return Response(data, status_code=status, headers=headers, media_type=media_type)


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
    failures = [
        when for when, _ in hold.sync_activity().errors if last_ok is None or when > last_ok
    ]
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
    state = hold.sync_activity()
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
