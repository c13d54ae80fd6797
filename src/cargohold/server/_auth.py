"""Who may do what on the HTTP service, and what its responses may do in a browser.

One gate, an ASGI middleware in front of every route, so a route added later is private
unless it is listed here as public:

- **Public**: the dashboard page and its static files (no data: they call the API),
  ``/healthz``, ``/readyz`` (problems in words only to readers), ``/openapi.json`` and
  ``/api/auth`` (which mode, and what this caller may do). There is no ``/docs`` or
  ``/redoc``: FastAPI's pages load their scripts from a CDN, which would run on the
  service's origin (see create_app).
- **Read** (every other GET or HEAD: objects, listings, memo entries, stats, metrics): the
  write token (``CARGOHOLD_TOKEN``) or the read token (``CARGOHOLD_READ_TOKEN``). Objects
  and listings under ``public_prefixes`` need none; debug bundles and memo records never
  are public (config refuses such a prefix at open; the gate checks each key again).
- **Write** (any other method): the write token. Without one configured, writes are refused
  (403) rather than open to anyone.
- **Local mode** (neither token configured): a client on this machine (a loopback peer
  naming a loopback host, with no forwarding header) reads without a token, so
  ``cargohold serve`` on a laptop just works; anyone else gets public prefixes only. A
  proxy on the same host that adds no ``X-Forwarded-For`` (or ``Forwarded``, ...) makes
  every client look local: set a token behind a proxy. The Host check keeps a web page
  that rebinds its DNS name to 127.0.0.1 from reading through the visitor's browser.

Credentials are ``Authorization: Bearer <token>`` as RFC 6750 says: the scheme in any
case, one or more spaces, a token68; compared in constant time. A missing or wrong token
is a 401 with ``WWW-Authenticate: Bearer``; a valid token without the right (a read token
writing) or a caller no token could help (local mode) is a 403.

Every response carries ``X-Content-Type-Options: nosniff``. The dashboard gets a strict
Content-Security-Policy (scripts, styles and connections from its own origin only); API
responses get ``sandbox``, and an object whose type a browser would run (HTML, SVG, XML,
JavaScript, PDF, anything not known to be passive) is sent as an attachment: bytes anyone
uploaded never run on the service's origin.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection

from .. import errors
from ..config import TOKEN68, Settings
from ..keys import never_public, normalize_key, normalize_prefix

__all__ = [
    "AccessMiddleware",
    "AuthOut",
    "Gate",
    "exposure_warning",
    "install_access",
    "is_passive_type",
    "parse_bearer",
    "request_access",
    "require_write",
    "route_path",
]

Mode = Literal["token", "local"]
Access = Literal["none", "read", "write"]

#: Routes anyone may GET: they hold no data (or, for /readyz, only what a probe needs).
PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/openapi.json"})
AUTH_PATH = "/api/auth"
OBJECTS = "/api/objects"

#: A request carrying one of these came through a proxy: its peer address is the proxy's.
#: Via too, the one header RFC 9110 makes every proxy send, and X-Forwarded-Proto/-Port,
#: which a TLS terminator may add alone: they name no client, but say there is a proxy.
FORWARDING_HEADERS = (
    "forwarded",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-original-forwarded-for",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
)

#: The dashboard's policy: its own scripts, styles and API only; previews are blob: URLs
#: made from fetched bytes (so they carry the token), the favicon a data: URL.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data:; media-src 'self' blob:; base-uri 'none'; form-action 'none'"
)
#: Everything else the service sends: if a browser renders it as a page, that page has an
#: origin of its own and runs nothing.
API_CSP = "sandbox; default-src 'none'"
OBJECT_CSP = "sandbox"  # no default-src: a browser's own viewer still shows an image or video

#: Content types a browser only shows (never runs): served inline. Anything else is an
#: attachment, so a new active type cannot slip through a list of bad ones.
_PASSIVE_EXACT = frozenset(
    {
        "text/plain",
        "text/csv",
        "application/json",
        "application/octet-stream",
        "application/x-ndjson",
        "application/parquet",
        "application/zip",
        "application/gzip",
    }
)
_PASSIVE_FAMILIES = ("image/", "audio/", "video/", "font/")


class AuthOut(BaseModel):
    """What ``GET /api/auth`` says: the mode, and what the caller may do."""

    mode: Mode
    access: Access
    writes: bool
    public_prefixes: list[str]
    message: str


def parse_bearer(values: list[str]) -> str | Literal[False] | None:
    """The token of ``Authorization: Bearer <token>`` (RFC 6750, section 2.1).

    None when the request carries no bearer credentials (no header, or another scheme
    such as Basic, or a bare value with no scheme); False when it carries malformed ones
    (not a token68, an empty token, several Authorization headers). The scheme is
    case-insensitive (RFC 9110, section 11.1)."""
    if not values:
        return None
    if len(values) > 1:
        return False
    scheme, _, rest = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = rest.lstrip(" ")  # 1*SP between the scheme and the token
    return token if TOKEN68.fullmatch(token) else False


def is_passive_type(content_type: str | None) -> bool:
    """Whether a browser only displays this type (an image, a video, plain text, JSON)."""
    if not content_type:
        return True  # no type + nosniff: the browser neither guesses nor renders
    if "," in content_type:
        # A list of types: a browser takes the last one it can parse (Fetch's "extract a
        # MIME type"), so "image/png, text/html" is HTML to it. Hold.put refuses such a
        # type, but another tool may have written the remote.
        return False
    essence = content_type.split(";", 1)[0].strip().lower()
    if essence.endswith("+xml") or essence.endswith("/xml"):
        return False  # SVG and other XML documents run scripts
    return essence in _PASSIVE_EXACT or essence.startswith(_PASSIVE_FAMILIES)


def _loopback(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:  # 127.0.0.1:8000, localhost:8000
        host = host.rsplit(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class Gate:
    """The access rules for one Hold's settings (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._token = _digest(settings.token.encode()) if settings.token else None
        self._read_token = _digest(settings.read_token.encode()) if settings.read_token else None
        self.public_prefixes = settings.public_prefixes
        self.mode: Mode = "token" if self._token or self._read_token else "local"
        self.writes = self._token is not None

    def access(self, request: HTTPConnection) -> tuple[Access, str | None]:
        """What the caller may do, and ``"invalid_token"`` when it sent bearer credentials
        that are wrong or malformed (RFC 6750's error code), else None."""
        given = parse_bearer(request.headers.getlist("authorization"))
        if given is False:
            return "none", "invalid_token"
        if given is not None:
            # Both compared, in constant time, whichever matches; digests, so that not
            # even the tokens' lengths show in the time taken.
            token = _digest(given.encode())
            write = self._token is not None and hmac.compare_digest(token, self._token)
            read = self._read_token is not None and hmac.compare_digest(token, self._read_token)
            if write:
                return "write", None
            if read:
                return "read", None
            return "none", "invalid_token"
        if self.mode == "local" and _is_local(request):
            return "read", None
        return "none", None

    def public_key(self, key: str) -> bool:
        return key.startswith(self.public_prefixes) and not never_public(key)

    def public_listing(self, prefix: str) -> bool:
        """Listings under ``memo/`` never are public (records of a ``blobs`` namespace
        live beside the result files)."""
        return prefix.startswith(self.public_prefixes) and not never_public(prefix, prefix=True)

    def allows(self, request: Request, path: str, access: Access) -> bool:
        """Whether ``access`` is enough for this request (writes are judged apart)."""
        if path in PUBLIC_PATHS or path == AUTH_PATH or path.startswith("/static/"):
            return True
        if access != "none":
            return True
        if not self.public_prefixes:
            return False
        try:
            if path == OBJECTS:
                return self.public_listing(normalize_prefix(request.query_params.get("prefix", "")))
            if path.startswith(OBJECTS + "/"):
                return self.public_key(normalize_key(path.removeprefix(OBJECTS + "/")))
        except errors.InvalidInput:
            return False  # not a valid key: it cannot be public (readers hear why: 400)
        return False

    def message(self, access: Access) -> str:
        if self.mode == "local":
            who = (
                "this client is on the service's machine: it reads everything"
                if access == "read"
                else "only clients on the service's machine read (besides public prefixes)"
            )
            return f"local mode (no token configured): {who}; writes are off"
        if access == "write":
            return "token mode: this token reads and writes"
        if access == "read":
            writes = "" if self.writes else "; this service takes no writes"
            return f"token mode: this token reads{writes}"
        return "token mode: send a token to read (besides public prefixes)"

    def denial(self, write: bool, access: Access, problem: str | None) -> JSONResponse | None:
        """The response refusing this request (a write: None if it may write)."""
        if write:
            if access == "write":
                return None
            if not self.writes:
                return _refuse(
                    403,
                    "this service does not accept writes",
                    "set CARGOHOLD_TOKEN to enable PUT and DELETE",
                )
            if access == "read":
                return _refuse(
                    403,
                    "this token may read, not write",
                    "send Authorization: Bearer <CARGOHOLD_TOKEN>",
                    challenge='Bearer realm="cargohold", error="insufficient_scope"',
                )
            return _unauthorized(problem, "send Authorization: Bearer <CARGOHOLD_TOKEN>")
        if self.mode == "local" and problem is None:
            return _refuse(
                403,
                "local mode: only clients on the service's machine may read this",
                "set CARGOHOLD_TOKEN or CARGOHOLD_READ_TOKEN to serve other clients, or "
                "CARGOHOLD_PUBLIC_PREFIXES for what anyone may read",
            )
        hint = (
            "no token is configured (local mode): send no Authorization header"
            if self.mode == "local"
            else "send Authorization: Bearer <CARGOHOLD_TOKEN or CARGOHOLD_READ_TOKEN>"
        )
        return _unauthorized(problem, hint)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _is_local(request: HTTPConnection) -> bool:
    client = request.client
    if client is None or not _loopback(client.host):
        return False
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    return _loopback(request.headers.get("host", ""))


def _refuse(status: int, error: str, hint: str, challenge: str | None = None) -> JSONResponse:
    headers = {"www-authenticate": challenge} if challenge else None
    return JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)


def _unauthorized(problem: str | None, hint: str) -> JSONResponse:
    challenge = 'Bearer realm="cargohold"'
    if problem:
        challenge += f', error="{problem}"'
    error = "missing bearer token" if problem is None else "wrong or malformed bearer token"
    return _refuse(401, error, hint, challenge)


def route_path(scope: MutableMapping[str, Any]) -> str:
    """The path below where the app is mounted (as the router sees it): ``root_path`` is
    cut off only when the path is inside it (``/storagex`` is not under ``/storage``)."""
    path = str(scope["path"])
    root = str(scope.get("root_path", ""))
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path or "/"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AccessMiddleware:
    """The gate, and the headers every response gets (see the module docstring)."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The service has no websocket; one added later must not slip past the gate.
        if scope["type"] == "websocket" and self.gate.access(HTTPConnection(scope))[0] == "none":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = route_path(scope)
        write = request.method not in ("GET", "HEAD", "OPTIONS")
        access, problem = self.gate.access(request)
        scope.setdefault("state", {})["cargohold_access"] = access
        if not write and self.gate.allows(request, path, access):
            denial = None
        else:
            denial = self.gate.denial(write, access, problem)
        headed = _with_headers(send, path)
        if denial is not None:
            await denial(scope, receive, headed)
            return
        await self.app(scope, receive, headed)


def _with_headers(send: Send, path: str) -> Send:
    dashboard = path == "/" or path.startswith("/static/")
    is_object = path.startswith(OBJECTS + "/")

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["x-content-type-options"] = "nosniff"
            headers["referrer-policy"] = "no-referrer"
            if dashboard:
                headers["content-security-policy"] = DASHBOARD_CSP
            elif is_object and message.get("status", 200) < 300:
                headers["content-security-policy"] = OBJECT_CSP
                if not is_passive_type(headers.get("content-type")):
                    headers["content-disposition"] = "attachment"
            else:
                headers["content-security-policy"] = API_CSP
        await send(message)

    return send_with_headers


def require_write(request: Request) -> None:
    """A dependency of the routes that write: the gate already refused every other caller;
    this checks its verdict again, so no route writes if the gate were ever left out."""
    if request_access(request) != "write":
        raise errors.PermissionDenied(
            "this request may not write", hint="send Authorization: Bearer <CARGOHOLD_TOKEN>"
        )


def request_access(request: Request) -> Access:
    """What the gate let this request do (``"none"`` for a public route's anonymous caller)."""
    access: Access = request.scope.get("state", {}).get("cargohold_access", "none")
    return access


def install_access(app: FastAPI, settings: Settings) -> Gate:
    """Put the gate in front of ``app``, add ``GET /api/auth`` and describe the bearer
    scheme in its OpenAPI document."""
    gate = Gate(settings)
    app.add_middleware(AccessMiddleware, gate=gate)

    @app.get(AUTH_PATH, response_model=AuthOut, tags=["auth"])
    def auth(request: Request) -> AuthOut:
        """The service's mode (``token`` or ``local``) and what this caller may do: the
        dashboard asks it first. Public."""
        access = request_access(request)
        return AuthOut(
            mode=gate.mode,
            access=access,
            writes=gate.writes,
            public_prefixes=list(gate.public_prefixes),
            message=gate.message(access),
        )

    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _secured(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return gate


_ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _secured(schema: dict[str, Any]) -> dict[str, Any]:
    """The document with the bearer scheme, each operation's requirement and its 401/403."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "CARGOHOLD_TOKEN reads and writes, CARGOHOLD_READ_TOKEN reads. "
        "Objects and listings under CARGOHOLD_PUBLIC_PREFIXES need none; with no token "
        "configured (local mode) clients on the service's machine read without one.",
    }
    components.setdefault("schemas", {}).setdefault(
        "ErrorOut",
        {
            "title": "ErrorOut",
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "title": "Error"},
                "hint": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Hint"},
            },
        },
    )
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if path in PUBLIC_PATHS or path == AUTH_PATH:
                operation["security"] = []
                continue
            optional = method in ("get", "head") and path.startswith(OBJECTS)
            operation["security"] = [{"bearer": []}, {}] if optional else [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            for status, what in (("401", "No token, or a wrong one."), ("403", "Not allowed.")):
                responses.setdefault(
                    status,
                    {"description": what, "content": {"application/json": {"schema": _ERROR_REF}}},
                )
    return schema


def exposure_warning(host: str, settings: Settings) -> str | None:
    """What ``cargohold serve --host HOST`` must say loudly before it listens, if anything."""
    if settings.token or settings.read_token:
        return None
    public = (
        f" and anyone reads {', '.join(settings.public_prefixes)}"
        if settings.public_prefixes
        else ""
    )
    if _loopback(host):
        return (
            "local mode (no CARGOHOLD_TOKEN): clients on this machine read everything"
            f"{public}; writes are off. A proxy on this host that adds no X-Forwarded-For "
            "makes every client local: set CARGOHOLD_TOKEN behind a proxy."
        )
    return (
        f"WARNING: listening on {host} with no CARGOHOLD_TOKEN or CARGOHOLD_READ_TOKEN. "
        "Remote clients are refused (except public prefixes), but a proxy on this host that "
        "adds no X-Forwarded-For header makes every client look local, and local clients "
        "read everything. Set CARGOHOLD_TOKEN (python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))') before exposing this service."
    )
