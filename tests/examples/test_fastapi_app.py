"""The FastAPI example under a real uvicorn, driven by httpx: notes acknowledged before a
SIGTERM are in the remote (SeaweedFS) after a restart on an empty disk; the Hold is
opened and closed by the lifespan; the storage service is mounted and private."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import s3_url
from testsupport.proctree import ProcessTree
from testsupport.servers import SeaweedFS, free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fastapi-example-token"
OUTSIDE = {"x-forwarded-for": "203.0.113.9"}  # a client that is not on this machine


@contextmanager
def _uvicorn(env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with (
        log.open("ab") as out,
        ProcessTree(command, cwd=ROOT, env=env, stdout=out) as tree,
        httpx.Client(base_url=base) as client,
    ):
        deadline = time.monotonic() + 120
        while True:  # ready once the lifespan opened the Hold and mounted the service
            try:
                if client.get("/storage/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if tree.returncode() is not None or time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield client
        tree.signal_top(signal.SIGTERM)
        assert tree.wait_gone(60), "uvicorn did not stop on SIGTERM"
        # uvicorn drains, runs the lifespan's shutdown (the Hold's close), then re-raises
        # the signal: the same exit as without cargohold (tests/processes).
        assert tree.returncode() == -signal.SIGTERM


def test_notes_survive_a_restart_on_an_empty_disk(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "CARGOHOLD_REMOTE": s3_url(seaweedfs, seaweedfs_bucket),
        "CARGOHOLD_DATA_DIR": str(tmp_path / "disk" / "data"),
        "CARGOHOLD_TOKEN": TOKEN,
        "CARGOHOLD_SYNC_DELAY": "5s",  # the syncer waits: the stop has to send the notes
    }
    log = tmp_path / "uvicorn.log"
    notes = {f"n{i}": f"note number {i}".encode() for i in range(20)}

    with _uvicorn(env, log) as client:
        for name, body in notes.items():
            assert client.put(f"/notes/{name}", content=body).status_code == 204
        assert client.get("/notes/n3").content == notes["n3"]
        redirect = client.get("/storage", headers=OUTSIDE)
        assert (redirect.status_code, redirect.headers["location"]) == (307, "storage/")
        assert client.get("/storage/api/objects/notes/n3", headers=OUTSIDE).status_code == 401
        mine = {"authorization": f"Bearer {TOKEN}"}
        assert client.get("/storage/api/objects/notes/n3", headers=mine).content == notes["n3"]

    shutil.rmtree(tmp_path / "disk")  # the redeploy: the disk is gone, the remote stays

    with _uvicorn(env, log) as client:
        assert sorted(client.get("/notes").json()) == sorted(notes)
        for name, body in notes.items():
            assert client.get(f"/notes/{name}").content == body
