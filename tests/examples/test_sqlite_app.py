"""The SQLite example under a real uvicorn on SeaweedFS, driven by httpx: rows committed
before a SIGTERM are all there after a restart on an empty disk (the database restored
from the remote alone), and the app goes on writing after them."""

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

from cargohold.remotes import open_remote
from cargohold.sqlite import list_databases
from tests.conftest import s3_url
from testsupport.proctree import ProcessTree
from testsupport.servers import SeaweedFS, free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _uvicorn(env: dict[str, str], log: Path) -> Iterator[httpx.Client]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "examples.sqlite_app.app:app"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with (
        log.open("ab") as out,
        ProcessTree(command, cwd=ROOT, env=env, stdout=out) as tree,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        deadline = time.monotonic() + 120
        while True:  # ready once the lifespan opened the Hold and restored the database
            try:
                if client.get("/replication").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if tree.returncode() is not None or time.monotonic() > deadline:
                raise AssertionError(f"uvicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield client
        tree.signal_top(signal.SIGTERM)
        assert tree.wait_gone(60), "uvicorn did not stop on SIGTERM"
        # uvicorn drains, the lifespan closes the Hold, then the signal's default action.
        assert tree.returncode() == -signal.SIGTERM, log.read_text()[-3000:]


def test_rows_survive_a_restart_on_an_empty_disk(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "CARGOHOLD_REMOTE": url,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "disk" / "data"),
        # The replicator's loop would wait ten minutes: only the SIGTERM ships the rows.
        "SHIP_INTERVAL": "600",
    }
    log = tmp_path / "uvicorn.log"
    sent = [{"author": f"guest {i}", "text": f"message {i} ✓ " + "x" * i} for i in range(40)]

    with _uvicorn(env, log) as client:
        made = []
        for message in sent:
            answer = client.post("/messages", json=message)
            assert answer.status_code == 201, answer.text
            made.append(answer.json())
        assert [m["id"] for m in made] == list(range(1, len(sent) + 1))
        assert client.get("/messages/7").json() == made[6]
        assert client.post("/messages", json={"author": "", "text": "?"}).status_code == 422
        status = client.get("/replication").json()
        assert status["writer"] is True
        assert status["pending_transactions"] >= len(sent)  # none shipped before the stop
        assert client.get("/messages").json() == made

    shutil.rmtree(tmp_path / "disk")  # the redeploy: the disk is gone, the remote stays
    with open_remote(url) as remote:
        [(name, generation, _)] = list_databases(remote)
    assert name == "app.db"

    with _uvicorn(env, log) as client:
        assert client.get("/messages").json() == made
        status = client.get("/replication").json()
        assert status["generation"] > generation  # a new writer's history, after the old one
        answer = client.post("/messages", json={"author": "after", "text": "the restart"})
        assert answer.json()["id"] == len(sent) + 1

    shutil.rmtree(tmp_path / "disk")
    with _uvicorn(env, log) as client:
        assert client.get("/messages").json() == [*made, answer.json()]
