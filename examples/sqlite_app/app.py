"""A FastAPI app whose rows live in SQLite, kept on the remote by ``hold.sqlite()``: a
guestbook that survives a redeploy on an empty disk.

    export CARGOHOLD_REMOTE=s3://bucket/guestbook    # or nothing: the embedded default
    uvicorn examples.sqlite_app.app:app --port 8000
    curl -X POST localhost:8000/messages -H 'content-type: application/json' \\
         -d '{"author": "ada", "text": "hello"}'
    curl localhost:8000/messages
    curl localhost:8000/replication

The lifespan opens the Hold and, before the app serves, ``hold.sqlite("app.db")``: on a
new container (no file) the database is restored from the remote first. Every route opens
the returned path with ``sqlite3`` as any app would. A committed row is shipped within
about ``SHIP_INTERVAL`` seconds (1 by default); a SIGTERM ships the last ones before the
process exits, and ``/replication`` shows what losing the disk right now would lose.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

import cargohold
import cargohold.fastapi
from cargohold.fastapi import HoldDep

DATABASE = "app.db"
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    author TEXT NOT NULL,
    text TEXT NOT NULL,
    created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


def open_hold() -> cargohold.Hold:
    """The Hold (settings from ``CARGOHOLD_*``), with the database restored if it is
    missing here and replicated from now on, and its schema in place."""
    hold = cargohold.open()
    try:
        hold.sqlite(DATABASE, interval=float(os.environ.get("SHIP_INTERVAL", "1")))
        with transaction(hold) as con:
            con.execute(SCHEMA)
    except BaseException:
        hold.close()
        raise
    return hold


app = FastAPI(title="guestbook", lifespan=cargohold.fastapi.lifespan(open_hold))


@contextlib.contextmanager
def transaction(hold: cargohold.Hold) -> Iterator[sqlite3.Connection]:
    """A connection to the database in one transaction: committed when the block ends,
    rolled back if it raises. ``hold.sqlite(name)`` again only looks the path up."""
    # The timeout: during a graceful stop cargohold holds the write lock while it ships
    # the last transactions, and a write that arrives meanwhile waits (or gets a 503).
    con = sqlite3.connect(hold.sqlite(DATABASE), timeout=10)
    try:
        with con:
            yield con
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise HTTPException(503, "the database is busy, try again") from exc
        raise
    finally:
        con.close()


class NewMessage(BaseModel):
    author: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=10_000)


@app.post("/messages", status_code=201)
def add_message(message: NewMessage, hold: HoldDep) -> dict[str, Any]:
    """Returns once the row is committed here; it reaches the remote within about
    SHIP_INTERVAL seconds, or at the latest when the process is stopped gracefully."""
    with transaction(hold) as con:
        cursor = con.execute(
            "INSERT INTO messages (author, text) VALUES (?, ?) RETURNING id, created",
            (message.author, message.text),
        )
        row_id, created = cursor.fetchone()
    return {"id": row_id, "author": message.author, "text": message.text, "created": created}


@app.get("/messages")
def list_messages(hold: HoldDep) -> list[dict[str, Any]]:
    with transaction(hold) as con:
        rows = con.execute("SELECT id, author, text, created FROM messages ORDER BY id")
        return [dict(zip(("id", "author", "text", "created"), row, strict=True)) for row in rows]


@app.get("/messages/{message_id}")
def read_message(message_id: int, hold: HoldDep) -> dict[str, Any]:
    with transaction(hold) as con:
        row = con.execute(
            "SELECT id, author, text, created FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
    if row is None:
        raise HTTPException(404, f"no message {message_id}")
    return dict(zip(("id", "author", "text", "created"), row, strict=True))


@app.get("/replication")
def replication(hold: HoldDep) -> dict[str, Any]:
    """How far the remote is behind: the loss window if this disk vanished now."""
    status = hold.sqlite_status(DATABASE)
    return {
        "writer": status.writer,
        "generation": status.generation,
        "pending_transactions": status.pending_transactions,
        "lag_seconds": round(status.lag_seconds, 3),
        "last_shipped": status.last_shipped.isoformat() if status.last_shipped else None,
        "last_error": status.last_error,
    }
