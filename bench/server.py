"""Benchmark: GET of a 100 KiB object through cargohold's service against Starlette's
StaticFiles serving the same bytes from a plain file, each in its own uvicorn process on
loopback, loaded by wrk (Debian's; installed by this script if missing and possible) with
32 connections for 10 s, or, without wrk, by an httpx client with 32 requests in flight.

Target (issue 7): at least 1x StaticFiles' requests/s. Run: ./dev bench server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

SIZE = 100 * 1024

SERVE_HOLD = textwrap.dedent(
    """
    import sys, uvicorn, cargohold
    from cargohold.server import create_app
    data_dir, port = sys.argv[1], int(sys.argv[2])
    hold = cargohold.open("file://" + data_dir + "/remote", data_dir=data_dir, signal_handlers=False)
    hold.put("assets/video.bin", open(data_dir + "/video.bin", "rb").read())
    uvicorn.run(create_app(hold), host="127.0.0.1", port=port, log_level="error")
    """
)
SERVE_STATIC = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles
    folder, port = sys.argv[1], int(sys.argv[2])
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=folder))])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(url: str, requests: int, in_flight: int) -> float:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        gate = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with gate:
                response = await client.get(url)
                assert response.status_code == 200
                assert len(response.content) == SIZE

        for _ in range(100):  # warm up
            await one()
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return requests / (time.perf_counter() - start)


def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
        )
        found = shutil.which("wrk")
    return found


def wrk_rate(wrk: str, url: str, connections: int, seconds: int) -> float:
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("Requests/sec:"))
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(line.split()[1])


def serve(code: str, arg: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", code, arg, str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    wrk = ensure_wrk()
    print(f"load generator: {wrk or 'httpx (wrk is not available)'}", flush=True)
    rates: dict[str, list[float]] = {"cargohold": [], "StaticFiles": []}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "video.bin").write_bytes(os.urandom(SIZE))
        servers = {
            "cargohold": (SERVE_HOLD, tmp, "/api/objects/assets/video.bin"),
            "StaticFiles": (SERVE_STATIC, tmp, "/static/video.bin"),
        }
        for rep in range(args.repeat):
            order = list(servers) if rep % 2 == 0 else list(reversed(servers))
            for name in order:
                code, arg, path = servers[name]
                proc, port = serve(code, arg)
                try:
                    url = f"http://127.0.0.1:{port}{path}"
                    if wrk:
                        rate = wrk_rate(wrk, url, args.in_flight, args.seconds)
                    else:
                        rate = asyncio.run(load(url, args.requests, args.in_flight))
                    rates[name].append(rate)
                    print(f"{name}: {rate:,.0f} req/s", flush=True)
                finally:
                    proc.terminate()
                    proc.wait(30)
    c, s = statistics.median(rates["cargohold"]), statistics.median(rates["StaticFiles"])
    print()
    print("| GET 100 KiB, 32 in flight | cargohold req/s | StaticFiles req/s | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| median of {args.repeat} | {c:,.0f} | {s:,.0f} | {c / s:.2f}x |")


if __name__ == "__main__":
    main()
