"""`cargohold sqlite ...`: restore, list and replicate SQLite databases (see
:mod:`cargohold.sqlite`). Registered on the app of :mod:`cargohold._cli_app` when
:mod:`cargohold.cli` imports this module."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer

from ._cli_app import app, console
from .errors import InvalidInput
from .hold import open as open_hold
from .sqlite import list_databases, restore

__all__: list[str] = []

sqlite_app = typer.Typer(
    help="SQLite databases replicated to the remote: restore, list, replicate."
)
app.add_typer(sqlite_app, name="sqlite")

_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def parse_time(text: str) -> float:
    """An ISO 8601 time (``2026-12-08T01:30:00Z``; without a zone, UTC) as Unix seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--at {text!r} is not a time",
            hint="give an ISO 8601 time such as 2026-12-08T01:30:00Z (UTC when no zone is given)",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@sqlite_app.command("restore")
def sqlite_restore(
    name: Annotated[str, typer.Argument(help="The database's name on the remote.")],
    to: Annotated[
        Path | None, typer.Option("--to", help="Where to write it (default: ./NAME).")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Its state at this time (ISO 8601, UTC default).")
    ] = None,
    as_json: _Json = False,
) -> None:
    """Write the database NAME as the remote has it (or had it --at a time) to a new file,
    checked with PRAGMA integrity_check. An existing file is never overwritten."""
    when = None if at is None else parse_time(at)
    dest = (to if to is not None else Path(name)).absolute()
    with open_hold(signal_handlers=False, syncing=False) as hold:
        report = restore(hold.remote, name, dest, at=when)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "path": str(report.path),
                    "generation": report.generation,
                    "segments": report.segments,
                    "transactions": report.transactions,
                    "pages": report.pages,
                    "as_of": report.as_of,
                }
            )
        )
        return
    moment = datetime.fromtimestamp(report.as_of, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    console.print(
        f"restored {name} to {report.path} as of {moment} (generation {report.generation}, "
        f"{report.transactions} transaction(s) after its snapshot); integrity check ok",
        highlight=False,
    )


@sqlite_app.command("ls")
def sqlite_ls(as_json: _Json = False) -> None:
    """The databases replicated to the remote, with their newest generation."""
    with open_hold(signal_handlers=False, syncing=False) as hold:
        found = list_databases(hold.remote)
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": name,
                        "generation": generation,
                        "updated": when.isoformat() if when else None,
                    }
                    for name, generation, when in found
                ]
            )
        )
        return
    for name, generation, when in found:
        stamp = when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "incomplete"
        console.print(f"{name}\tgeneration {generation}\t{stamp}", highlight=False)


@sqlite_app.command("replicate")
def sqlite_replicate(
    path: Annotated[Path, typer.Argument(help="The database file (restored if missing).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Its name on the remote (default: file name).")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between shipments.")] = 1.0,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", help="Follow the remote's database read-only instead of writing it."
        ),
    ] = False,
) -> None:
    """Replicate PATH until stopped (SIGTERM or Ctrl-C ship the last transactions): for an
    app that is not written in Python, run beside it. Prints `ready` once the database is
    restored and replicated, so the app can start then. With --follow, keep PATH a
    read-only copy of what the writer ships, writing nothing to the remote."""
    with open_hold() as hold:
        mode: Literal["write", "follow"] = "follow" if follow else "write"
        where = hold.sqlite(name or path.name, path=path, interval=interval, mode=mode)
        verb = "following" if follow else "replicating"
        console.print(f"ready: {verb} {where}", highlight=False)
        # Until a stop signal: its handler ships the last transactions, then ends the process.
        threading.Event().wait()
