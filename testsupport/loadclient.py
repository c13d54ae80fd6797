"""A write load on loopback: concurrent clients, each on its own keep-alive connection,
sending bodies of random content and size. A write counts as acknowledged only when its
full response came back with status 200 and the answer the app gives for it, with the
trial's token (so an answer from some other server on that port never counts); for
Gradio, when its ``complete`` event carried that answer; :attr:`LoadClient.acked` maps each acknowledged key
to the SHA-256 of the bytes sent.

Every attempt uses a key of its own, never reused: a write whose answer was lost (the
server died while answering) may still have been stored, and must not be able to
overwrite an acknowledged value of the same key on the remote.

Each client closes its connection after ``per_connection`` requests and opens a new one, as
pooled clients and proxies recycle theirs. Without that, a connection uvicorn accepted in the
instant it stopped listening (before its shutdown asked the open connections to close) is
never asked to close, and a client that keeps it busy keeps the server up forever: a
server's behaviour under an endless keep-alive, not cargohold's, which would make every
uvicorn model hang now and then even with no Hold at all (seen with the harness's
``direct`` store).

Clients go on through errors (refused or reset connections, timeouts), reconnecting,
until :meth:`LoadClient.stop`: a server that drains after SIGTERM keeps seeing load, as
it would on a platform.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import socket
import threading
import time
from types import TracebackType
from typing import Literal, Self

__all__ = ["LoadClient", "Protocol"]

Protocol = Literal["put", "gradio"]

KiB = 1024


class LoadClient:
    """``clients`` threads writing to ``127.0.0.1:port`` until stopped.

    ``protocol`` ``put``: ``PUT /w/<key>`` with the raw body (the FastAPI app).
    ``protocol`` ``gradio``: Gradio's HTTP API, ``POST /gradio_api/call/write`` then the
    event stream ``GET /gradio_api/call/write/<event_id>``; the body is random text.
    """

    def __init__(
        self,
        port: int,
        token: str,
        *,
        protocol: Protocol = "put",
        clients: int = 12,
        min_size: int = 2 * KiB,
        max_size: int = 20 * KiB,
        timeout: float = 15.0,
        per_connection: int = 50,
        seed: int = 0,
    ) -> None:
        self.port = port
        self.token = token
        self.protocol = protocol
        self.clients = clients
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self.per_connection = per_connection
        self.seed = seed
        self.acked: dict[str, str] = {}
        self.attempts = 0
        self.errors = 0
        self.first_ack_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._connections: dict[int, http.client.HTTPConnection] = {}

    @property
    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def start(self) -> Self:
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop every client; a request still waiting for its answer is abandoned (not
        acknowledged)."""
        self._stop.set()
        with self._lock:
            connections = list(self._connections.values())
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(30)
        alive = [t for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"{len(alive)} load clients did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_acks(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` writes were acknowledged; False at ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.acked_count < count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _connect(self, index: int) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        with self._lock:
            self._connections[index] = connection
        return connection

    def _run(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{index}")
        connection = self._connect(index)
        attempt = 0
        while not self._stop.is_set():
            key = f"c{index:02d}/{attempt}"
            attempt += 1
            size = rng.randint(self.min_size, self.max_size)
            if self.protocol == "put":
                body = os.urandom(size)
                ok = self._put(connection, key, body)
            else:
                body = os.urandom(size // 2).hex().encode()
                ok = self._gradio(connection, key, body)
            with self._lock:
                self.attempts += 1
                if ok:
                    self.acked[key] = hashlib.sha256(body).hexdigest()
                    if self.first_ack_at is None:
                        self.first_ack_at = time.monotonic()
                else:
                    self.errors += 1
            if not ok:
                connection.close()
                self._stop.wait(0.02)  # refused while the server starts or stops
                connection = self._connect(index)
            elif attempt % self.per_connection == 0:
                connection.close()
                connection = self._connect(index)
        connection.close()

    def _put(self, connection: http.client.HTTPConnection, key: str, body: bytes) -> bool:
        try:
            connection.request(
                "PUT", f"/w/{key}", body=body, headers={"Content-Type": "application/octet-stream"}
            )
            response = connection.getresponse()
            answer = response.read()  # the whole answer, or it does not count
        except (OSError, http.client.HTTPException):
            return False
        if response.will_close:
            connection.close()
        return response.status == 200 and answer == f"stored {self.token}".encode()

    def _gradio(self, connection: http.client.HTTPConnection, key: str, body: bytes) -> bool:
        try:
            payload = json.dumps({"data": [key, body.decode()]}).encode()
            connection.request(
                "POST",
                "/gradio_api/call/write",
                body=payload,
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                return False
            event_id = json.loads(answer)["event_id"]
            connection.request("GET", f"/gradio_api/call/write/{event_id}")
            response = connection.getresponse()
            stream = response.read().decode()
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            return False
        if response.will_close:
            connection.close()
        return response.status == 200 and _gradio_completed(stream, f"stored {key} {self.token}")


def _gradio_completed(stream: str, expected: str) -> bool:
    """Whether Gradio's event stream ended in ``complete`` with ``[expected]`` as data."""
    event = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:") and event == "complete":
            with contextlib.suppress(ValueError):
                return bool(json.loads(line.removeprefix("data:").strip()) == [expected])
            return False
    return False
