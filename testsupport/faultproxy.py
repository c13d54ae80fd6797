"""A loopback HTTP proxy that injects faults in front of a real server.

This is a mock, and says so: a real S3 server cannot be made to throttle (429 / 503
SlowDown) or fail with a 5xx on demand, so tests put this proxy in front of SeaweedFS.
Every request it does not fault is forwarded unchanged to the real server, and every
request is counted.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

__all__ = ["Fault", "FaultProxy", "forward", "read_body", "reply"]

_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Fault:
    """Answer the next ``times`` requests that ``match`` with ``status`` instead of
    forwarding them; or, with ``status=None``, forward them after ``delay`` seconds, and
    only once ``release`` is set when one is given (a request held back until the test
    says, not for a time it hopes is long enough). ``taken`` is set once a request (read
    whole) has taken this fault: from then on it is in the proxy's hands, whatever
    becomes of its client; ``landed`` once the real server has answered such a request
    forwarded late."""

    status: int | None
    times: int
    match: Callable[[str, str], bool] = field(default=lambda method, path: True)
    body: bytes = _SLOWDOWN
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    release: threading.Event | None = None
    taken: threading.Event = field(default_factory=threading.Event)
    landed: threading.Event = field(default_factory=threading.Event)


Headers = list[tuple[str, str]]
_HOP_BY_HOP = ("connection", "transfer-encoding", "content-length", "keep-alive")


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request's body, by its Content-Length (S3 clients always send one)."""
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def forward(
    upstream: tuple[str, int], method: str, path: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, Headers, bytes]:
    """Send one request to ``upstream`` and return its status, headers and whole body."""
    conn = http.client.HTTPConnection(*upstream, timeout=30)
    try:
        sent = {k: v for k, v in headers.items() if k.lower() != "connection"}
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def reply(handler: BaseHTTPRequestHandler, status: int, headers: Headers, data: bytes) -> None:
    """Answer with ``status``, ``headers`` (hop-by-hop ones left out) and ``data``. A HEAD
    answer keeps the Content-Length it was given: the size of what a GET would return."""
    handler.send_response(status)
    length = str(len(data))
    for name, value in headers:
        if name.lower() == "content-length" and handler.command == "HEAD":
            length = value
        elif name.lower() not in _HOP_BY_HOP:
            handler.send_header(name, value)
    handler.send_header("Content-Length", length)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)


class FaultProxy:
    """Forwards to ``upstream`` (``http://127.0.0.1:PORT``), except where a Fault applies."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").split(":")
        self.upstream = (host, int(port))
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self.request_headers: list[dict[str, str]] = []  # each request's, in arrival order
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.match(method, path):
                    fault.times -= 1
                    fault.taken.set()
                    return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                body = read_body(self)
                with proxy._lock:
                    proxy.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                fault = proxy._take_fault(self.command, self.path)
                late = None
                if fault is not None and fault.status is None:
                    if fault.release is not None:
                        fault.release.wait()
                    time.sleep(fault.delay)  # a slow remote: forward, but late
                    late, fault = fault, None
                if fault is not None:
                    with proxy._lock:
                        proxy.requests.append((self.command, self.path, int(fault.status)))
                    headers = [*fault.headers.items(), ("Content-Type", "application/xml")]
                    reply(self, fault.status, headers, fault.body)
                    return
                status, headers, data = forward(
                    proxy.upstream, self.command, self.path, body, dict(self.headers.items())
                )
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, status))
                if late is not None:
                    late.landed.set()
                reply(self, status, headers, data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
