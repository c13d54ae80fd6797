"""A real HTTP origin on loopback, for the download cache's tests, examples and benchmark.

A threaded ``http.server`` that serves files from memory the way CDNs and the Hugging Face
Hub do, and that can be told to misbehave:

- ``ETag`` (strong) and ``Last-Modified`` on every file; ``304 Not Modified`` for a matching
  ``If-None-Match`` (or, without one, an ``If-Modified-Since`` at or after the file's time);
- ``Range: bytes=a-b`` / ``bytes=a-`` -> ``206`` with ``Content-Range``, ``416`` past the
  end, ``If-Range`` honoured (a stale validator gets the whole file, ``200``); a file put
  with ``ranges=False`` ignores ``Range`` and sends no ``Accept-Ranges``;
- ``fail_mid_stream(path, after)``: the next GET of ``path`` sends its headers and ``after``
  bytes, then drops the connection;
- ``down()`` / ``up()``: the listening socket is closed (connection refused) and reopened on
  the same port; ``error(path, status)`` answers the next requests with a status;
- ``slow(path, seconds)``: each body is sent in pieces spread over about that long;
- every request is counted per ``(method, path)`` and recorded with its headers, and
  ``connections`` counts the TCP connections clients opened.

Nothing here is a mock of cargohold: it is an ordinary HTTP server that cargohold talks to
with httpx, as it would to a CDN.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

__all__ = ["Origin", "Request"]


@dataclass
class _File:
    data: bytes
    etag: str
    modified: float
    ranges: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    origin: Origin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests read .requests instead

    def setup(self) -> None:  # one handler per connection
        super().setup()
        with self.server.origin._lock:
            self.server.origin.connections += 1
            self.server.origin._open.add(self.connection)

    def finish(self) -> None:
        with self.server.origin._lock:
            self.server.origin._open.discard(self.connection)
        super().finish()

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        origin = self.server.origin
        path = self.path.split("?", 1)[0]
        origin._count(self.command, path)  # on arrival: a fast client may finish before we do
        status = origin._serve(self, path, body=body)
        origin._record(Request(self.command, path, status, dict(self.headers.items())))


class Origin:
    """Start with ``Origin().start()`` (or ``with Origin() as origin:``); stop with ``stop()``."""

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.counts: Counter[tuple[str, str]] = Counter()
        self.requests: list[Request] = []
        self.connections = 0
        self._open: set[socket.socket] = set()  # connections being served
        self._lock = threading.Lock()
        self._drops: dict[str, list[int]] = {}
        self._errors: dict[str, list[int]] = {}
        self._slow: dict[str, float] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- content ------------------------------------------------------------------------

    def put(
        self,
        path: str,
        data: bytes,
        *,
        ranges: bool = True,
        headers: dict[str, str] | None = None,
        content_type: str = "application/octet-stream",
        modified: float | None = None,
    ) -> str:
        """Serve ``data`` at ``path`` (a new ETag and Last-Modified); returns its URL."""
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        # HTTP dates have whole seconds: a change within the same second must still differ.
        stamp = float(int(modified if modified is not None else time.time()))
        old = self.files.get(path)
        if old is not None and old.modified >= stamp:
            stamp = old.modified + 1
        self.files[path] = _File(data, etag, stamp, ranges, dict(headers or {}), content_type)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- faults -------------------------------------------------------------------------

    def fail_mid_stream(self, path: str, after: int, *, times: int = 1) -> None:
        """The next ``times`` GETs of ``path`` send ``after`` body bytes, then drop."""
        with self._lock:
            self._drops.setdefault(path, []).extend([after] * times)

    def error(self, path: str, status: int, *, times: int = 1) -> None:
        """The next ``times`` requests for ``path`` get ``status`` and an empty body."""
        with self._lock:
            self._errors.setdefault(path, []).extend([status] * times)

    def slow(self, path: str, seconds: float) -> None:
        """Spread each body of ``path`` over about ``seconds`` (0 to stop)."""
        self._slow[path] = seconds

    def down(self) -> None:
        """Close the listening socket and drop open connections: new connections are
        refused until ``up()``."""
        self._shutdown()

    def up(self) -> None:
        """Listen again, on the same port."""
        self._listen()

    # -- counting -----------------------------------------------------------------------

    def gets(self, path: str) -> int:
        """GET requests for ``path`` so far (whatever their status)."""
        with self._lock:
            return self.counts[("GET", path)]

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _count(self, method: str, path: str) -> None:
        with self._lock:
            self.counts[(method, path)] += 1

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    # -- serving ------------------------------------------------------------------------

    def _serve(self, handler: _Handler, path: str, *, body: bool) -> int:
        with self._lock:
            queued = self._errors.get(path)
            error = queued.pop(0) if queued else None
        if error is not None:
            return _send_empty(handler, error, {})
        found = self.files.get(path)
        if found is None:
            return _send_empty(handler, 404, {})
        headers = {
            "ETag": found.etag,
            "Last-Modified": email.utils.formatdate(found.modified, usegmt=True),
            "Content-Type": found.content_type,
            **found.headers,
        }
        if found.ranges:
            headers["Accept-Ranges"] = "bytes"
        if _not_modified(handler, found):
            return _send_empty(handler, 304, headers)
        data, status = found.data, 200
        wanted = handler.headers.get("Range")
        if wanted and found.ranges and _if_range_holds(handler, found):
            parsed = _parse_range(wanted, len(found.data))
            if parsed is None:
                headers["Content-Range"] = f"bytes */{len(found.data)}"
                return _send_empty(handler, 416, headers)
            start, stop = parsed
            data, status = found.data[start:stop], 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(found.data)}"
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if not body:
            return status
        with self._lock:
            drops = self._drops.get(path)
            drop_after = drops.pop(0) if drops else None
        if drop_after is not None:
            handler.wfile.write(data[:drop_after])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # the body stops short of Content-Length
            return status
        self._write_body(handler, data, self._slow.get(path, 0.0))
        return status

    def _write_body(self, handler: _Handler, data: bytes, seconds: float) -> None:
        if seconds <= 0:
            handler.wfile.write(data)
            return
        pieces = 10
        step = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), step):
            handler.wfile.write(data[start : start + step])
            handler.wfile.flush()
            time.sleep(seconds / pieces)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        self._listen()
        return self

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.origin = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="test-origin", kwargs={"poll_interval": 0.05}
        )
        self._thread.daemon = True
        self._thread.start()

    def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        # A server that goes down drops its keep-alive connections too.
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)

    def stop(self) -> None:
        self._shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _send_empty(handler: _Handler, status: int, headers: dict[str, str]) -> int:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
    return status


def _not_modified(handler: _Handler, found: _File) -> bool:
    # RFC 9110 13.2.2: If-None-Match first; If-Modified-Since only without it.
    none_match = handler.headers.get("If-None-Match")
    if none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in none_match.split(",")]
        return "*" in tags or found.etag in tags
    since = handler.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError):
        return False
    return found.modified <= when


def _if_range_holds(handler: _Handler, found: _File) -> bool:
    validator = handler.headers.get("If-Range")
    if validator is None:
        return True
    if validator.startswith('"') or validator.startswith("W/"):
        return validator == found.etag  # a strong comparison, as If-Range requires
    try:
        return email.utils.parsedate_to_datetime(validator).timestamp() == found.modified
    except (TypeError, ValueError):
        return False


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a single ``bytes=`` range, or None when it is not satisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    if not match.group(1):  # a suffix: the last N bytes
        length = int(match.group(2))
        return (max(0, size - length), size) if length else None
    start = int(match.group(1))
    stop = int(match.group(2)) + 1 if match.group(2) else size
    if start >= size:
        return None
    return start, min(stop, size)
