"""Settings: explicit argument > ``CARGOHOLD_*`` environment variable > default.

Settings are read when an object is built (``Settings.load()``), never at import, so a
test or an app can set a variable any time before it opens a Hold. Each setting is one
field of :class:`Settings`; its metadata names its variable and says what it does, and the
README's settings table is generated from (and tested against) these fields.

Values from the environment are parsed by type: sizes accept ``512MiB`` / ``2GB`` /
``1048576``, durations accept ``30s`` / ``5m`` / ``1.5`` (seconds), booleans accept
``1/0``, ``true/false``, ``yes/no``, ``on/off``. A value that does not parse raises
:class:`~cargohold.errors.ConfigError` naming the variable and the expected form.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["Settings", "parse_bool", "parse_duration", "parse_size", "settings_table"]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_size(text: str) -> int:
    """``"512MiB"`` -> 536870912. Units: B, kB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size such as 512MiB, 2GB or 1048576")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(text: str) -> float:
    """``"5m"`` -> 300.0 seconds. Units: ms, s, m (or min), h; a bare number is seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 1h or 2.5")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean such as true/false, 1/0, yes/no, on/off")


def _parse_optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


def _parse_optional_duration(text: str) -> float | None:
    return parse_duration(text) if text.strip() else None


def _parse_optional_str(text: str) -> str | None:
    return text.strip() or None


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _setting(
    default: Any,
    env: str,
    doc: str,
    parse: Callable[[str], Any],
    accepts: tuple[type, ...],
    shown: str | None = None,
) -> Any:
    """One setting: its variable, its doc line, how to parse its text form, and the Python
    types an explicit argument may have (text is always accepted and parsed)."""
    return field(
        default=default,
        metadata={"env": env, "doc": doc, "parse": parse, "accepts": accepts, "shown": shown},
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, resolved. Build with :meth:`Settings.load`, not the constructor."""

    remote: str | None = _setting(
        None,
        "CARGOHOLD_REMOTE",
        "URL of the durable tier: `file:///path`, `s3://bucket/prefix`, `memory://name`. "
        "Unset: the embedded default, a `file` remote inside the data directory.",
        _parse_optional_str,
        (str,),
        shown="embedded default",
    )
    data_dir: Path | None = _setting(
        None,
        "CARGOHOLD_DATA_DIR",
        "Directory for the local tier (and the embedded default remote). "
        "Unset: the first writable candidate (see `cargohold doctor`).",
        _parse_optional_path,
        (os.PathLike,),
        shown="probed",
    )
    cache_dir: Path | None = _setting(
        None,
        "CARGOHOLD_CACHE_DIR",
        "Directory for caches (and the root `configure_ml_caches()` uses). Unset: the first "
        "usable candidate, a persistent volume first.",
        _parse_optional_path,
        (os.PathLike,),
        shown="probed",
    )
    temp_dir: Path | None = _setting(
        None,
        "CARGOHOLD_TEMP_DIR",
        "Directory for temporary and scratch files. Unset: a private folder in the system "
        "temp directory, or on disk when that is RAM-backed.",
        _parse_optional_path,
        (os.PathLike,),
        shown="probed",
    )
    min_free_bytes: int = _setting(
        64 * 1024**2,
        "CARGOHOLD_MIN_FREE_BYTES",
        "A directory with less free space than this is not chosen.",
        parse_size,
        (int,),
        shown="`64MiB`",
    )
    catalog: str | None = _setting(
        None,
        "CARGOHOLD_CATALOG",
        "PostgreSQL URL of the shared catalog (`postgresql://user@host/db`): listings and "
        "memo queries from an index, leases in the database, change notices between "
        "instances. Unset: everything works from the remote alone.",
        _parse_optional_str,
        (str,),
        shown="unset",
    )
    connect_timeout: float = _setting(
        5.0,
        "CARGOHOLD_CONNECT_TIMEOUT",
        "Seconds to wait for a connection to the remote before retrying.",
        parse_duration,
        (int, float),
    )
    request_timeout: float = _setting(
        60.0,
        "CARGOHOLD_REQUEST_TIMEOUT",
        "Seconds one remote request may take, body included, before it is retried.",
        parse_duration,
        (int, float),
    )
    retry_timeout: float = _setting(
        20.0,
        "CARGOHOLD_RETRY_TIMEOUT",
        "Seconds a remote request keeps being retried (with backoff and jitter) before "
        "`RemoteUnavailable` is raised.",
        parse_duration,
        (int, float),
    )
    max_retries: int = _setting(
        6,
        "CARGOHOLD_MAX_RETRIES",
        "Most retries of one remote request (throttling, 5xx, dropped connections).",
        int,
        (int,),
    )
    local_max_bytes: int = _setting(
        5 * 1024**3,
        "CARGOHOLD_LOCAL_MAX_BYTES",
        "Bound on the local tier's bytes. Least recently used objects that the remote "
        "already has are evicted past it; unsynced ones never are.",
        parse_size,
        (int,),
        shown="`5GiB`",
    )
    max_pending_bytes: int = _setting(
        1024**3,
        "CARGOHOLD_MAX_PENDING_BYTES",
        "Cap on bytes written locally but not yet on the remote. Past it, `put` waits for "
        "the syncer (or raises, see `backpressure`).",
        parse_size,
        (int,),
        shown="`1GiB`",
    )
    backpressure: str = _setting(
        "wait",
        "CARGOHOLD_BACKPRESSURE",
        "What `put` does past `max_pending_bytes`: `wait` (up to `backpressure_timeout`, "
        "then `StorageFull`) or `raise` (`StorageFull` at once).",
        _parse_choice("wait", "raise"),
        (),
    )
    backpressure_timeout: float = _setting(
        60.0,
        "CARGOHOLD_BACKPRESSURE_TIMEOUT",
        "Seconds a `put` waits for the syncer to make room before raising `StorageFull`.",
        parse_duration,
        (int, float),
    )
    fsync: bool = _setting(
        False,
        "CARGOHOLD_FSYNC",
        "Also survive power loss: fsync every local write. Without it, a killed process "
        "loses nothing acknowledged, but a machine crash may lose the last writes.",
        parse_bool,
        (bool,),
    )
    max_age: float = _setting(
        60.0,
        "CARGOHOLD_MAX_AGE",
        "Seconds a cached copy is served before it is checked against the remote's etag "
        "(a HEAD, not a download). Other instances may have changed the key.",
        parse_duration,
        (int, float),
    )
    sync_concurrency: int = _setting(
        32,
        "CARGOHOLD_SYNC_CONCURRENCY",
        "Requests the syncer keeps in flight to the remote (the `file` remote runs at most 4 at "
        "once: its work is Python on this machine, and more threads only contend for the disk "
        "and the GIL).",
        int,
        (int,),
    )
    sync_batch: int = _setting(
        256,
        "CARGOHOLD_SYNC_BATCH",
        "Most changes the syncer takes from the journal at once.",
        int,
        (int,),
    )
    sync_delay: float = _setting(
        0.05,
        "CARGOHOLD_SYNC_DELAY",
        "Seconds the syncer lets new writes gather before it sends them, so a burst goes "
        "up in one batch. `flush()` and shutdown do not wait.",
        parse_duration,
        (int, float),
    )
    resend_after: float = _setting(
        15.0,
        "CARGOHOLD_RESEND_AFTER",
        "Seconds before a change whose send got no answer (a crash, a timeout) is sent "
        "again: the first request may still land, and must not land after a newer one.",
        parse_duration,
        (int, float),
    )
    shutdown_grace: float | None = _setting(
        None,
        "CARGOHOLD_SHUTDOWN_GRACE",
        "Seconds the shutdown flush (on SIGTERM, SIGINT and exit) may take before the "
        "process is let go, with what remains logged. Unset: 80% of the detected host's "
        "grace period (Fly 5 s, Cloud Run 10 s, Render and Kubernetes 30 s, ...).",
        _parse_optional_duration,
        (int, float),
        shown="from the host",
    )
    drain_fraction: float | None = _setting(
        0.5,
        "CARGOHOLD_DRAIN_FRACTION",
        "TEMPORARY (replaced by the config branch)",
        lambda v: None if v == "off" else float(v),
        (int, float),
    )
    signal_handlers: bool = _setting(
        True,
        "CARGOHOLD_SIGNAL_HANDLERS",
        "Install SIGTERM and SIGINT handlers that flush before the app's own handlers run.",
        parse_bool,
        (bool,),
    )
    memo_seed_dir: Path | None = _setting(
        None,
        "CARGOHOLD_MEMO_SEED_DIR",
        "Read-only folder of generation-cache entries committed with the app (e.g. "
        "`data/seed`, written by `cargohold memo export`), consulted before the local tier "
        "by every `hold.memo()` that does not pass `seed_dir=`. Unset: no seed folder.",
        _parse_optional_path,
        (os.PathLike,),
        shown="unset",
    )
    persist_interval: float = _setting(
        10.0,
        "CARGOHOLD_PERSIST_INTERVAL",
        "Seconds between scans of a `persist_dir` folder for added, changed and deleted files.",
        parse_duration,
        (int, float),
    )
    fetch_max_age: float = _setting(
        24 * 3600.0,
        "CARGOHOLD_FETCH_MAX_AGE",
        "Seconds a download made by `hold.fetch()` is served before the origin is asked "
        "whether it changed (one conditional request, using its ETag and Last-Modified). "
        "Downloads pinned with `sha256=` are never asked about again.",
        parse_duration,
        (int, float),
        shown="`24h`",
    )
    fetch_to_remote: bool = _setting(
        True,
        "CARGOHOLD_FETCH_TO_REMOTE",
        "Store what `hold.fetch()` downloads in the remote too: instances sharing the remote "
        "then download each URL once between them, and a restarted instance copies it from "
        "the remote instead of the origin. Off: downloads stay in this instance's local tier.",
        parse_bool,
        (bool,),
    )
    scratch_quota: int = _setting(
        1024**3,
        "CARGOHOLD_SCRATCH_QUOTA",
        "Most bytes one `hold.scratch()` workspace may hold. Writes through the workspace "
        "stop with `StorageFull` at the quota; files written by other means are counted "
        "at the next call and at exit.",
        parse_size,
        (int,),
        shown="`1GiB`",
    )
    debug_bundles: bool = _setting(
        True,
        "CARGOHOLD_DEBUG_BUNDLES",
        "When a `hold.scratch()` request fails, upload its files, traceback and record "
        "(secrets redacted) to the remote under `debug/<date>/<request id>/`.",
        parse_bool,
        (bool,),
    )
    debug_retention: float = _setting(
        7 * 24 * 3600.0,
        "CARGOHOLD_DEBUG_RETENTION",
        "Seconds a debug bundle is kept: `cargohold gc` removes older ones.",
        parse_duration,
        (int, float),
        shown="`168h`",
    )
    token: str | None = _setting(
        None,
        "CARGOHOLD_TOKEN",
        "Bearer token the HTTP service requires for PUT and DELETE. Unset: the service "
        "refuses writes (reads stay open).",
        _parse_optional_str,
        (str,),
        shown="unset",
    )
    ready_max_loss_window: float = _setting(
        300.0,
        "CARGOHOLD_READY_MAX_LOSS_WINDOW",
        "`/readyz` fails once the oldest unsynced write is older than this.",
        parse_duration,
        (int, float),
    )
    ready_max_unreachable: float = _setting(
        120.0,
        "CARGOHOLD_READY_MAX_UNREACHABLE",
        "`/readyz` fails once the remote has failed for this long without a success.",
        parse_duration,
        (int, float),
    )
    hf_commits_per_hour: float = _setting(
        100.0,
        "CARGOHOLD_HF_COMMITS_PER_HOUR",
        "Commits an `hf://` remote makes per hour at most (a token bucket with a burst of "
        "ten minutes' worth). The Hub allows 128 an hour on free accounts; writes made "
        "meanwhile gather into the next commit. A 429 from the Hub slows it further.",
        float,
        (int, float),
        shown="`100`",
    )
    hf_create_repo: bool = _setting(
        False,
        "CARGOHOLD_HF_CREATE_REPO",
        "Create the dataset repo of an `hf://` remote (private) when it does not exist, "
        "instead of raising `ConfigError`.",
        parse_bool,
        (bool,),
    )
    hf_bucket_endpoint: str = _setting(
        "https://s3.hf.co/{namespace}",
        "CARGOHOLD_HF_BUCKET_ENDPOINT",
        "S3 endpoint of `hf-bucket://OWNER/NAME` remotes; `{namespace}` becomes OWNER.",
        str,
        (str,),
    )
    log_level: str = _setting(
        "info",
        "CARGOHOLD_LOG_LEVEL",
        "Level of cargohold's own log messages: debug, info, warning, error.",
        _parse_choice("debug", "info", "warning", "error"),
        (),
    )

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> Settings:
        """Resolve every setting: ``overrides`` (not None) > ``env`` (default ``os.environ``) > default.

        Raises :class:`ConfigError` for an unknown override or a variable that does not parse.
        """
        environ = os.environ if env is None else env
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"unknown setting {unknown[0]!r}",
                hint=f"known settings are {', '.join(sorted(names))}",
            )
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            given = overrides.get(f.name)
            if given is not None:
                values[f.name] = _coerce(f, given)
                continue
            raw = environ.get(f.metadata["env"])
            if raw is not None:
                try:
                    values[f.name] = f.metadata["parse"](raw)
                except ValueError as exc:
                    raise ConfigError(
                        f"{f.metadata['env']}={raw!r} is not valid", hint=str(exc)
                    ) from None
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (same validation as :meth:`load`)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}")
            changes[name] = _coerce(fields[name], value) if value is not None else None
        return dataclasses.replace(self, **changes)


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    """Accept an explicit argument in one of its natural types, or as text in the variable's form."""
    if isinstance(value, str):
        try:
            return f.metadata["parse"](value)
        except ValueError as exc:
            raise ConfigError(f"setting {f.name}={value!r} is not valid", hint=str(exc)) from None
    accepts: tuple[type, ...] = f.metadata["accepts"]
    if not isinstance(value, accepts) or (isinstance(value, bool) and bool not in accepts):
        raise ConfigError(
            f"setting {f.name} cannot be a {type(value).__name__}",
            hint=f"pass text in the form of {f.metadata['env']}",
        )
    if isinstance(value, os.PathLike):
        return Path(value).expanduser()
    if isinstance(f.default, float) and isinstance(value, int | float):
        return float(value)
    return value


def settings_table(fmt: Literal["markdown"] = "markdown") -> str:
    """The README's settings table, generated from :class:`Settings`."""
    rows = ["| setting | variable | default | what it does |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        default = f.metadata["shown"] or _show_default(f.default)
        rows.append(f"| `{f.name}` | `{f.metadata['env']}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def _show_default(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}s`"
    if isinstance(value, float):
        return f"`{value}s`"
    return f"`{value}`"
