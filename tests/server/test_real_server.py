"""The HTTP service's promises against a real ``cargohold serve`` process on loopback:
readers racing a writer only ever get whole versions, conditional writes have one winner,
a client trickling headers is cut off, and aborted downloads release their files at once.

Each test starts its own server (stopped by its PID) and asserts contents and status
codes, never timings: a wait is bounded only so that a broken server fails the test
instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testsupport.children import dying_with_parent

TOKEN = "real-server-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
#: Generous bound on any one wait: reached only when the server is broken.
PATIENCE = 60.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=PATIENCE, headers=AUTH)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE)
        return sock

    def open_blob_files(self) -> list[str]:
        """Files of the local tier's blobs the server process holds open."""
        held = []
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if f"{os.sep}blobs{os.sep}" in target:
                    held.append(target)
        return held


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(tmp_path: Path, **settings: str) -> Iterator[Server]:
    """``cargohold serve`` on the embedded default remote, with ``CARGOHOLD_<NAME>``
    variables from ``settings``; stopped by its PID (SIGTERM, then SIGKILL)."""
    port = _free_port()
    env = {
        **os.environ,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_TOKEN": TOKEN,
        "CARGOHOLD_SHUTDOWN_GRACE": "10",
        **{f"CARGOHOLD_{name.upper()}": value for name, value in settings.items()},
    }
    env.pop("CARGOHOLD_REMOTE", None)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dying_with_parent([sys.executable, "-m", "cargohold", "serve", "--port", str(port)]),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, tmp_path / "data", log)
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200:
                    break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve never answered /healthz"
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _version(n: int) -> bytes:
    """Version ``n`` of the raced key: 100 KiB, 200 KiB or 2 MiB, its first line naming
    its number and size, every other byte derived from the number."""
    size = (100 * 1024, 200 * 1024, 2 * 1024 * 1024)[n % 3]
    head = f"v{n:06d} {size:08d}\n".encode()
    return head + bytes([n % 251]) * (size - len(head))


def _judge(r: httpx.Response) -> tuple[str | None, int]:
    """(what is wrong with a reader's response, the version it holds)."""
    if r.status_code != 200:
        return f"status {r.status_code}", -1
    body = r.content
    try:
        number, size = (int(field.lstrip(b"v")) for field in body[:16].split())
    except ValueError:
        return f"a body that starts with no version: {body[:16]!r}", -1
    if len(body) != int(r.headers["content-length"]) or len(body) != size:
        return f"{len(body)} bytes of v{number} ({size} bytes)", number
    if body != _version(number):
        return f"a body mixing versions, starting as v{number}", number
    return None, number


def test_readers_racing_a_writer_get_whole_versions(tmp_path: Path) -> None:
    """One writer cycles versions of one key; three readers check every body against its
    Content-Length, its own first line, and the ETag it came with."""
    versions = 45
    with serve(tmp_path) as server:
        with server.client() as client:
            assert (
                client.put("/api/objects/race.bin", content=_version(0), headers=AUTH).status_code
                == 201
            )
        reads = 0
        reads_changed = threading.Condition()
        writing = threading.Event()
        writing.set()
        problems: list[str] = []
        bodies_by_etag: dict[str, set[int]] = {}
        seen: set[int] = set()
        lock = threading.Lock()

        def reader() -> None:
            nonlocal reads
            with server.client() as client:
                while writing.is_set():
                    try:
                        r = client.get("/api/objects/race.bin")
                    except httpx.TransportError as exc:  # a body cut short
                        with lock:
                            problems.append(f"transport error: {exc!r}")
                        continue
                    problem, number = _judge(r)
                    with lock:
                        if problem:
                            problems.append(problem)
                        else:
                            bodies_by_etag.setdefault(r.headers["etag"], set()).add(number)
                            seen.add(number)
                    with reads_changed:
                        reads += 1
                        reads_changed.notify_all()

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            with server.client() as client:
                for n in range(1, versions):
                    # Readers have read since the last write, so reads overlap every write.
                    with reads_changed:
                        target = reads + 3
                        assert reads_changed.wait_for(
                            lambda target=target: reads >= target or bool(problems),  # type: ignore[misc]
                            timeout=PATIENCE,
                        )
                    r = client.put("/api/objects/race.bin", content=_version(n), headers=AUTH)
                    assert r.status_code == 200, r.text  # replaced
        finally:
            writing.clear()
            for t in threads:
                t.join()
        assert problems == []
        assert len(seen) > 1
        # An ETag names one version: never two different bodies.
        assert {etag: numbers for etag, numbers in bodies_by_etag.items() if len(numbers) > 1} == {}
    assert "Traceback" not in server.log.read_text()


def test_racing_conditional_writes_have_one_winner(tmp_path: Path) -> None:
    with serve(tmp_path) as server, server.client() as client:
        url = "/api/objects/doc.json"
        created = client.put(url, content=b"v0", headers=AUTH)
        assert created.status_code == 201
        etag = created.headers["etag"]
        racers = 20

        def race(headers: dict[str, str], url: str) -> list[int]:
            statuses: list[int] = []
            start = threading.Barrier(racers)

            def put(n: int) -> None:
                with server.client() as own:
                    start.wait()
                    r = own.put(url, content=f"racer {n}".encode(), headers={**AUTH, **headers})
                    statuses.append(r.status_code)

            threads = [threading.Thread(target=put, args=(n,)) for n in range(racers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return sorted(statuses)

        assert race({"if-match": etag}, url) == [200] + [412] * (racers - 1)  # a replace
        assert client.get(url).content.startswith(b"racer ")
        assert race({"if-none-match": "*"}, "/api/objects/new.json") == [201] + [412] * (racers - 1)
        current = client.get(url)
        refused = client.delete(url, headers={**AUTH, "if-match": '"wrong"'})
        assert refused.status_code == 412
        assert set(refused.json()) == {"error", "hint"}
        assert client.get(url).content == current.content
        assert (
            client.delete(url, headers={**AUTH, "if-match": current.headers["etag"]}).status_code
            == 204
        )
        assert client.get(url).status_code == 404


def _put_and_delete_at_once(server: Server, url: str, etag: str) -> dict[str, int]:
    """PUT If-Match and DELETE If-Match ``etag`` released together: their statuses."""
    start = threading.Barrier(2)
    statuses: dict[str, int] = {}

    def put() -> None:
        with server.client() as own:
            start.wait()
            statuses["put"] = own.put(
                url, content=b"replaced", headers={"if-match": etag}
            ).status_code

    def delete() -> None:
        with server.client() as own:
            start.wait()
            statuses["delete"] = own.delete(url, headers={"if-match": etag}).status_code

    threads = [threading.Thread(target=put), threading.Thread(target=delete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def test_a_put_racing_a_delete_on_one_etag_has_one_winner(tmp_path: Path) -> None:
    """One of them gets its 2xx, the other 412, and the key then is what the winner left."""
    with serve(tmp_path) as server, server.client() as client:
        url = "/api/objects/contested.txt"
        outcomes = []
        for n in range(12):
            etag = client.put(url, content=b"before").headers["etag"]
            statuses = _put_and_delete_at_once(server, url, etag)
            after = client.get(url)
            outcomes.append((statuses["put"], statuses["delete"], after.status_code))
            if statuses["put"] == 200:  # it replaced the object
                assert after.content == b"replaced", n
        assert set(outcomes) <= {(200, 412, 200), (412, 204, 404)}, outcomes
    assert "Traceback" not in server.log.read_text()


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_slow_headers_stalled_bodies_idle_connections_and_oversized_uploads_are_cut_off(
    tmp_path: Path,
) -> None:
    with serve(
        tmp_path, http_header_timeout="2", http_idle_timeout="2", max_upload_bytes="1000"
    ) as server:
        # Headers trickling in, never finished: 408 in the service's shape, then closed.
        with server.connect() as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            answer = _read_until_closed(slow)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert set(json.loads(answer.split(b"\r\n\r\n", 1)[1])) == {"error", "hint"}
        # A connection that never sends a byte is closed without an answer.
        with server.connect() as silent:
            assert _read_until_closed(silent) == b""
        # A keep-alive connection left idle after a request is closed too.
        with server.connect() as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_until_closed(idle)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b'{"ok":true,"problems":[]}')
        # A body declared past max_upload_bytes is refused before it is sent.
        with server.connect() as big:
            big.sendall(
                b"PUT /api/objects/big HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                b"Content-Length: 5000\r\n\r\n"
            )
            answer = _read_until_closed(big)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert "CARGOHOLD_MAX_UPLOAD_BYTES" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["hint"]
        # A body that stalls is answered 408 once it has been idle, and nothing is stored.
        with server.connect() as stalled:
            stalled.sendall(
                b"PUT /api/objects/stalled HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                b"Content-Length: 900\r\n\r\n" + b"s" * 100
            )
            answer = _read_until_closed(stalled)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert "CARGOHOLD_HTTP_IDLE_TIMEOUT" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["hint"]
        with server.client() as client:  # and the server still serves everyone else
            assert client.get("/api/objects/stalled").status_code == 404
            assert client.get("/api/objects/big").status_code == 404
            assert (
                client.put("/api/objects/small", content=b"s" * 1000, headers=AUTH).status_code
                == 201
            )
    assert "Traceback" not in server.log.read_text()


def _blob_files(server: Server) -> list[Path]:
    return [p for p in (server.data_dir / "local" / "blobs").rglob("*") if p.is_file()]


def _abort_download(server: Server, key: str) -> None:
    """Ask for ``key``, read the response's head, and leave mid-body with a reset."""
    with server.connect() as sock:
        sock.sendall(
            f"GET /api/objects/{key} HTTP/1.1\r\nHost: x\r\n".encode()
            + b"Authorization: Bearer "
            + TOKEN.encode()
            + b"\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head and (chunk := sock.recv(65536)):
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 ")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_aborted_downloads_release_their_files_at_once(tmp_path: Path) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB: streamed from the local tier's file
    # Larger than any socket buffers on both ends: a download of it left after its head
    # is always cut mid-body, which the server logs in one line.
    long = b"L" * (32 * 1024 * 1024)
    with serve(tmp_path, log_level="info") as server:
        with server.client() as client:
            for key, data in (("movie.bin", body), ("long.bin", long)):
                assert client.put(f"/api/objects/{key}", content=data).status_code == 201
        for _ in range(200):
            _abort_download(server, "movie.bin")
        for _ in range(3):
            _abort_download(server, "long.bin")
        # Each abort is noticed by the server as it happens (nothing waits for the garbage
        # collector): the count falls to zero. Bounded, so a leak fails instead of hanging.
        deadline = time.monotonic() + PATIENCE
        while server.open_blob_files() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.open_blob_files() == []
        # Uploads cut mid-body store nothing and leave no file behind.
        for _ in range(20):
            with server.connect() as sock:
                sock.sendall(
                    b"PUT /api/objects/cut.bin HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                    b"Content-Length: 300000\r\n\r\n" + b"c" * 100_000
                )
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with server.client() as client:
            assert client.get("/api/objects/movie.bin").content == body
            assert client.get("/api/objects/cut.bin").status_code == 404
        # (An upload's handler may still be running after its client left: it removes
        # what it staged once it hears of it. Bounded, so a leak fails instead of hanging.)
        deadline = time.monotonic() + PATIENCE
        while len(_blob_files(server)) > 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_blob_files(server)) == 2  # the movie's and the long one's
    log = server.log.read_text()
    assert "Traceback" not in log
    gone = [line for line in log.splitlines() if "client went away after" in line]
    assert sum("'long.bin'" in line for line in gone) == 3


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback only: no proxy from the environment in between."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
