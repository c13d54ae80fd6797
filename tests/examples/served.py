"""An example app under a real uvicorn, for the tests of the examples that are ASGI apps."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from testsupport.proctree import ProcessTree
from testsupport.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def uvicorn(app: str, env: dict[str, str], log: Path, *, ready: str) -> Iterator[httpx.Client]:
    """Serve ``app`` (``module:attribute``) from the repository's root until the block
    ends, then SIGTERM it. Yields a client once ``ready`` answers 200 (the lifespan has
    run). uvicorn drains, runs the lifespan's shutdown (the Hold's close), then re-raises
    the signal: the same exit as without cargohold (tests/processes), checked here."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    with (
        log.open("ab") as out,
        ProcessTree(command, cwd=ROOT, env=env, stdout=out) as tree,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get(ready).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if tree.returncode() is not None or time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield client
        tree.signal_top(signal.SIGTERM)
        assert tree.wait_gone(60), "uvicorn did not stop on SIGTERM"
        assert tree.returncode() == -signal.SIGTERM, log.read_text()[-3000:]
