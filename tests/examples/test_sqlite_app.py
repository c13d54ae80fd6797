"""The SQLite example under a real uvicorn on SeaweedFS, driven by httpx: rows committed
before a SIGTERM are all there after a restart on an empty disk (the database restored
from the remote alone), and the app goes on writing after them."""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from cargohold.remotes import open_remote
from cargohold.sqlite import list_databases
from tests.conftest import s3_url
from tests.examples.served import ROOT, uvicorn
from testsupport.servers import SeaweedFS


def _uvicorn(env: dict[str, str], log: Path) -> AbstractContextManager[httpx.Client]:
    # Ready once the lifespan opened the Hold and restored the database.
    return uvicorn("examples.sqlite_app.app:app", env, log, ready="/replication")


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
