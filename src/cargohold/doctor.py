"""``cargohold doctor``: one report a user can paste into an issue.

:func:`diagnose` looks at everything cargohold depends on and returns a
:class:`DoctorReport`; the CLI formats it (``--json`` prints :meth:`DoctorReport.to_dict`).
It covers:

- the host (:func:`cargohold.platform.detect`) and the evidence for it;
- its volumes, and on each where file locks and ``fsync`` cannot be trusted (a Hugging Face
  bucket volume, any network or FUSE mount) the SQLite databases and cargohold data
  directories found there, each a problem with its fix;
- each directory kind (data, cache, temp): the candidate chosen and why every other one
  tried was turned down (:mod:`cargohold.paths`);
- the ML cache variables: where each points (its value, or the library's default when
  unset) and whether that place is usable;
- the remote: reachable, credentials accepted, create-only and if-match puts honoured,
  round-trip latency and write throughput (it writes, reads and deletes one object under
  ``.cargohold/doctor/``);
- durability: the loss window and pending writes of the local tier, and whether they (and
  a full queue, ``max_pending_bytes``) can be flushed within the shutdown grace period.

Each finding that needs attention is a :class:`Problem` with its fix; ``error`` ones make
``ok`` false (and the command exit with 1), ``warning`` ones do not. Problems are grouped
by cause, the root cause first: an unwritable HOME is one problem naming every library
cache it breaks (not one per cache), an unreachable remote comes before the writes it
keeps waiting, a missing ``HF_TOKEN`` before the Hub remote it makes fail. On a Hugging
Face Space the fixes name the Hub remotes (``hf://datasets/OWNER/NAME``,
``hf-s3://OWNER/NAME``) and ``HF_TOKEN`` is checked. Diagnosing changes
nothing but probe files, the directories the paths module would create anyway, and the one
test object in the remote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform as pyplatform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import _volume_scan, paths
from ._version import __version__
from .config import Settings
from .errors import (
    AlreadyExists,
    CargoholdError,
    ConfigError,
    NotFoundError,
    PermissionDenied,
    PreconditionFailed,
    RemoteUnavailable,
    StorageFull,
)
from .keys import internal_key
from .local import LocalTier
from .platform import Platform, Volume, default_shutdown_grace, detect
from .remotes import Remote, open_remote

__all__ = ["CacheVarReport", "DirReport", "DoctorReport", "Problem", "RemoteReport", "diagnose"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that needs attention, and what to do about it.

    ``cause`` names the underlying cause (by default the ``area``); problems with the same
    cause are reported together, the root one (``consequence`` False) first, then those
    that follow from it (fixing the root fixes them)."""

    severity: Severity
    area: str
    what: str
    fix: str
    cause: str = ""
    consequence: bool = False

    @property
    def group(self) -> str:
        return self.cause or self.area


@dataclass(frozen=True, slots=True)
class DirReport:
    """One kind of directory: the candidates tried, in order, with their probe results."""

    kind: str
    chosen: str | None
    source: str | None
    tmpfs: bool
    persistent: bool
    free_bytes: int | None
    candidates: list[dict[str, str]]  # {"path", "source", "result": "chosen" or the reason}
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CacheVarReport:
    """Where one ML cache variable points (``origin``: ``set`` or the library's
    ``default``) and whether that place is usable."""

    name: str
    path: str | None
    origin: Literal["set", "default"]
    usable: bool | None  # None: no default place to check (numba caches beside the code)
    reason: str


@dataclass(slots=True)
class RemoteReport:
    url: str
    embedded_default: bool
    reachable: bool | None = None
    credentials_accepted: bool | None = None
    create_only_honoured: bool | None = None
    if_match_honoured: bool | None = None
    latency_ms: float | None = None
    write_bytes_per_s: float | None = None
    #: What the remote reports of itself (``Remote.stats()``): an ``hf://`` commit budget.
    stats: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DurabilityReport:
    shutdown_grace: float
    grace_from: str
    pending_count: int | None
    pending_bytes: int | None
    loss_window: float | None
    flush_estimate: float | None  # seconds to flush what is pending now
    full_queue_estimate: float | None  # seconds to flush max_pending_bytes
    #: The most seconds of sending ``put`` lets the backlog reach (drain_fraction of the
    #: grace; None: no such limit), and what is pending now would take at the drain rate
    #: the syncer last measured (None: never measured here).
    drain_limit: float | None = None
    drain_estimate: float | None = None


@dataclass(frozen=True)
class DoctorReport:
    """What :func:`diagnose` found. ``ok`` is False when any problem is an error."""

    version: str
    python: str
    system: str
    host: dict[str, Any]
    directories: list[DirReport]
    ml_caches: list[CacheVarReport]
    remote: RemoteReport
    durability: DurabilityReport
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def causes(self) -> list[list[Problem]]:
        """The problems grouped by cause, in report order (each group's root first)."""
        groups: dict[str, list[Problem]] = {}
        for problem in self.problems:
            groups.setdefault(problem.group, []).append(problem)
        return list(groups.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able values (what ``cargohold doctor --json`` prints)."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


def diagnose(
    settings: Settings | None = None,
    *,
    remote: Remote | None = None,
    check_remote: bool = True,
    mounts: str | os.PathLike[str] = "/proc/mounts",
    root: str | os.PathLike[str] = "/",
) -> DoctorReport:
    """Examine this process's host, directories, ML caches, remote and durability.

    ``settings`` default to :meth:`Settings.load` (arguments > ``CARGOHOLD_*`` > defaults);
    ``remote`` overrides the one they name. ``mounts`` and ``root`` are where the mount
    table and the container marker files are read (tests simulate hosts with them).
    Never raises for what it diagnoses: failures become problems in the report.
    """
    settings = settings or Settings.load()
    problems: list[Problem] = []
    host = detect(mounts=mounts, root=root)
    problems += _host_problems(host)
    problems += _volume_problems(host)
    home = _home_problem(problems)  # a root cause: found first, reported first
    directories = [
        _directory(kind, settings, mounts, host, problems) for kind in ("data", "cache", "temp")
    ]
    ml_caches = _ml_caches(settings, mounts, host, problems, broken_home=home)
    data = directories[0]
    token_missing = _hf_token_problem(host, settings, remote, problems)
    remote_report, opened = _remote(settings, remote, data, check_remote, problems)
    try:
        durability = _durability(settings, host, data, remote_report, problems)
    finally:
        if opened is not None and remote is None:
            opened.close()
    _embedded_default_problem(host, data, remote_report, problems)
    if token_missing:  # the remote's failures follow from it
        problems = [
            dataclasses.replace(p, cause="hf-token", consequence=True)
            if p.area == "remote" and p.severity == "error"
            else p
            for p in problems
        ]
    return DoctorReport(
        version=__version__,
        python=sys.version.split()[0],
        system=f"{pyplatform.system()} {pyplatform.release()} {pyplatform.machine()}",
        host={
            "name": host.name,
            "evidence": list(host.evidence),
            "shutdown_signal": host.shutdown_signal.name,
            "grace_seconds": host.grace_seconds,
            "persistent_mounts": [str(p) for p in host.persistent_mounts],
            "writable_dirs": [str(p) for p in host.writable_dirs],
            "memory_disk": host.memory_disk,
            "warnings": list(host.warnings),
            "volumes": [{**asdict(v), "path": str(v.path)} for v in host.volumes],
        },
        directories=directories,
        ml_caches=ml_caches,
        remote=remote_report,
        durability=durability,
        problems=_by_cause(problems),
    )


def _by_cause(problems: list[Problem]) -> list[Problem]:
    """Grouped by cause: groups with an error first, then in the order found (root causes
    are looked for first); within a group the root first."""
    first: dict[str, int] = {}
    worst: dict[str, bool] = {}
    for n, p in enumerate(problems):
        first.setdefault(p.group, n)
        worst[p.group] = worst.get(p.group, False) or p.severity == "error"
    return sorted(
        problems,
        key=lambda p: (not worst[p.group], first[p.group], p.consequence, p.severity != "error"),
    )


# -- the host ------------------------------------------------------------------------------


def _host_problems(host: Platform) -> list[Problem]:
    found = []
    if host.name == "railway" and host.grace_seconds <= 0:
        found.append(
            Problem(
                "warning",
                "host",
                "Railway kills the container right after SIGTERM (a drain of 0 s): writes "
                "not yet synced are lost on every deploy",
                "set RAILWAY_DEPLOYMENT_DRAINING_SECONDS=15 in the service's variables",
            )
        )
    if host.memory_disk:
        found.append(
            Problem(
                "warning",
                "host",
                f"{host.name}'s disk is memory: the local tier and scratch files count "
                "against the instance's memory limit",
                "mount a volume and set CARGOHOLD_DATA_DIR and CARGOHOLD_TEMP_DIR on it, or "
                "keep CARGOHOLD_LOCAL_MAX_BYTES and CARGOHOLD_SCRATCH_QUOTA small",
            )
        )
    if host.name == "aws-lambda":
        found.append(
            Problem(
                "warning",
                "host",
                "Lambda gives well under a second at shutdown, and SIGTERM only with an extension",
                "call hold.flush() or put(..., durable=True) before the handler returns",
            )
        )
    return found


# -- volumes without file locks -------------------------------------------------------------

_SQLITE_FIX = {
    "hf-mount": (
        "keep the database on the container's own disk and put copies in the bucket whole "
        "(sqlite3's backup API, then one upload), or use a database server (PostgreSQL); "
        "for cargohold, keep the local tier on the container disk and make the bucket its "
        "remote: CARGOHOLD_REMOTE=hf-s3://OWNER/NAME"
    ),
    "other": (
        "move the database to a local disk (copy a backup to the volume if it must be "
        "shared), or use a database server (PostgreSQL)"
    ),
}


def _volume_problems(host: Platform, environ: dict[str, str] | None = None) -> list[Problem]:
    """A SQLite database or a cargohold data directory on a volume where file locks and
    fsync cannot be trusted: an error on a bucket volume (hf-mount), a warning elsewhere."""
    env = dict(os.environ) if environ is None else environ
    named = _volume_scan.database_url_path(env)
    found: list[Problem] = []
    for volume in host.volumes:
        if volume.lockable:
            continue
        scan = _volume_scan.sqlite_files(volume.path)
        databases = scan.found
        if named is not None and _within(named, volume.path) and named not in databases:
            databases.append(named)
        holds = [d.parent.parent for d in databases if _is_hold_index(d)]
        apps = [d for d in databases if not _is_hold_index(d)]
        found += _volume_findings(volume, holds, apps)
        if scan.cut_short is not None:
            found.append(_scan_cut_short(volume, scan.cut_short))
    return found


def _scan_cut_short(volume: Volume, why: str) -> Problem:
    # Not finding a database there proves nothing once the scan stopped early: say so.
    return Problem(
        "warning",
        "volumes",
        f"the search for SQLite databases on {volume.path} was cut short ({why}), so some "
        f"may have been missed; it is {volume.why}",
        "check by hand that no database or cargohold data directory is on this volume: "
        f"find {volume.path} -type f \\( -name '*.db' -o -name '*.sqlite*' \\)",
        cause=f"volume:{volume.path}",
    )


def _is_hold_index(path: Path) -> bool:
    # The local tier keeps its index at DATA_DIR/local/index.sqlite3.
    return path.name == "index.sqlite3" and path.parent.name == "local"


def _volume_findings(volume: Volume, holds: list[Path], apps: list[Path]) -> list[Problem]:
    bucket = volume.kind == "hf-mount"
    severity: Severity = "error" if bucket else "warning"
    found = [
        Problem(
            severity,
            "volumes",
            f"a cargohold data directory, {hold}, is on {volume.path}, {volume.why}",
            paths._BUCKET_VOLUME_FIX if bucket else paths._SHARED_FS_FIX,
            cause=f"volume:{volume.path}",
        )
        for hold in holds
    ]
    if apps:
        shown = ", ".join(str(p) for p in apps[:5]) + (" ..." if len(apps) > 5 else "")
        found.append(
            Problem(
                severity,
                "volumes",
                f"{len(apps)} SQLite database(s) on {volume.path} ({shown}), {volume.why}",
                _SQLITE_FIX["hf-mount" if bucket else "other"],
                cause=f"volume:{volume.path}",
            )
        )
    return found


# -- directories ----------------------------------------------------------------------------

_SETTING_OF = {
    "data": "CARGOHOLD_DATA_DIR",
    "cache": "CARGOHOLD_CACHE_DIR",
    "temp": "CARGOHOLD_TEMP_DIR",
}


def _directory(
    kind: str,
    settings: Settings,
    mounts: str | os.PathLike[str],
    host: Platform,
    problems: list[Problem],
) -> DirReport:
    choose: Callable[..., paths.DirChoice] = {
        "data": paths.data_dir,
        "cache": paths.cache_dir,
        "temp": paths.temp_dir,
    }[kind]
    variable = _SETTING_OF[kind]
    try:
        choice = choose(settings, mounts=mounts, host=host)
    except (PermissionDenied, StorageFull) as exc:
        problems.append(
            Problem(
                "error",
                "directories",
                f"no usable {kind} directory: {exc.message}",
                f"set {variable} to a directory this user can write, on a disk with room",
            )
        )
        return DirReport(kind, None, None, False, False, None, [], error=exc.message)
    except ConfigError as exc:  # the data_dir setting names a volume without file locks
        problems.append(
            Problem("error", "directories", exc.message, exc.hint or f"change {variable}")
        )
        return DirReport(kind, None, None, False, False, None, [], error=exc.message)
    candidates = [{"path": str(p), "source": s, "result": why} for p, s, why in choice.rejected]
    candidates.append({"path": str(choice.path), "source": choice.source, "result": "chosen"})
    for path, source, why in choice.rejected:
        if source.startswith("the explicit path") or "setting" in source:
            problems.append(
                Problem(
                    "error",
                    "directories",
                    f"the {kind} directory you set, {path}, is not usable ({why}); "
                    f"{choice.path} is used instead",
                    f"point {variable} at a directory this user can write, or unset it",
                )
            )
    if choice.tmpfs:
        problems.append(
            Problem(
                "warning",
                "directories",
                f"the {kind} directory {choice.path} is RAM-backed: what is written there "
                "spends memory",
                f"mount a disk or volume and set {variable} on it",
            )
        )
    return DirReport(
        kind=kind,
        chosen=str(choice.path),
        source=choice.source,
        tmpfs=choice.tmpfs,
        persistent=choice.persistent,
        free_bytes=choice.free_bytes,
        candidates=candidates,
    )


# -- ML caches ------------------------------------------------------------------------------


def _defaults() -> dict[str, Path | None]:
    """Where each library puts its cache when its variable is unset (None: beside the code)."""
    home = Path(os.environ.get("HOME") or "~").expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    hf_home = Path(os.environ.get("HF_HOME") or xdg / "huggingface")
    hub = Path(
        os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or hf_home / "hub"
    )
    return {
        "XDG_CACHE_HOME": home / ".cache",
        "HF_HOME": xdg / "huggingface",
        "HF_HUB_CACHE": hf_home / "hub",
        "HF_XET_CACHE": hf_home / "xet",
        "HF_DATASETS_CACHE": hf_home / "datasets",
        "SENTENCE_TRANSFORMERS_HOME": hub,
        "TORCH_HOME": xdg / "torch",
        "TRITON_CACHE_DIR": home / ".triton" / "cache",
        "NUMBA_CACHE_DIR": None,
        "MPLCONFIGDIR": home / ".config" / "matplotlib",
        "NLTK_DATA": home / "nltk_data",
        "GRADIO_TEMP_DIR": Path(os.environ.get("TMPDIR") or "/tmp") / "gradio",  # noqa: S108 - gradio's default
    }


def _usable(path: Path) -> str | None:
    """Why ``path`` is not usable (None if it is), creating nothing lasting: an existing
    directory is probed; a missing one counts as usable if its nearest parent is."""
    at = path
    while not at.exists() and at != at.parent:
        at = at.parent
    if at != path and not at.is_dir():
        return f"{at} is not a directory"
    return paths.probe_dir(at)


def _home() -> Path | None:
    home = os.environ.get("HOME")
    if home:
        return Path(home)
    try:
        return Path.home()
    except (RuntimeError, KeyError):  # no HOME and no passwd entry (an arbitrary uid)
        return None


_HOME_FIX = (
    "give the app's user a writable home: in the Dockerfile, RUN useradd -m -u 1000 user, "
    "then USER user and ENV HOME=/home/user (as Hugging Face's Docker Spaces guide does); "
    "or call cargohold.paths.configure_ml_caches() first thing, before importing the ML "
    "libraries, to point their caches at a writable directory"
)


def _home_problem(problems: list[Problem]) -> Path | None:
    """The home directory if this user cannot write it (one problem, the root cause of
    every library cache that defaults under it), else None."""
    home = _home()
    if home is None:
        return None
    why = _usable(home)
    if why is None:
        return None
    under = [name for name, d in _defaults().items() if d is not None and _within(d, home)]
    problems.append(
        Problem(
            "error",
            "home",
            f"HOME ({home}) is not writable ({why}): the caches of {len(under)} libraries "
            f"default to folders under it ({', '.join(under)}), so each fails with "
            "Permission denied there; cargohold's own directories are chosen elsewhere "
            "(see directories)",
            _HOME_FIX,
            cause="home",
        )
    )
    return home


def _within(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
    except ValueError:
        return False
    return True


def _ml_caches(
    settings: Settings,
    mounts: str | os.PathLike[str],
    host: Platform,
    problems: list[Problem],
    *,
    broken_home: Path | None = None,
) -> list[CacheVarReport]:
    defaults = _defaults()
    reports: list[CacheVarReport] = []
    broken: list[str] = []
    for name, default in defaults.items():
        value = os.environ.get(name) or (
            os.environ.get("HUGGINGFACE_HUB_CACHE") if name == "HF_HUB_CACHE" else None
        )
        if value:
            entries = (
                [Path(e) for e in value.split(os.pathsep) if e]
                if name == "NLTK_DATA"
                else [Path(value)]
            )
            reasons = [_usable(e) for e in entries]
            usable = any(r is None for r in reasons)
            reason = (
                "usable"
                if usable
                else "; ".join(f"{e}: {r}" for e, r in zip(entries, reasons, strict=True))
            )
            reports.append(CacheVarReport(name, value, "set", usable, reason))
            if not usable:
                broken.append(name)
                problems.append(
                    Problem(
                        "error",
                        "ml-caches",
                        f"{name}={value} is not usable ({reason})",
                        "call cargohold.paths.configure_ml_caches() first thing (it replaces it "
                        f"with a usable directory), or set {name} to a writable directory",
                    )
                )
            continue
        if default is None:
            reports.append(
                CacheVarReport(name, None, "default", None, "unset: caches beside the code")
            )
            continue
        if broken_home is not None and _within(default, broken_home):
            # Reported once, as the unwritable HOME (the root cause), not once per cache.
            reason = f"under HOME ({broken_home}), which is not writable"
            reports.append(CacheVarReport(name, str(default), "default", False, reason))
            broken.append(name)
            continue
        why = _usable(default)
        reports.append(CacheVarReport(name, str(default), "default", why is None, why or "usable"))
        if why is not None:
            broken.append(name)
            problems.append(
                Problem(
                    "error",
                    "ml-caches",
                    f"{name} is unset and its default, {default}, is not usable ({why}): "
                    "a library that caches there fails with Permission denied",
                    "call cargohold.paths.configure_ml_caches() first thing, before importing "
                    f"the ML libraries, or set {name} to a writable directory",
                )
            )
    for legacy in (
        "TRANSFORMERS_CACHE",
        "PYTORCH_TRANSFORMERS_CACHE",
        "PYTORCH_PRETRAINED_BERT_CACHE",
    ):
        if os.environ.get(legacy):
            problems.append(
                Problem(
                    "warning",
                    "ml-caches",
                    f"{legacy}={os.environ[legacy]} is set, but transformers 5 ignores it",
                    f"remove {legacy}; set HF_HUB_CACHE instead if that place matters",
                )
            )
    return reports


# -- the remote ----------------------------------------------------------------------------


def _remote(
    settings: Settings,
    given: Remote | None,
    data: DirReport,
    check: bool,
    problems: list[Problem],
) -> tuple[RemoteReport, Remote | None]:
    embedded = given is None and not settings.remote
    if given is not None:
        url = given.url
    elif settings.remote:
        url = settings.remote
    else:
        url = (Path(data.chosen) / "remote").as_uri() if data.chosen else "(no data directory)"
    report = RemoteReport(url=url, embedded_default=embedded)
    if given is None and data.chosen is None and embedded:
        report.error = "the embedded default needs a data directory"
        return report, None
    try:
        remote = given if given is not None else open_remote(url, settings=settings)
    except CargoholdError as exc:
        report.error = str(exc)
        problems.append(
            Problem(
                "error",
                "remote",
                f"the remote cannot be opened: {exc.message}",
                exc.hint or "fix CARGOHOLD_REMOTE",
            )
        )
        return report, None
    report.url = remote.url
    report.stats = dict(remote.stats())
    if not remote.conditional_writes:
        problems.append(
            Problem(
                "warning",
                "remote",
                f"the remote {remote.url} cannot enforce create-only or if-match puts: they "
                "are refused, and the memo and shared downloads (fetch_to_remote) need the "
                "catalog's leases on it",
                "set CARGOHOLD_CATALOG=postgresql://... for the leases, or use the bucket "
                "through its S3 gateway (hf-s3://OWNER/NAME with S3 keys made from a token)",
            )
        )
    if check:
        _exercise(remote, report, problems)
    return report, remote


def _exercise(remote: Remote, report: RemoteReport, problems: list[Problem]) -> None:
    """Reach, write, read, create-only, if-match, delete: one test object, timed."""
    key = internal_key(f"doctor/{uuid.uuid4().hex}")

    def step(name: str, action: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            detail, ok = action(), True
        except CargoholdError as exc:
            detail, ok = str(exc), False
            _classify(exc, report)
        report.steps.append(
            {
                "name": name,
                "ok": ok,
                "detail": detail,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )
        return ok

    timings: list[float] = []

    def reach() -> str:
        for _ in range(3):
            started = time.perf_counter()
            with contextlib.suppress(NotFoundError):
                remote.head(key)
            timings.append(time.perf_counter() - started)
        report.reachable = report.credentials_accepted = True
        report.latency_ms = round(statistics.median(timings) * 1000, 2)
        return f"a HEAD takes {report.latency_ms} ms"

    payload = os.urandom(1024 * 1024)

    def write() -> str:
        started = time.perf_counter()
        remote.put(key, payload)
        report.write_bytes_per_s = len(payload) / max(1e-9, time.perf_counter() - started)
        return f"1 MiB written at {report.write_bytes_per_s / 1e6:.1f} MB/s"

    def read() -> str:
        if remote.get(key) != payload:
            raise CargoholdError("the bytes read back differ from those written")
        return "read back"

    def create_only() -> str:
        if not remote.conditional_writes:
            return refused_as_declared(remote, lambda: remote.put(key, b"2", mode="create"))
        try:
            remote.put(key, b"second", mode="create")
        except AlreadyExists:
            report.create_only_honoured = True
            return "a second create-only put was refused"
        report.create_only_honoured = False
        raise CargoholdError("a create-only put replaced an existing object")

    def if_match() -> str:
        if not remote.conditional_writes:
            stale = remote.head(key).etag
            return refused_as_declared(remote, lambda: remote.put(key, b"2", if_match=stale))
        stale = remote.head(key).etag
        remote.put(key, b"v2", if_match=stale)
        try:
            remote.put(key, b"v3", if_match=stale)
        except PreconditionFailed:
            report.if_match_honoured = True
            return "a put with a stale etag was refused"
        report.if_match_honoured = False
        raise CargoholdError("a put with a stale etag replaced the object")

    def delete() -> str:
        remote.delete(key)
        return "deleted"

    if step("reach", reach) and step("write", write):
        step("read", read)
        step("create-only", create_only)
        step("if-match", if_match)
        step("delete", delete)
    if report.reachable is False:
        problems.append(
            Problem(
                "error",
                "remote",
                f"the remote {remote.url} cannot be reached: {report.error}",
                "check its URL (endpoint, bucket), the network, and that the service is up",
            )
        )
    elif report.credentials_accepted is False:
        problems.append(
            Problem(
                "error",
                "remote",
                f"the remote {remote.url} refused the credentials: {report.error}",
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or HF_TOKEN) and that they may read and write this bucket or repo",
            )
        )
    elif report.error is not None:
        problems.append(
            Problem(
                "error",
                "remote",
                f"the remote {remote.url} failed a check: {report.error}",
                "see the remote's steps above",
            )
        )
    for honoured, what in (
        (report.create_only_honoured, "create-only puts"),
        (report.if_match_honoured, "if-match puts"),
    ):
        if honoured is False:
            problems.append(
                Problem(
                    "error",
                    "remote",
                    f"the remote {remote.url} does not honour {what}: single-flight (memo, "
                    "fetch) and compare-and-swap writes are not safe on it",
                    "use a store with conditional writes (AWS S3, R2, MinIO, SeaweedFS, a "
                    "Hugging Face Storage Bucket, a file:// volume)",
                )
            )


def refused_as_declared(remote: Remote, put: Callable[[], object]) -> str:
    """Check that a remote declaring no conditional writes refuses one (``put``)."""
    try:
        put()
    except ConfigError:
        return "refused, as this remote declares: it cannot enforce conditional puts"
    raise CargoholdError(f"{remote.url} accepted a conditional put it declares it cannot enforce")


def _classify(exc: CargoholdError, report: RemoteReport) -> None:
    report.error = report.error or str(exc)
    if isinstance(exc, RemoteUnavailable):
        report.reachable = False
    elif isinstance(exc, PermissionDenied):
        report.reachable, report.credentials_accepted = True, False


def _embedded_default_problem(
    host: Platform, data: DirReport, remote: RemoteReport, problems: list[Problem]
) -> None:
    if not remote.embedded_default or data.chosen is None:
        return
    durable_enough = host.name == "local" or data.persistent
    if host.name == "huggingface-spaces":
        owner, name = _space_names()
        fix = (
            f"set CARGOHOLD_REMOTE to a Hub remote: hf://datasets/{owner}/{name} (a dataset "
            "repo; CARGOHOLD_HF_CREATE_REPO=true creates it, private) or "
            f"hf://buckets/{owner}/{name} (a Storage Bucket through the Hub's bucket API; no "
            "create-only or if-match puts), each with HF_TOKEN, a write token, added as a "
            f"secret in the Space's settings; or hf-s3://{owner}/{name} (the same bucket "
            "through the Hub's S3 gateway, with create-only and if-match puts), with S3 keys "
            "generated from a token (HFAK...) as the secrets AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY"
        )
    else:
        fix = (
            "set CARGOHOLD_REMOTE to a bucket (s3://bucket/prefix) or a mounted volume "
            "(file:///data/app)"
        )
    problems.append(
        Problem(
            "warning" if durable_enough else "error",
            "remote",
            f"no remote is configured, so the embedded default {remote.url} is used: it is on "
            "the same disk as the app"
            + ("" if durable_enough else f", which {host.name} replaces on every redeploy"),
            fix,
        )
    )


def _space_names() -> tuple[str, str]:
    """OWNER and NAME to suggest for this Space's data (its author, its name + -data)."""
    space = os.environ.get("SPACE_ID", "")
    owner = os.environ.get("SPACE_AUTHOR_NAME") or space.partition("/")[0] or "OWNER"
    repo = os.environ.get("SPACE_REPO_NAME") or space.partition("/")[2]
    return owner, f"{repo}-data" if repo else "NAME"


def _hub_token() -> str | None:
    """The Hugging Face token the Hub remotes would use (variables, then the token file)."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    home = Path(os.environ.get("HF_HOME") or (_home() or Path("~")) / ".cache" / "huggingface")
    with contextlib.suppress(OSError):
        return (home / "token").read_text().strip() or None
    return None


def _hf_token_problem(
    host: Platform, settings: Settings, given: Remote | None, problems: list[Problem]
) -> bool:
    """Check HF_TOKEN where it matters: a Hub remote (an error without it) or a Space (a
    warning: the remotes it should use need one). True when a Hub remote has no token."""
    url = given.url if given is not None else (settings.remote or "")
    # hf-s3:// signs with S3 keys, not the token: opening it says when they are missing.
    hub = url.startswith("hf://")
    if not hub and host.name != "huggingface-spaces":
        return False
    token = _hub_token()
    where = (
        "a secret in the Space's settings" if host.name == "huggingface-spaces" else "a variable"
    )
    if token is None:
        problems.append(
            Problem(
                "error" if hub else "warning",
                "hf-token",
                "HF_TOKEN is not set: "
                + (
                    f"the Hub remote {url.split('?')[0]} cannot be read or written without it"
                    if hub
                    else "the Hub remotes (hf://) this Space should keep its "
                    "data in need a write token"
                ),
                f"create a token with write access at https://huggingface.co/settings/tokens "
                f"and add it as HF_TOKEN ({where})",
                cause="hf-token",
            )
        )
        return hub
    if not token.startswith("hf_"):
        problems.append(
            Problem(
                "warning",
                "hf-token",
                "HF_TOKEN does not look like a Hugging Face token (they start with hf_)",
                f"set HF_TOKEN ({where}) to a token from https://huggingface.co/settings/tokens",
                cause="hf-token",
            )
        )
    return False


# -- durability ----------------------------------------------------------------------------


def _durability(
    settings: Settings,
    host: Platform,
    data: DirReport,
    remote: RemoteReport,
    problems: list[Problem],
) -> DurabilityReport:
    if settings.shutdown_grace is not None:
        grace, grace_from = settings.shutdown_grace, "the shutdown_grace setting"
    else:
        grace = default_shutdown_grace(host)
        grace_from = f"80% of {host.name}'s {host.grace_seconds:g} s (at least 1 s)"
    pending_count = pending_bytes = None
    loss_window = flush = full = drain = None
    limit = (
        settings.drain_fraction * grace if settings.drain_fraction is not None and grace else None
    )
    if grace == 0:
        problems.append(
            Problem(
                "warning",
                "durability",
                "the shutdown grace is 0 s (SIGKILL follows SIGTERM at once, Railway's default): "
                "every write is lost with this disk until it syncs, for as long as the loss "
                "window says",
                "pass durable=True for writes that must not be lost, or give the service a "
                "grace period (Railway: RAILWAY_DEPLOYMENT_DRAINING_SECONDS) and set "
                "CARGOHOLD_SHUTDOWN_GRACE to it",
            )
        )
    index = Path(data.chosen) / "local" / "index.sqlite3" if data.chosen else None
    if index is not None and index.exists():
        tier = LocalTier(index.parent)
        try:
            totals = tier.totals()
            bound = tier.info_value("remote")
            measured = _measured_rate(tier.info_value("sync_last_success"))
        finally:
            tier.close()
        if measured is not None:
            drain = max(totals.pending_count * measured[0], totals.pending_bytes * measured[1])
        pending_count, pending_bytes = totals.pending_count, totals.pending_bytes
        loss_window = (
            0.0 if totals.oldest_pending is None else max(0.0, time.time() - totals.oldest_pending)
        )
        if pending_count and bound is not None and bound != remote.url:
            problems.append(
                Problem(
                    "error",
                    "durability",
                    f"the local tier at {index.parent} holds {pending_count} change(s) for "
                    f"{bound}, not for the configured remote {remote.url}",
                    f"open it with {bound} until it is flushed, or use another data directory",
                )
            )
    if remote.latency_ms is not None and remote.write_bytes_per_s:
        per_request = remote.latency_ms / 1000
        if pending_count is not None and pending_bytes is not None:
            flush = (
                pending_count / settings.sync_concurrency * per_request
                + pending_bytes / remote.write_bytes_per_s
            )
        full = settings.max_pending_bytes / remote.write_bytes_per_s
    if pending_count and remote.reachable is False:
        problems.append(
            Problem(
                "error",
                "durability",
                f"{pending_count} write(s) ({pending_bytes} bytes) wait for the remote, which "
                f"cannot be reached; the oldest is {loss_window:.0f} s old",
                "fix the remote (see above); the writes stay in the local journal and sync "
                "when it answers",
                cause="remote",
                consequence=True,
            )
        )
    elif flush is not None and flush > grace:
        problems.append(
            Problem(
                "error",
                "durability",
                f"{pending_count} pending write(s) ({pending_bytes} bytes) need about "
                f"{flush:.1f} s to flush, more than the shutdown grace of {grace:g} s",
                "call hold.flush() after bursts of writes, use put(..., durable=True) for what "
                "must survive, or give the host a longer grace period",
            )
        )
    if full is not None and full > grace and limit is None:
        problems.append(
            Problem(
                "warning",
                "durability",
                f"a full queue of unsynced writes (max_pending_bytes={settings.max_pending_bytes}) "
                f"would take about {full:.0f} s to flush at the measured speed, more than the "
                f"shutdown grace of {grace:g} s",
                "lower CARGOHOLD_MAX_PENDING_BYTES to about "
                f"{int(grace * (remote.write_bytes_per_s or 0))} bytes, or flush at checkpoints",
            )
        )
    return DurabilityReport(
        shutdown_grace=grace,
        grace_from=grace_from,
        pending_count=pending_count,
        pending_bytes=pending_bytes,
        loss_window=loss_window,
        flush_estimate=flush,
        full_queue_estimate=full,
        drain_limit=limit,
        drain_estimate=drain,
    )


def _measured_rate(record: str | None) -> tuple[float, float] | None:
    """(seconds per object, seconds per byte) the syncer recorded, or None."""
    try:
        value = json.loads(record or "{}")
        spo, spb = float(value.get("spo") or 0.0), float(value.get("spb") or 0.0)
    except (ValueError, TypeError, AttributeError):
        return None
    return (spo, spb) if spo > 0 else None
