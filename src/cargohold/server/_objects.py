"""The object routes' HTTP pieces: ranges and entity tags, the request body as a file for
``Hold.put``, a response that streams one open version, and what the service may show.

Guarantees the routes build on:

- A GET's headers and body come from one open file of one version
  (:meth:`Hold.open_with_info`): a key rewritten or deleted mid-response never gives a
  reader a mixed or truncated object. The file is closed when the body is sent, and at
  once when the client goes away (:class:`VersionBody`).
- A PUT's body streams straight into the Hold's own staging file (:class:`BodyReader`):
  stored once, never held whole in memory, refused past ``max_upload_bytes``.
- Nothing the service answers names a local path or the remote's endpoint
  (:class:`Public`).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, BinaryIO

import anyio
import anyio.from_thread
import anyio.to_thread
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .. import errors
from ..hold import Hold

__all__ = [
    "BodyReader",
    "BodyStalled",
    "ClientGone",
    "Public",
    "TooLarge",
    "VersionBody",
    "parse_range",
    "parse_tags",
]

log = logging.getLogger("cargohold")

STREAM_CHUNK = 256 * 1024

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_TAG = re.compile(r'(W/)?"([^"]*)"')


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end)`` inclusive, ``"unsatisfiable"``, or None (serve it all).

    Strict: one range of ASCII digits only (``bytes=1_0-1_2`` or ``bytes=+1-2`` is not a
    range, so the whole object is served, as RFC 9110 allows for a Range it ignores).
    Several ranges are served as the whole object too."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = _position(last)
        if length <= 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = _position(first)
    end = _position(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored, like any malformed range
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


#: Past any object's size: a byte position with more digits than this is taken as this.
_FAR = 10**20


def _position(digits: str) -> int:
    """A byte position of a Range. int() refuses more than 4300 digits (ValueError), and a
    header of 5000 nines fits in any server's header limit: a position longer than any
    object could be is taken as ``_FAR``, so such a range is clamped or unsatisfiable,
    never a 500."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else _FAR


@dataclass(frozen=True, slots=True)
class Tag:
    value: str
    weak: bool


def parse_tags(header: str) -> list[Tag] | None:
    """The entity tags of an If-Match / If-None-Match / If-Range header; None for ``*``.

    A tag is ``"opaque"`` or ``W/"opaque"``; a bare token (a client that forgot the
    quotes) is taken as a strong tag. Anything else in the list is dropped."""
    text = header.strip()
    if text == "*":
        return None
    tags = []
    for item in text.split(","):
        item = item.strip()
        match = _TAG.fullmatch(item)
        if match:
            tags.append(Tag(match.group(2), weak=bool(match.group(1))))
        elif item and re.fullmatch(r"[!#-~]+", item) and '"' not in item:
            tags.append(Tag(item, weak=False))
    return tags


class TooLarge(Exception):
    """A request body passed ``max_upload_bytes``."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the body passed {cap} bytes")
        self.cap = cap


class ClientGone(Exception):
    """The client went away before its request body was complete."""


class BodyStalled(Exception):
    """No part of the request body came for ``idle`` seconds."""

    def __init__(self, idle: float) -> None:
        super().__init__(f"no part of the body came for {idle:g}s")
        self.idle = idle


class BodyReader:
    """The request body as a binary file object, for ``Hold.put`` on a worker thread.

    ``read`` takes the body from the event loop (``receive``) chunk by chunk, so the Hold
    writes it straight into its own staging file: stored once, memory bounded by one
    chunk. Raises TooLarge once more than ``cap`` bytes came, ClientGone if the client
    left, BodyStalled if nothing came for ``idle`` seconds (a stalled client holds no
    worker thread for long); the Hold then discards what it staged. Call it only from a
    thread started by anyio (Starlette's ``run_in_threadpool``)."""

    def __init__(self, receive: Receive, cap: int, idle: float) -> None:
        self._receive = receive
        self._cap = cap
        self._idle = idle
        self._buffer = bytearray()
        self._done = False
        self.received = 0

    def readable(self) -> bool:
        return True

    async def _next(self) -> Message | None:
        with anyio.move_on_after(self._idle):
            return await self._receive()
        return None

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            message = anyio.from_thread.run(self._next)
            if message is None:
                raise BodyStalled(self._idle)
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            self.received += len(chunk)
            if self.received > self._cap:
                raise TooLarge(self._cap)
            self._buffer += chunk
            self._done = not message.get("more_body", False)
        if size < 0 or size > len(self._buffer):
            size = len(self._buffer)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


class VersionBody(Response):
    """Bytes ``[start, start + length)`` of an open file of one version, streamed.

    The file is closed once the body is sent, or at once when the client goes away (the
    server's ``http.disconnect``), which is logged in one line: no descriptor or buffer of
    an aborted download waits for the garbage collector."""

    def __init__(
        self,
        fh: BinaryIO,
        *,
        key: str,
        start: int,
        length: int,
        status_code: int,
        headers: dict[str, str],
        media_type: str,
    ) -> None:
        self.fh = fh
        self.key = key
        self.start = start
        self.length = length
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = 0
        gone = False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async with anyio.create_task_group() as tasks:

                async def watch() -> None:
                    nonlocal gone
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    gone = sent < self.length
                    tasks.cancel_scope.cancel()

                tasks.start_soon(watch)
                await anyio.to_thread.run_sync(self.fh.seek, self.start)
                while sent < self.length:
                    want = min(STREAM_CHUNK, self.length - sent)
                    chunk = await anyio.to_thread.run_sync(self.fh.read, want)
                    if not chunk:  # never for a local-tier file; the server then cuts it
                        break
                    sent += len(chunk)
                    await send(
                        {
                            "type": "http.response.body",
                            "body": chunk,
                            "more_body": sent < self.length,
                        }
                    )
                tasks.cancel_scope.cancel()
        except OSError:
            gone = True  # a server whose send raises once the client left
        finally:
            self.fh.close()
        if gone:
            log.info(
                "cargohold: client went away after %d of %d bytes of %r",
                sent,
                self.length,
                self.key,
            )


class Public:
    """What the service may show of a message: the remote's name without its endpoint,
    query or local path, and no absolute path of this machine."""

    _URL = re.compile(r"\b(https?)://(?:[^\s'\"]*[^\s'\":,;.)])?")
    _PATH = re.compile(r"(?<![\w:/.~>-])/(?:[^\s'\"]*[^\s'\":,;.)])?")

    def __init__(self, hold: Hold) -> None:
        self.remote = public_remote(hold.remote.url)
        self._known = sorted(
            {
                (hold.remote.url, self.remote),
                (str(hold.local_dir), "<data dir>"),
                (str(hold.local_dir.parent), "<data dir>"),
            },
            key=lambda pair: -len(pair[0]),
        )

    def text(self, text: str | None, *, known_only: bool = False) -> str | None:
        """``text`` with the remote's URL and the data directory replaced by their public
        names, then (unless ``known_only``) any other URL's host and absolute path."""
        if text is None:
            return None
        for known, shown in self._known:
            text = text.replace(known, shown)
        if known_only:
            return text
        text = self._URL.sub(lambda m: f"{m.group(1)}://<endpoint>", text)
        return self._PATH.sub("<path>", text)

    def value(self, value: Any) -> Any:
        """``text`` applied to every string in a JSON-like value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def error(self, exc: errors.CargoholdError) -> dict[str, str | None]:
        # Bad input is the client's own (a key such as '/etc/passwd'): shown as sent.
        mine = isinstance(exc, errors.InvalidInput)
        return {
            "error": self.text(exc.message, known_only=mine),
            "hint": self.text(exc.hint, known_only=mine),
        }


def public_remote(url: str) -> str:
    """A remote URL as the service shows it: ``file://…`` for a directory of this
    machine; otherwise scheme, bucket or repo and prefix, without user, query or port."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return "file://…"
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{parts.path}"
