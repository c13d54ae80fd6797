"""Connection timeouts for ``cargohold serve``: uvicorn's h11 protocol with a header timeout.

uvicorn closes a keep-alive connection idle between requests (``timeout_keep_alive``),
but nothing bounds the time a client takes to send a request's headers: a connection that
opens and sends nothing, or trickles a header a byte at a time, stays open for good. Here
a request's headers must be complete within ``http_header_timeout`` seconds, counted from
the connection's start or from the first byte after an idle pause; past it the client
gets a 408 (when it sent anything) and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Settings

__all__ = ["uvicorn_options"]

_408_BODY = json.dumps(
    {
        "error": "the request's headers did not arrive in time",
        "hint": "send the whole request at once (CARGOHOLD_HTTP_HEADER_TIMEOUT)",
    }
).encode()
_408 = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_408_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _408_BODY
)


class _HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers do not arrive within
    ``header_timeout`` seconds (a class attribute, set by :func:`uvicorn_options`)."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._header_timer is None:
            self._arm()  # the first byte of a request after an idle pause
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        started = bool(self.conn.trailing_data[0])
        self._unset_keepalive_if_required()
        if started:
            self.transport.write(_408)
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply the service's
    connection settings: ``http_header_timeout`` (see the module docstring) and
    ``http_idle_timeout`` (uvicorn's keep-alive timeout)."""
    protocol = type(
        "CargoholdH11Protocol",
        (_HeaderTimeoutProtocol,),
        {"header_timeout": settings.http_header_timeout},
    )
    return {"http": protocol, "timeout_keep_alive": settings.http_idle_timeout}
