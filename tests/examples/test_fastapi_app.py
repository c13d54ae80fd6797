"""The FastAPI example under a real uvicorn, driven by httpx: notes acknowledged before a
SIGTERM are in the remote (SeaweedFS) after a restart on an empty disk; the Hold is
opened and closed by the lifespan; the storage service is mounted and private."""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from tests.conftest import s3_url
from tests.examples.served import ROOT, uvicorn
from testsupport.servers import SeaweedFS

TOKEN = "fastapi-example-token"
OUTSIDE = {"x-forwarded-for": "203.0.113.9"}  # a client that is not on this machine


def _uvicorn(env: dict[str, str], log: Path) -> AbstractContextManager[httpx.Client]:
    return uvicorn("examples.fastapi_app.app:app", env, log, ready="/storage/healthz")


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
