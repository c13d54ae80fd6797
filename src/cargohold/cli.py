"""The ``cargohold`` command. A thin shell: it parses, calls the public API and formats.

Errors print as one line (the problem and its fix), never a traceback unless ``--debug``.
Exit codes come from one table, :data:`EXIT_CODES`, keyed by the exception tree.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from . import errors
from ._cli_app import app, console, err_console, options
from .config import Settings, parse_duration
from .doctor import DoctorReport, diagnose, refused_as_declared
from .fetch import FetchProgress
from .hold import Hold
from .hold import open as cargohold_open
from .keys import internal_key, internal_prefix
from .memo import MemoEntry, MemoStats
from .memo import collect_garbage as memo_collect_garbage
from .memo import list_entries as memo_list_entries
from .memo import namespaces as memo_namespaces
from .memo import versions as memo_versions
from .paths import data_dir
from .remotes import Remote, open_remote

__all__ = ["EXIT_CODES", "app", "main"]

#: Exit codes by exception class; the first class in this order that matches wins.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (errors.InvalidInput, 2),
    (errors.ConfigError, 3),
    (errors.NotFoundError, 4),
    (errors.ConflictError, 5),
    (errors.PermissionDenied, 6),
    (errors.RemoteUnavailable, 7),
    (errors.TimedOut, 8),
    (errors.IntegrityError, 9),
    (errors.StorageFull, 10),
    (errors.CargoholdError, 1),
    # The local filesystem's own errors (a bad -o path, a full disk) map to the same codes.
    (FileNotFoundError, 4),
    (FileExistsError, 5),
    (PermissionError, 6),
    (OSError, 1),
]


def default_remote_url(settings: Settings) -> tuple[str, bool]:
    """The remote URL to use, and whether it is the embedded default (same disk as the app)."""
    if settings.remote:
        return settings.remote, False
    return (data_dir(settings).path / "remote").as_uri(), True


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float


def check_remote(remote: Remote) -> list[Step]:
    """Exercise a remote once: write, read, list, conditional writes, delete."""
    key = internal_key(f"check/{uuid.uuid4().hex}")
    steps: list[Step] = []

    def step(name: str, action: Callable[[], str]) -> bool:
        start = time.perf_counter()
        try:
            detail = action()
            ok = True
        except errors.CargoholdError as exc:
            detail, ok = str(exc), False
        steps.append(Step(name, ok, detail, time.perf_counter() - start))
        return ok

    payload = uuid.uuid4().bytes * 64
    if not step("put", lambda: f"{remote.put(key, payload).size} bytes stored"):
        return steps
    step("get", lambda: "bytes match" if remote.get(key) == payload else _fail("bytes differ"))
    step(
        "list",
        lambda: _expect(
            any(i.key == key for i in remote.list(internal_prefix("check/"))), "listed"
        ),
    )

    def create_only() -> str:
        if not remote.conditional_writes:
            return refused_as_declared(remote, lambda: remote.put(key, b"2", mode="create"))
        try:
            remote.put(key, b"second", mode="create")
        except errors.AlreadyExists:
            return "a second create-only put was refused"
        return _fail("a create-only put overwrote an existing object")

    def if_match() -> str:
        if not remote.conditional_writes:
            etag = remote.head(key).etag
            return refused_as_declared(remote, lambda: remote.put(key, b"2", if_match=etag))
        etag = remote.head(key).etag
        remote.put(key, b"v2", if_match=etag)
        try:
            remote.put(key, b"v3", if_match=etag)
        except errors.PreconditionFailed:
            return "a stale etag was refused"
        return _fail("a put with a stale etag succeeded")

    step("create-only", create_only)
    step("if-match", if_match)

    def delete() -> str:
        remote.delete(key)
        return "deleted"

    step("delete", delete)
    return steps


def check_hold(hold: Hold) -> list[Step]:
    """Exercise a Hold once: a write-back put, a flush to the remote, a read, a delete."""
    key = internal_key(f"check/hold-{uuid.uuid4().hex}")
    payload = uuid.uuid4().bytes * 256
    steps: list[Step] = []

    def step(name: str, action: Callable[[], str]) -> bool:
        start = time.perf_counter()
        try:
            detail, ok = action(), True
        except errors.CargoholdError as exc:
            detail, ok = str(exc), False
        steps.append(Step(name, ok, detail, time.perf_counter() - start))
        return ok

    def put() -> str:
        hold.put(key, payload)
        return f"{len(payload)} bytes in the local tier; {hold.status().pending_count} pending"

    def flush() -> str:
        hold.flush(timeout=30)
        return _expect(hold.remote.get(key) == payload, "on the remote")

    def delete() -> str:
        hold.delete(key)
        hold.flush(timeout=30)
        return "deleted locally and remotely"

    if step("hold put", put) and step("hold flush", flush):
        step("hold get", lambda: _expect(hold.get(key) == payload, "read back"))
        step("hold delete", delete)
    return steps


def _fail(message: str) -> str:
    raise errors.RemoteError(message)


def _expect(condition: bool, message: str) -> str:
    return message if condition else _fail(f"not {message}")


@app.command()
def check(
    remote_url: Annotated[
        str | None,
        typer.Option(
            "--remote", help="Remote URL (default: CARGOHOLD_REMOTE or the embedded default)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check a remote (write, read, list, conditional writes, delete) and a Hold on it
    (write, flush, read, delete), with timings."""
    settings = Settings.load(remote=remote_url, signal_handlers=False)
    url, embedded = default_remote_url(settings)
    with open_remote(url, settings=settings) as remote:
        steps = check_remote(remote)
    if all(s.ok for s in steps):
        with cargohold_open(url, data_dir=settings.data_dir, signal_handlers=False) as hold:
            steps += check_hold(hold)
    ok = all(s.ok for s in steps)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "remote": remote.url,
                    "embedded_default": embedded,
                    "ok": ok,
                    "steps": [s.__dict__ for s in steps],
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"remote {remote.url}")
        for column in ("step", "result", "ms", "detail"):
            table.add_column(column)
        for s in steps:
            mark = "[green]ok[/]" if s.ok else "[red]FAILED[/]"
            table.add_row(s.name, mark, f"{s.seconds * 1000:.1f}", s.detail)
        console.print(table)
        if embedded:
            console.print(
                "[yellow]This is the embedded default: the remote lives on the same disk as "
                "the app, so it is not durable. Set CARGOHOLD_REMOTE to a bucket or volume.[/]"
            )
    if not ok:
        raise typer.Exit(1)


memo_app = typer.Typer(help="The generation cache: list, count, export and remove entries.")
app.add_typer(memo_app, name="memo")


def _where(pairs: list[str]) -> dict[str, object]:
    where: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise errors.InvalidInput(
                f"--where {pair!r} is not NAME=VALUE", hint="e.g. --where prompt=cat"
            )
        try:
            where[name] = json.loads(value)  # numbers, true/false, quoted strings
        except ValueError:
            where[name] = value
    return where


def _memo_hold() -> Hold:
    return cargohold_open(signal_handlers=False)


_VersionOption = Annotated[
    str | None,
    typer.Option(
        "--version", "-v", help="The namespace's version (default: its only one, if it has one)."
    ),
]


def _one_version(hold: Hold, namespace: str, version: str | None) -> str:
    """The version a command that changes or exports entries acts on: the one given, else
    the namespace's only version. Never a guess: with several, the user says which."""
    if version is not None:
        return version
    versions = memo_versions(hold, namespace)  # lists memo/NAMESPACE/ only
    if len(versions) == 1:
        return versions[0]
    if not versions:
        raise errors.NotFoundError(
            f"memo namespace {namespace!r} has no entries",
            hint="`cargohold memo stats` lists the namespaces and their versions",
        )
    raise errors.InvalidInput(
        f"memo namespace {namespace!r} has versions {', '.join(versions)}",
        hint="say which with --version",
    )


_WhereOption = Annotated[
    list[str], typer.Option("--where", "-w", help="NAME=VALUE an input or field must equal.")
]
_JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@memo_app.command("ls")
def memo_ls(
    namespace: str,
    version: Annotated[
        str | None,
        typer.Option("--version", "-v", help="One version (default: every version, labelled)."),
    ] = None,
    field: Annotated[
        list[str], typer.Option("--field", "-f", help="Inputs or fields to show as columns.")
    ] = [],  # noqa: B006 - typer reads the default, it is never mutated
    where: _WhereOption = [],  # noqa: B006
    limit: Annotated[int | None, typer.Option(help="Show at most this many.")] = None,
    as_json: _JsonOption = False,
) -> None:
    """List a namespace's entries, newest first: of one --version, or of every version
    (each entry labelled with its version)."""
    with _memo_hold() as hold:
        entries = memo_list_entries(
            hold, namespace, version=version, where=_where(where), limit=limit
        )
    if as_json:
        typer.echo(json.dumps([_entry_json(e) for e in entries], indent=2, ensure_ascii=False))
        return
    if version is not None:
        scope = f"version {version}"
    else:
        seen = sorted({e.version for e in entries})
        scope = f"all versions: {', '.join(seen)}" if seen else "all versions"
    table = Table(title=f"memo {namespace} ({scope}): {len(entries)} entries")
    columns = field or sorted({name for e in entries for name in e.inputs})[:4]
    labels = ["version"] if version is None else []
    for column in ["created", *labels, *columns, "kind", "bytes", "build s"]:
        table.add_column(column)
    for e in entries:
        values = [str(e.inputs.get(c, e.fields.get(c, ""))) for c in columns]
        table.add_row(
            e.created.strftime("%Y-%m-%d %H:%M:%S"),
            *([e.version] if version is None else []),
            *values,
            e.kind,
            f"{e.size:,}",
            f"{e.build_seconds:.1f}",
        )
    console.print(table)


def _entry_json(entry: MemoEntry) -> dict[str, object]:
    return {**entry.record(), "created": entry.created.isoformat(), "bytes": entry.size}


@memo_app.command("stats")
def memo_stats(
    namespace: Annotated[str | None, typer.Argument(help="One namespace (default: all).")] = None,
    as_json: _JsonOption = False,
) -> None:
    """Entries and bytes per namespace and version."""
    with _memo_hold() as hold:
        pairs = [p for p in memo_namespaces(hold) if namespace is None or p[0] == namespace]
        stats = [hold.memo(ns, version=ver).stats() for ns, ver in pairs]
    if as_json:
        typer.echo(json.dumps([_stats_json(s) for s in stats], indent=2))
        return
    table = Table(title="memo namespaces")
    for column in ("namespace", "version", "entries", "bytes"):
        table.add_column(column)
    for s in stats:
        table.add_row(s.namespace, s.version, str(s.count), f"{s.bytes:,}")
    console.print(table)


def _stats_json(stats: MemoStats) -> dict[str, object]:
    return {
        "namespace": stats.namespace,
        "version": stats.version,
        "entries": stats.count,
        "bytes": stats.bytes,
    }


@memo_app.command("export")
def memo_export(
    namespace: str,
    to: Annotated[Path, typer.Option("--to", help="The seed folder, e.g. data/seed.")],
    version: _VersionOption = None,
    where: _WhereOption = [],  # noqa: B006
    as_json: _JsonOption = False,
) -> None:
    """Write chosen entries into a seed folder, ready to commit with the app."""
    with _memo_hold() as hold:
        chosen = _one_version(hold, namespace, version)
        count = hold.memo(namespace, version=chosen).export(to, _where(where))
    if as_json:
        typer.echo(json.dumps({"exported": count, "to": str(to)}))
    else:
        console.print(f"exported {count} entr{'y' if count == 1 else 'ies'} to {to}")


@memo_app.command("rm")
def memo_rm(
    namespace: str,
    version: _VersionOption = None,
    where: _WhereOption = [],  # noqa: B006
    every: Annotated[
        bool, typer.Option("--all", help="Remove every entry of the version.")
    ] = False,
    as_json: _JsonOption = False,
) -> None:
    """Remove the entries that match --where (or --all of them)."""
    if not where and not every:
        raise errors.InvalidInput("say which entries: --where NAME=VALUE, or --all")
    with _memo_hold() as hold:
        memo = hold.memo(namespace, version=_one_version(hold, namespace, version))
        entries = memo.entries(_where(where))
        for entry in entries:
            memo.delete(entry.inputs)
    if as_json:
        typer.echo(json.dumps({"removed": len(entries)}))
    else:
        console.print(f"removed {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")


@app.command()
def doctor(
    remote_url: Annotated[
        str | None,
        typer.Option(
            "--remote", help="Remote URL (default: CARGOHOLD_REMOTE or the embedded default)."
        ),
    ] = None,
    as_json: _JsonOption = False,
) -> None:
    """One report to paste into an issue: host, directories, ML caches, remote and
    durability. Exits with 1 when something needs fixing, each problem with its fix."""
    report = diagnose(Settings.load(remote=remote_url))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        typer.echo(doctor_text(report))
    if not report.ok:
        raise typer.Exit(1)


def doctor_text(report: DoctorReport) -> str:
    """The report as plain text (no colours or tables, so it pastes anywhere)."""
    host = report.host
    lines = [
        f"cargohold {report.version}, Python {report.python}, {report.system}",
        "",
        f"host: {host['name']} ({'; '.join(host['evidence'])})",
        f"  stops with {host['shutdown_signal']}, {host['grace_seconds']:g} s before SIGKILL; "
        f"persistent mounts: {', '.join(host['persistent_mounts']) or 'none'}; "
        f"disk in memory: {'yes' if host['memory_disk'] else 'no'}",
    ]
    for v in host.get("volumes", []):
        traits = ["persistent" if v["persistent"] else "not persistent"]
        traits.append("locks hold" if v["lockable"] else f"NO LOCKS: {v['why']}")
        lines.append(f"  volume {v['path']} ({v['fstype']}, {v['kind']}; {', '.join(traits)})")
    lines += ["", "directories:"]
    for d in report.directories:
        if d.chosen is None:
            lines.append(f"  {d.kind:<6} NONE USABLE: {d.error}")
            continue
        traits = [
            "RAM-backed" if d.tmpfs else "disk",
            "persistent" if d.persistent else "not persistent",
            f"{(d.free_bytes or 0) / 1024**3:.1f} GiB free",
        ]
        lines.append(f"  {d.kind:<6} {d.chosen} ({d.source}; {', '.join(traits)})")
        for c in d.candidates:
            if c["result"] != "chosen":
                lines.append(f"         not {c['path']} ({c['source']}): {c['result']}")
    lines += ["", "ML caches:"]
    for var in report.ml_caches:
        state = {True: "ok", False: "NOT USABLE", None: "-"}[var.usable]
        where = var.path or "(beside the code)"
        detail = "" if var.usable else f": {var.reason}"
        lines.append(f"  {var.name:<27} {where} ({var.origin}) {state}{detail}")
    r = report.remote
    yes = {True: "yes", False: "NO", None: "?"}
    lines += [
        "",
        f"remote: {r.url}" + (" (the embedded default)" if r.embedded_default else ""),
        f"  reachable {yes[r.reachable]}, credentials accepted {yes[r.credentials_accepted]}, "
        f"create-only honoured {yes[r.create_only_honoured]}, "
        f"if-match honoured {yes[r.if_match_honoured]}",
    ]
    if r.latency_ms is not None:
        speed = f", writes {r.write_bytes_per_s / 1e6:.1f} MB/s" if r.write_bytes_per_s else ""
        lines.append(f"  round trip {r.latency_ms:.1f} ms{speed}")
    budget = r.stats.get("commit_budget")
    if isinstance(budget, dict):
        lines.append(f"  commit budget: {budget.get('summary', budget)}")
    for step in r.steps:
        mark = "ok" if step["ok"] else "FAILED"
        lines.append(f"  {step['name']:<12} {mark:<6} {step['ms']:>8.1f} ms  {step['detail']}")
    dur = report.durability
    lines += ["", "durability:", f"  shutdown grace {dur.shutdown_grace:g} s ({dur.grace_from})"]
    if dur.pending_count is not None:
        lines.append(
            f"  pending {dur.pending_count} write(s), {dur.pending_bytes} bytes; loss window "
            f"{dur.loss_window or 0:.1f} s"
            + (
                f"; flushing them takes about {dur.flush_estimate:.1f} s"
                if dur.flush_estimate is not None
                else ""
            )
        )
    if dur.drain_limit is not None:
        lines.append(
            f"  backlog kept within {dur.drain_limit:.1f} s of sending (drain_fraction of the grace)"
            + (
                f"; what is pending takes about {dur.drain_estimate:.1f} s at the measured rate"
                if dur.drain_estimate is not None
                else ""
            )
        )
    elif dur.shutdown_grace == 0:
        lines.append("  no grace: every write's loss window lasts until it syncs")
    if dur.full_queue_estimate is not None and dur.drain_limit is None:
        lines.append(
            f"  a full queue (max_pending_bytes) takes about {dur.full_queue_estimate:.1f} s"
        )
    groups = report.causes()
    count = f"{len(report.problems)} ({len(groups)} cause{'s' if len(groups) != 1 else ''})"
    lines += ["", f"problems: {count if report.problems else 'none'}"]
    for group in groups:  # the root cause first, then what follows from it
        for p in group:
            mark = p.severity.upper() if p.severity == "error" else p.severity
            if p.consequence:
                lines.append(f"    and so, {mark}: {p.what}")
                continue
            lines.append(f"  {mark}: {p.what}")
            lines.append(f"    fix: {p.fix}")
    return "\n".join(lines)


@app.command("fetch")
def fetch_command(
    url: Annotated[str, typer.Argument(help="An http:// or https:// URL.")],
    sha256: Annotated[
        str | None, typer.Option(help="The SHA-256 the download must have (hex).")
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option(help="Ask the origin again once the copy is older than this (30s, 1h)."),
    ] = None,
    as_json: _JsonOption = False,
) -> None:
    """Download URL into the Hold's download cache (once: later calls, other processes
    and instances sharing the remote reuse it) and print the local file's path."""
    age = None
    if max_age is not None:
        try:
            age = parse_duration(max_age)
        except ValueError as exc:
            raise errors.InvalidInput(f"--max-age {max_age!r}: {exc}") from None
    with cargohold_open(signal_handlers=False) as hold, _download_bar(not as_json) as progress:
        path = hold.fetch(url, sha256=sha256, max_age=age, progress=progress)
        size = path.stat().st_size
    if as_json:
        typer.echo(json.dumps({"url": url, "path": str(path), "size": size}))
    else:
        typer.echo(str(path))


@contextlib.contextmanager
def _download_bar(show: bool) -> Iterator[Callable[[FetchProgress], None] | None]:
    """A progress bar on stderr for a download, when stderr is a terminal and ``show``."""
    if not show or not err_console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("downloading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("download", total=None)

        def report(p: FetchProgress) -> None:
            bar.update(task, completed=p.done, total=p.total)

        yield report


@app.command()
def gc(
    debug_older_than: Annotated[
        str | None,
        typer.Option(help="Remove debug bundles older than this (default: debug_retention)."),
    ] = None,
    as_json: _JsonOption = False,
) -> None:
    """Remove expired debug bundles, result files no memo entry uses any more, scratch
    workspaces whose process died, and partial downloads abandoned for a day."""
    from .fetch import remove_stale_partials
    from .scratch import collect_bundles, remove_dead, workspace_root

    older_than = None
    if debug_older_than is not None:
        try:
            older_than = parse_duration(debug_older_than)
        except ValueError as exc:
            raise errors.InvalidInput(f"--debug-older-than {debug_older_than!r}: {exc}") from None
    memo_error: errors.CargoholdError | None = None
    with cargohold_open(signal_handlers=False) as hold:
        removed = {"debug_bundles": collect_bundles(hold, older_than=older_than)}
        try:
            removed["memo_files"] = memo_collect_garbage(hold)
        except errors.CargoholdError as exc:
            # It deleted nothing (a record it could not read); the rest still runs, and
            # the command fails with that error at the end.
            memo_error = exc
            removed["memo_files"] = 0
        removed["workspaces"] = remove_dead(workspace_root(hold))
        removed["partial_downloads"] = remove_stale_partials(hold)
        hold.flush(timeout=hold.settings.request_timeout + hold.settings.retry_timeout)
    if as_json:
        typer.echo(json.dumps(removed))
    else:
        typer.echo(
            f"removed {removed['debug_bundles']} debug bundle(s), {removed['memo_files']} "
            f"unused memo file(s), {removed['workspaces']} dead workspace(s) and "
            f"{removed['partial_downloads']} abandoned partial download(s)"
        )
    if memo_error is not None:
        raise memo_error


def main() -> None:
    """Entry point: run the app, turning cargohold errors into one line and an exit code."""
    try:
        app()  # usage errors and --help are handled (and exit) inside
    except (errors.CargoholdError, OSError) as exc:
        # OSError too: a path the user gave that cannot be written is their input, not a bug.
        if options["debug"]:
            raise
        err_console.print(f"[red]error:[/] {_one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(exit_code(exc))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, errors.CargoholdError) or not isinstance(exc, OSError):
        return str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def exit_code(exc: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


# The Hold commands live in their own module to keep this one readable; importing it
# registers them on `app` (last, so `--help` lists this module's commands first).
from . import _cli_hold, _cli_sqlite  # noqa: E402,F401
