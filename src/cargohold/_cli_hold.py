"""The `cargohold` commands that work on a Hold: stats, ls, get, put, rm, sync, restore,
bench, serve, catalog rebuild. Registered on the app of :mod:`cargohold._cli_app` when
:mod:`cargohold.cli` imports this module."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import errors
from ._cli_app import app, console, err_console
from .hold import Hold
from .hold import open as open_hold

__all__: list[str] = []

_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _hold() -> Hold:
    return open_hold(signal_handlers=False)


@contextlib.contextmanager
def _reader() -> Iterator[Hold]:
    """A Hold for a command that only reads: it sends nothing (a send it cut off at exit
    would hold the app's own syncer back for ``resend_after``) and does not wait for
    pending writes at close (``sync`` is for them)."""
    hold = open_hold(signal_handlers=False, syncing=False)
    try:
        yield hold
    finally:
        hold.close(flush=False)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@app.command()
def stats(as_json: _Json = False) -> None:
    """Pending writes, the loss window, the last sync, local bytes and the remote."""
    with _reader() as hold:
        status = hold.status()
    data: dict[str, Any] = {
        "remote": status.remote,
        "embedded_default": status.embedded_default,
        "pending_count": status.pending_count,
        "pending_bytes": status.pending_bytes,
        "loss_window_seconds": status.loss_window,
        "last_sync": status.last_sync.isoformat() if status.last_sync else None,
        "last_error": status.last_error,
        "local_bytes": status.local_bytes,
        "local_max_bytes": status.local_max_bytes,
        "refused": status.refused,
        "remote_stats": dict(status.remote_stats),
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="cargohold", show_header=False)
    table.add_row(
        "remote",
        status.remote + (" (embedded default: not durable)" if status.embedded_default else ""),
    )
    table.add_row("pending", f"{status.pending_count} write(s), {_size(status.pending_bytes)}")
    table.add_row("loss window", f"{status.loss_window:.1f} s")
    table.add_row("last sync", str(status.last_sync or "never"))
    table.add_row("last error", status.last_error or "none")
    table.add_row("local tier", f"{_size(status.local_bytes)} of {_size(status.local_max_bytes)}")
    for name, value in status.remote_stats.items():
        if isinstance(value, dict) and "summary" in value:
            value = value["summary"]  # a commit budget: its one line, not the whole record
        table.add_row(name.replace("_", " "), str(value))
    console.print(table)


@app.command("ls")
def list_objects(
    prefix: Annotated[str, typer.Argument(help="Key prefix, e.g. videos/.")] = "",
    limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
    as_json: _Json = False,
) -> None:
    """List objects under a prefix (unsynced writes included)."""
    with _reader() as hold:
        infos = []
        for info in hold.list(prefix):
            infos.append(info)
            if limit is not None and len(infos) >= limit:
                break
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "key": i.key,
                        "size": i.size,
                        "etag": i.etag,
                        "last_modified": i.last_modified.isoformat(),
                    }
                    for i in infos
                ],
                indent=2,
            )
        )
        return
    table = Table(title=f"{len(infos)} object(s) under {prefix or '/'}")
    for column in ("key", "size", "modified", "etag"):
        table.add_column(column)
    for i in infos:
        table.add_row(
            i.key, _size(i.size), i.last_modified.strftime("%Y-%m-%d %H:%M:%S"), i.etag[:16]
        )
    console.print(table)


@app.command()
def get(
    key: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
    as_json: _Json = False,
) -> None:
    """Print an object (or write it to a file with -o; --json then describes the file)."""
    if as_json and output is None:
        raise errors.InvalidInput(
            "--json describes the file get writes", hint="add -o FILE (stdout carries the bytes)"
        )
    with _reader() as hold, hold.open(key) as source:
        if output is None:
            while chunk := source.read(1024 * 1024):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        tmp = output.with_name(f".{output.name}.part")
        with tmp.open("wb") as out:
            while chunk := source.read(1024 * 1024):
                out.write(chunk)
        os.replace(tmp, output)
    if as_json:
        typer.echo(json.dumps({"key": key, "path": str(output), "size": output.stat().st_size}))
    else:
        console.print(f"wrote {output}", highlight=False)


@app.command()
def put(
    key: str,
    file: Path,
    content_type: Annotated[
        str | None, typer.Option(help="Media type (default: from the name).")
    ] = None,
    durable: Annotated[bool, typer.Option(help="Return only once the remote has it.")] = True,
    as_json: _Json = False,
) -> None:
    """Store FILE under KEY (by default waits until the remote has it)."""
    if not file.is_file():
        raise errors.InvalidInput(f"{file} is not a file", hint="give the path of a file to upload")
    with _hold() as hold:
        info = hold.put(key, file, content_type=content_type, durable=durable)
    if as_json:
        typer.echo(json.dumps({"key": info.key, "size": info.size, "etag": info.etag}))
    else:
        console.print(f"stored {info.key} ({_size(info.size)}, etag {info.etag})", highlight=False)


@app.command("rm")
def remove(key: str, as_json: _Json = False) -> None:
    """Delete an object (locally at once, then on the remote before returning)."""
    with _hold() as hold:
        hold.delete(key)
        hold.flush(timeout=60)
    if as_json:
        typer.echo(json.dumps({"deleted": key}))
    else:
        console.print(f"deleted {key}", highlight=False)


@app.command()
def sync(
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    as_json: _Json = False,
) -> None:
    """Send every pending write to the remote now, with a progress bar."""
    with _hold() as hold:
        total = hold.status().pending_count
        started = time.monotonic()
        if as_json or total == 0:
            hold.flush(timeout)
        else:
            with _progress() as progress:
                task = progress.add_task("syncing", total=total)
                deadline = None if timeout is None else started + timeout
                while True:
                    left = hold.status().pending_count
                    progress.update(task, completed=max(0, total - left))
                    if left == 0:
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        hold.flush(0)  # raises TimedOut with what is left
                    hold.wait_for_sync(0.5)
            hold.flush(timeout)
        seconds = time.monotonic() - started
    if as_json:
        typer.echo(json.dumps({"synced": total, "seconds": seconds}))
    else:
        console.print(f"synced {total} write(s) in {seconds:.1f} s")


@app.command()
def restore(
    prefix: Annotated[str, typer.Argument(help="Only keys under this prefix.")] = "",
    as_json: _Json = False,
) -> None:
    """Copy everything under PREFIX from the remote into the local tier now."""
    with _reader() as hold:
        if as_json:
            report = hold.hydrate(prefix)
        else:
            with _progress() as progress:
                task = progress.add_task("restoring", total=None)
                report = hold.hydrate(
                    prefix,
                    progress=lambda p: progress.update(task, completed=p.done, total=p.total),
                )
    if as_json:
        typer.echo(json.dumps(_report(report)))
    else:
        console.print(
            f"restored {report.objects} object(s) ({_size(report.bytes)}), {report.skipped} already here, "
            f"{len(report.failed)} failed, in {report.seconds:.1f} s"
        )
        for key, why in list(report.failed.items())[:10]:
            console.print(f"  [red]{key}[/]: {why}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


def _report(report: Any) -> dict[str, Any]:
    return {
        "objects": report.objects,
        "bytes": report.bytes,
        "skipped": report.skipped,
        "failed": report.failed,
        "seconds": report.seconds,
    }


@app.command()
def bench(
    rounds: Annotated[int, typer.Option(help="Writes and reads per size and tier.")] = 20,
    as_json: _Json = False,
) -> None:
    """Time the local tier and the remote, and recommend write-back or write-through."""
    from .speed import histogram, run_bench

    with _hold() as hold:
        if as_json:
            report = run_bench(hold, rounds=rounds)
        else:
            with _progress() as progress:
                task = progress.add_task("measuring", total=None)
                report = run_bench(
                    hold,
                    rounds=rounds,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    table = Table(title=f"latency: local tier and {report.remote}")
    for column in (
        "size",
        "op",
        "local p50",
        "local p95",
        "local p99",
        "remote p50",
        "remote p95",
        "remote p99",
    ):
        table.add_column(column, justify="right")
    by = {(r.tier, r.op, r.size): r for r in report.rows}
    for size in sorted({r.size for r in report.rows}):
        for op in ("put", "get"):
            local, remote = by[("local", op, size)], by[("remote", op, size)]
            table.add_row(
                _size(size),
                op,
                *(f"{v:.3f} ms" for v in (local.p50_ms, local.p95_ms, local.p99_ms)),
                *(f"{v:.2f} ms" for v in (remote.p50_ms, remote.p95_ms, remote.p99_ms)),
            )
    console.print(table)
    smallest = min(r.size for r in report.rows)
    for tier in ("local", "remote"):
        console.print(f"\n{tier} put, {_size(smallest)}:")
        for line in histogram(by[(tier, "put", smallest)].samples):
            console.print("  " + line, highlight=False)
    console.print(f"\n[bold]recommended: {report.recommendation}[/] because {report.reason}")


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 inside a container).")
    ] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: $PORT, else 8000).")] = None,
    public_prefix: Annotated[
        list[str] | None,
        typer.Option(
            help="A key prefix anyone may read without a token (repeat it for more; "
            "default: $CARGOHOLD_PUBLIC_PREFIXES). Never debug/ or memo records."
        ),
    ] = None,
) -> None:
    """Serve the HTTP API and the dashboard for the configured Hold.

    Private by default: reads need CARGOHOLD_TOKEN or CARGOHOLD_READ_TOKEN (tokens come from
    the environment, never the command line, where other users of the machine see them)."""
    try:
        import uvicorn

        from .server import create_app, uvicorn_options
        from .server._auth import exposure_warning
    except ImportError as exc:
        raise errors.ConfigError(
            "serve needs FastAPI and uvicorn", hint="pip install 'cargohold[server]'"
        ) from exc
    chosen = port if port is not None else int(os.environ.get("PORT", "8000"))
    with open_hold(public_prefixes=public_prefix or None) as hold:
        console.print(
            f"cargohold serving {hold.remote.url} on http://{host}:{chosen}/", highlight=False
        )
        warning = exposure_warning(host, hold.settings)
        if warning is not None:
            loud = warning.startswith("WARNING")
            err_console.print(
                warning, style="bold red" if loud else None, highlight=False, soft_wrap=True
            )
        uvicorn.run(
            create_app(hold),
            host=host,
            port=chosen,
            log_level="warning",
            **uvicorn_options(hold.settings),
        )


refused_app = typer.Typer(
    help="Writes the remote refused for good, set aside so they block nothing else: list "
    "them, send them again, or give them up."
)
app.add_typer(refused_app, name="refused")

_RefusedKeys = Annotated[
    list[str] | None, typer.Argument(help="Keys to act on (see `cargohold refused ls`).")
]
_All = Annotated[bool, typer.Option("--all", help="Every refused change.")]


@refused_app.command("ls")
def refused_ls(as_json: _Json = False) -> None:
    """The refused changes: key, when, and what the remote said."""
    with _reader() as hold:
        refusals = hold.refused()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"key": r.key, "kind": r.kind, "reason": r.reason, "at": _iso(r.at)}
                    for r in refusals.values()
                ],
                indent=2,
            )
        )
        return
    if not refusals:
        console.print("no refused changes", highlight=False)
        return
    table = Table("key", "refused at", "reason")
    for r in refusals.values():
        table.add_row(r.key, _iso(r.at), r.reason)
    console.print(table)


def _refused_keys(keys: list[str] | None, every: bool, verb: str) -> list[str] | None:
    if every == bool(keys):
        raise errors.InvalidInput(
            f"name the keys to {verb}, or pass --all (not both)",
            hint="see `cargohold refused ls`",
        )
    return None if every else keys


@refused_app.command("retry")
def refused_retry(keys: _RefusedKeys = None, every: _All = False) -> None:
    """Send refused changes again (the syncing process picks them up within its poll)."""
    wanted = _refused_keys(keys, every, "retry")
    with _reader() as hold:
        retried = hold.retry_refused(wanted)
    console.print(f"{len(retried)} change(s) will be sent again", highlight=False)


@refused_app.command("drop")
def refused_drop(keys: _RefusedKeys = None, every: _All = False) -> None:
    """Give up refused changes: those keys read as the remote has them again."""
    wanted = _refused_keys(keys, every, "drop")
    with _reader() as hold:
        dropped = hold.drop_refused(wanted)
    console.print(f"dropped {len(dropped)} refused change(s)", highlight=False)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


catalog_app = typer.Typer(help="The shared PostgreSQL catalog (CARGOHOLD_CATALOG).")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("rebuild")
def catalog_rebuild(as_json: _Json = False) -> None:
    """Recreate the catalog's rows from the remote (the remote is the source of truth)."""
    with _reader() as hold:
        if hold.catalog is None:
            raise errors.ConfigError(
                "no catalog is configured", hint="set CARGOHOLD_CATALOG=postgresql://..."
            )
        written = hold.catalog.rebuild()
    if as_json:
        typer.echo(json.dumps({"rows": written}))
    else:
        console.print(
            f"rebuilt the catalog from {hold.remote.url}: {written} row(s)", highlight=False
        )
