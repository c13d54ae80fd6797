"""A FastAPI app on a Hold: notes kept in the local tier and the remote, the Hold opened and
closed by the app's lifespan, and the storage service mounted at ``/storage/``.

    export CARGOHOLD_REMOTE=s3://bucket/notes CARGOHOLD_TOKEN=...   # or nothing: embedded default
    uvicorn examples.fastapi_app.app:app --port 8000
    curl -X PUT --data-binary 'buy milk' localhost:8000/notes/todo
    curl localhost:8000/notes/todo

A note is acknowledged once the local tier and its journal have it; the syncer sends it to
the remote, and the lifespan's close at shutdown (SIGTERM) sends what is left, so a
restart on an empty disk finds every acknowledged note in the remote.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

import cargohold
import cargohold.fastapi
from cargohold.fastapi import HoldDep

app = FastAPI(title="notes", lifespan=cargohold.fastapi.lifespan(mount="/storage"))


@app.put("/notes/{name}", status_code=204)
async def save_note(name: str, request: Request, hold: HoldDep) -> Response:
    body = await request.body()
    await run_in_threadpool(hold.put, f"notes/{name}", body, content_type="text/plain")
    return Response(status_code=204)


@app.get("/notes/{name}")
def read_note(name: str, hold: HoldDep) -> Response:
    try:
        return Response(hold.get(f"notes/{name}"), media_type="text/plain")
    except cargohold.NotFoundError:
        return Response(status_code=404)


@app.get("/notes")
def list_notes(hold: HoldDep) -> list[str]:
    return [info.key.removeprefix("notes/") for info in hold.list("notes/")]
