"""Settings: explicit argument > ``CARGOHOLD_*`` environment variable > default.

Settings are read when an object is built (``Settings.load()``), never at import, so a
test or an app can set a variable any time before it opens a Hold. Each setting is one
field of :class:`Settings`; its metadata names its variable and says what it does, and the
README's settings table is generated from (and tested against) these fields.

Values from the environment are parsed by type: sizes accept ``512MiB`` / ``2GB`` /
``1048576``, durations accept ``30s`` / ``5m`` / ``7d`` / ``1.5`` (seconds), booleans accept
``1/0``, ``true/false``, ``yes/no``, ``on/off``. A value that does not parse raises
:class:`~cargohold.errors.ConfigError` naming the variable and the expected form.

Each setting also declares the values it allows (:class:`Bounds` for numbers, written
once beside the setting and shown in the README's table). :meth:`Settings.load` checks
every value it resolves, from an argument or a variable, so a setting out of range (0
syncs at once, -1 retries, NaN, infinity, a number past any sane use) is refused when a
Hold is opened, with a ``ConfigError`` naming the variable and the allowed range, and
never shows up later as a syncer that does nothing or a crash at the first flush.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, InvalidKey
from .keys import PUBLIC_MEMO_PREFIX, never_public, normalize_prefix

__all__ = [
    "TOKEN68",
    "Bounds",
    "Settings",
    "parse_bool",
    "parse_duration",
    "parse_int",
    "parse_size",
    "settings_table",
]

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
_DURATION_UNITS = {
    "": 1.0,
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


def parse_size(text: str) -> int:
    """``"512MiB"`` -> 536870912. Units: B, kB/MB/GB/TB (powers of 1000), KiB/MiB/GiB/TiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size such as 512MiB, 2GB or 1048576")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_duration(text: str) -> float:
    """``"5m"`` -> 300.0 seconds. Units: ms, s, m (or min), h, d; a bare number is seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m, 1h, 7d or 2.5")
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


#: RFC 6750's b64token (RFC 9110's token68): the only tokens a client can send as
#: ``Authorization: Bearer <token>``. A token outside it could never be matched.
TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def _parse_token(text: str) -> str | None:
    value = text.strip()
    if not value:
        return None
    if not TOKEN68.fullmatch(value):
        raise ValueError(
            "a bearer token holds only letters, digits and - . _ ~ + / (then = signs), as "
            "RFC 6750 says, or no client could send it; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def _refused_public(prefix: str) -> bool:
    """Whether ``prefix`` may not be made public: it covers debug bundles or memo records
    (:func:`cargohold.keys.never_public`). ``memo/blobs/`` and prefixes under it may be:
    result files live there, and the service still checks each key it serves (a namespace
    called ``blobs`` keeps its records there too) and lists none of them anonymously."""
    return never_public(prefix, prefix=True) and not prefix.casefold().startswith(
        PUBLIC_MEMO_PREFIX
    )


def _parse_public_prefixes(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    prefixes: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a key prefix (text)")
        if isinstance(text, str):
            item = item.strip()
            if not item:
                continue
        if not item:
            raise ValueError("an empty prefix would make every object public")
        try:
            prefix = normalize_prefix(item)
        except InvalidKey as exc:
            raise ValueError(f"{item!r} is not a key prefix: {exc.message}") from None
        if _refused_public(prefix):
            raise ValueError(
                f"{item!r} covers debug bundles (debug/) or memo records (memo/), which are "
                "never public; memo result files may be, under memo/blobs/"
            )
        if prefix not in prefixes:
            prefixes.append(prefix)
    return tuple(prefixes)


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value

    return parse


def parse_int(text: str) -> int:
    """``"32"`` -> 32: a whole number, in decimal."""
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number such as 32") from None


def _parse_number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number such as 100 or 0.5") from None


def _parse_fraction_or_off(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a fraction such as 0.5, or off") from None


def _parse_http_url(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"https?://[^\s/?#]+\S*", value):
        raise ValueError(f"{text!r} is not an http(s) URL such as https://s3.example.com")
    return value


def _show_size(n: float) -> str:
    for unit, size in (("EiB", 1024**6), ("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= size and n % size == 0:
            return f"{int(n // size)}{unit}"
    if n >= 1024 and n % 1024 == 0:
        return f"{int(n // 1024)}KiB"
    return f"{int(n)}B" if n else "0"


def _show_duration(n: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if n >= size and n % size == 0:
            return f"{int(n // size)}{unit}"
    return f"{n:g}s" if n else "0"


@dataclass(frozen=True, slots=True)
class Bounds:
    """The values a number setting allows: ``low <= x <= high`` (``low < x`` when
    ``low_open``), always finite. ``unit`` is how the README shows the ends: ``"size"``
    (``1MiB``), ``"duration"`` (``10m``) or ``""`` (a plain number); ``off`` names the text
    that turns the setting off (its Python value None), if it has one."""

    low: float
    high: float
    low_open: bool = False
    unit: Literal["size", "duration", ""] = ""
    off: str | None = None

    def allows(self, value: float) -> bool:
        if not math.isfinite(value) or value > self.high:
            return False
        return value > self.low if self.low_open else value >= self.low

    def _show(self, n: float) -> str:
        if self.unit == "size":
            return _show_size(n)
        if self.unit == "duration":
            return _show_duration(n)
        return str(int(n)) if float(n).is_integer() else f"{n:g}"

    def __str__(self) -> str:
        low = self._show(self.low)
        text = f"{low} {'<' if self.low_open else '<='} x <= {self._show(self.high)}"
        return f"{text}, or {self.off}" if self.off else text


_DAY = 24 * 3600.0
_YEAR = 365 * _DAY
_MAX_SIZE = 1024**6  # 1 EiB: past any disk, and far inside SQLite's 64-bit integers


def _setting(
    default: Any,
    env: str,
    doc: str,
    parse: Callable[[str], Any],
    accepts: tuple[type, ...],
    shown: str | None = None,
    allowed: Bounds | str | None = None,
    secret: bool = False,
) -> Any:
    """One setting: its variable, its doc line, how to parse its text form, the Python
    types an explicit argument may have (text is always accepted and parsed), and what it
    allows (a :class:`Bounds` that :meth:`Settings.load` checks, or the text of a choice
    its parser enforces, shown in the README). A ``secret`` setting's value is never
    repeated in an error message."""
    return field(
        default=default,
        metadata={
            "env": env,
            "doc": doc,
            "parse": parse,
            "accepts": accepts,
            "shown": shown,
            "allowed": allowed,
            "secret": secret,
        },
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
        allowed="a remote URL",
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
        allowed=Bounds(0, _MAX_SIZE, unit="size"),
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
        allowed="a `postgresql://` URL",
    )
    connect_timeout: float = _setting(
        5.0,
        "CARGOHOLD_CONNECT_TIMEOUT",
        "Seconds to wait for a connection to the remote before retrying.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, 600, low_open=True, unit="duration"),
    )
    request_timeout: float = _setting(
        60.0,
        "CARGOHOLD_REQUEST_TIMEOUT",
        "Seconds one remote request may take, body included, before it is retried.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, _DAY, low_open=True, unit="duration"),
    )
    retry_timeout: float = _setting(
        20.0,
        "CARGOHOLD_RETRY_TIMEOUT",
        "Seconds a remote request keeps being retried (with backoff and jitter) before "
        "`RemoteUnavailable` is raised.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, _DAY, unit="duration"),
    )
    max_retries: int = _setting(
        6,
        "CARGOHOLD_MAX_RETRIES",
        "Most retries of one remote request (throttling, 5xx, dropped connections).",
        parse_int,
        (int,),
        allowed=Bounds(0, 100),
    )
    local_max_bytes: int = _setting(
        5 * 1024**3,
        "CARGOHOLD_LOCAL_MAX_BYTES",
        "Bound on the local tier's bytes. Least recently used objects that the remote "
        "already has are evicted past it; unsynced ones never are.",
        parse_size,
        (int,),
        shown="`5GiB`",
        allowed=Bounds(1, _MAX_SIZE, unit="size"),
    )
    max_pending_bytes: int = _setting(
        1024**3,
        "CARGOHOLD_MAX_PENDING_BYTES",
        "Cap on bytes written locally but not yet on the remote. Past it, `put` waits for "
        "the syncer (or raises, see `backpressure`).",
        parse_size,
        (int,),
        shown="`1GiB`",
        allowed=Bounds(1, _MAX_SIZE, unit="size"),
    )
    backpressure: str = _setting(
        "wait",
        "CARGOHOLD_BACKPRESSURE",
        "What `put` does past `max_pending_bytes`: `wait` (up to `backpressure_timeout`, "
        "then `StorageFull`) or `raise` (`StorageFull` at once).",
        _parse_choice("wait", "raise"),
        (),
        allowed="`wait` or `raise`",
    )
    backpressure_timeout: float = _setting(
        60.0,
        "CARGOHOLD_BACKPRESSURE_TIMEOUT",
        "Seconds a `put` waits for the syncer to make room before raising `StorageFull`.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, _DAY, unit="duration"),
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
        allowed=Bounds(0, 10 * _YEAR, unit="duration"),
    )
    sync_concurrency: int = _setting(
        32,
        "CARGOHOLD_SYNC_CONCURRENCY",
        "Requests the syncer keeps in flight to the remote (the `file` remote runs at most 4 at "
        "once: its work is Python on this machine, and more threads only contend for the disk "
        "and the GIL).",
        parse_int,
        (int,),
        allowed=Bounds(1, 1024),
    )
    sync_batch: int = _setting(
        256,
        "CARGOHOLD_SYNC_BATCH",
        "Most changes the syncer takes from the journal at once.",
        parse_int,
        (int,),
        allowed=Bounds(1, 100_000),
    )
    sync_delay: float = _setting(
        0.05,
        "CARGOHOLD_SYNC_DELAY",
        "Seconds the syncer lets new writes gather before it sends them, so a burst goes "
        "up in one batch. `flush()` and shutdown do not wait.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, 60, unit="duration"),
    )
    resend_after: float = _setting(
        15.0,
        "CARGOHOLD_RESEND_AFTER",
        "Seconds a send that got no answer (a timeout, a process killed mid-request) may "
        "still land: meanwhile the same version may be sent again, but a newer version of "
        "that key waits, so the late request cannot land after it.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, _DAY, unit="duration"),
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
        allowed=Bounds(0, _DAY, unit="duration", off="unset"),
    )
    drain_fraction: float | None = _setting(
        0.5,
        "CARGOHOLD_DRAIN_FRACTION",
        "The syncer keeps the estimated time to drain unsynced writes to the remote under "
        "this fraction of `shutdown_grace`; past it, `put` waits (or raises `StorageFull` "
        "with `backpressure=raise`). `off`: no limit but `max_pending_bytes`.",
        _parse_fraction_or_off,
        (int, float),
        shown="`0.5`",
        allowed=Bounds(0, 1, low_open=True, off="`off` (None in Python)"),
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
    lease_ttl: float = _setting(
        60.0,
        "CARGOHOLD_LEASE_TTL",
        "Seconds a single-flight lease (a memo build, a shared download) outlives its "
        "holder's last renewal. A holder that stops gracefully (SIGTERM, SIGINT, `close()`, "
        "a build that raises) gives its leases up at once; only one that is killed or loses "
        "its machine keeps the others waiting this long.",
        parse_duration,
        (int, float),
        shown="`60s`",
        allowed=Bounds(1, _DAY, unit="duration"),
    )
    sqlite_retention: float = _setting(
        _DAY,
        "CARGOHOLD_SQLITE_RETENTION",
        "How far back a replicated SQLite database can be restored (`--at`). Older "
        "generations, snapshots and segments are deleted from the remote, keeping always "
        "the latest snapshot taken before the window and everything after it. `0`: only the "
        "latest snapshot and what follows it.",
        parse_duration,
        (int, float),
        shown="`24h`",
        allowed=Bounds(0, 3650 * _DAY, unit="duration"),
    )
    sqlite_snapshot_segments: int = _setting(
        500,
        "CARGOHOLD_SQLITE_SNAPSHOT_SEGMENTS",
        "A replicated SQLite database gets a new snapshot after this many segments (or once "
        "the WAL shipped since the last outgrows the database), so a restore applies at most "
        "this many.",
        parse_int,
        (int,),
        allowed=Bounds(1, 1_000_000),
    )
    sqlite_uploads_per_minute: float = _setting(
        30.0,
        "CARGOHOLD_SQLITE_UPLOADS_PER_MINUTE",
        "Most records (segments and snapshots) the replicator of one SQLite database uploads "
        "a minute in the background: when the app commits faster, more transactions go into "
        "each segment. `60 / this` seconds is the loss window it implies (`sqlite_status`). "
        "`flush()`, `close()` and a stop signal ship at once, whatever the budget. On "
        "`hf://datasets/` at most half of `hf_commits_per_hour` (each upload is a commit).",
        _parse_number,
        (int, float),
        shown="`30`",
        allowed=Bounds(0, 6000, low_open=True),
    )
    persist_interval: float = _setting(
        10.0,
        "CARGOHOLD_PERSIST_INTERVAL",
        "Seconds between scans of a `persist_dir` folder for added, changed and deleted files.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, _DAY, low_open=True, unit="duration"),
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
        allowed=Bounds(0, 10 * _YEAR, unit="duration"),
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
        allowed=Bounds(1, _MAX_SIZE, unit="size"),
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
        allowed=Bounds(0, 10 * _YEAR, unit="duration"),
    )
    token: str | None = _setting(
        None,
        "CARGOHOLD_TOKEN",
        "Bearer token of the HTTP service: reads and writes (`Authorization: Bearer ...`). "
        "With neither this nor `read_token` set the service is in local mode: clients on "
        "this machine read, others only `public_prefixes`, nobody writes.",
        _parse_token,
        (str,),
        shown="unset",
        allowed="a token68 (`A-Z a-z 0-9 - . _ ~ + /`, then `=`s)",
        secret=True,
    )
    read_token: str | None = _setting(
        None,
        "CARGOHOLD_READ_TOKEN",
        "Bearer token of the HTTP service that reads but never writes (objects, listings, "
        "memo entries, stats, metrics): for a dashboard or a reader app. Must differ from "
        "`token`.",
        _parse_token,
        (str,),
        shown="unset",
        allowed="a token68, not `token`",
        secret=True,
    )
    public_prefixes: tuple[str, ...] = _setting(
        (),
        "CARGOHOLD_PUBLIC_PREFIXES",
        "Key prefixes the HTTP service serves to anyone, without a token (comma-separated, "
        "e.g. `public/,thumbnails/`; matched as plain strings, so end one with `/` to mean a "
        "folder). Never debug bundles (`debug/`) or memo records: a prefix covering them is "
        "refused (`memo/blobs/` may be public: result files, never inputs).",
        _parse_public_prefixes,
        (list, tuple),
        shown="none",
        allowed="key prefixes, not covering `debug/` or `memo/` records",
    )
    ready_max_loss_window: float = _setting(
        300.0,
        "CARGOHOLD_READY_MAX_LOSS_WINDOW",
        "`/readyz` fails once the oldest unsynced write is older than this.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, 30 * _DAY, unit="duration"),
    )
    ready_max_unreachable: float = _setting(
        120.0,
        "CARGOHOLD_READY_MAX_UNREACHABLE",
        "`/readyz` fails once the remote has failed for this long without a success.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, 30 * _DAY, unit="duration"),
    )
    max_upload_bytes: int = _setting(
        1024**3,
        "CARGOHOLD_MAX_UPLOAD_BYTES",
        "Largest body the HTTP service takes in one `PUT`: a larger one is refused with 413 "
        "(at once when its Content-Length says so, else as soon as it passes the cap).",
        parse_size,
        (int,),
        shown="`1GiB`",
        allowed=Bounds(1, _MAX_SIZE, unit="size"),
    )
    http_header_timeout: float = _setting(
        10.0,
        "CARGOHOLD_HTTP_HEADER_TIMEOUT",
        "Seconds `cargohold serve` gives a client to send a request's headers, counted from "
        "its connection or its first byte after an idle pause; then 408 and the connection "
        "is closed (a client trickling headers holds no connection for long).",
        parse_duration,
        (int, float),
        allowed=Bounds(0, 3600, low_open=True, unit="duration"),
    )
    http_idle_timeout: float = _setting(
        15.0,
        "CARGOHOLD_HTTP_IDLE_TIMEOUT",
        "Seconds `cargohold serve` keeps an idle keep-alive connection open between requests, "
        "and the HTTP service waits for the next part of a `PUT` body before answering 408.",
        parse_duration,
        (int, float),
        allowed=Bounds(0, 3600, low_open=True, unit="duration"),
    )
    hf_commits_per_hour: float = _setting(
        100.0,
        "CARGOHOLD_HF_COMMITS_PER_HOUR",
        "Commits an `hf://` remote makes per hour at most (a token bucket with a burst of "
        "ten minutes' worth). The Hub allows 128 an hour on free accounts; writes made "
        "meanwhile gather into the next commit. A 429 from the Hub slows it further.",
        _parse_number,
        (int, float),
        shown="`100`",
        allowed=Bounds(0, 1e9, low_open=True),
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
        "S3 endpoint of `hf-s3://OWNER/NAME` remotes; `{namespace}` becomes OWNER.",
        _parse_http_url,
        (str,),
        allowed="an http(s) URL",
    )
    log_level: str | None = _setting(
        None,
        "CARGOHOLD_LOG_LEVEL",
        "Level of cargohold's own loggers (`cargohold`, `cargohold.memo`, ...), set when a "
        "Hold opens; the app's root logger is never touched. A level set here is printed to "
        "stderr even if the app configured no logging, and through the app's handlers (once) "
        "if it did. Unset: the app's logging decides (Python's default prints WARNING and up).",
        _parse_choice("debug", "info", "warning", "error"),
        (str,),
        shown="unset",
        allowed="`debug`, `info`, `warning` or `error`",
    )

    def __post_init__(self) -> None:
        if self.token is not None and self.token == self.read_token:
            raise ConfigError(
                "CARGOHOLD_READ_TOKEN is the same as CARGOHOLD_TOKEN: a read-only token must "
                "not also grant writes",
                hint="give the read token its own value, or unset it",
            )

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> Settings:
        """Resolve every setting: ``overrides`` (not None) > ``env`` (default ``os.environ``) > default.

        Raises :class:`ConfigError`, naming the variable and what it allows, for an unknown
        override, a value that does not parse, a value of the wrong type, or a value out of
        the setting's range. An override of None means "not given", except for a setting
        that None turns off (``drain_fraction``), where it means off.
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
            if given is None and f.name in overrides and _none_is_off(f):
                values[f.name] = None
            elif given is not None:
                values[f.name] = _coerce(f, given)
            elif (raw := environ.get(f.metadata["env"])) is not None:
                values[f.name] = _from_variable(f, raw)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (same validation as :meth:`load`; None is
        allowed only where a setting can be unset or off)."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}")
            f = fields[name]
            if value is None:
                if f.default is not None and not _none_is_off(f):
                    raise ConfigError(
                        f"setting {name} cannot be None", hint=_allowed_hint(f, "give a value")
                    )
                continue
            changes[name] = _coerce(f, value)
        return dataclasses.replace(self, **changes)


_KINDS: dict[tuple[type, ...], str] = {
    (int,): "a whole number",
    (int, float): "a number",
    (bool,): "True or False",
    (os.PathLike,): "a path",
}


def _none_is_off(f: dataclasses.Field[Any]) -> bool:
    """True for a setting whose None means off rather than unset (its default is not None)."""
    allowed = f.metadata["allowed"]
    return f.default is not None and isinstance(allowed, Bounds) and allowed.off is not None


def _allowed_hint(f: dataclasses.Field[Any], text: str) -> str:
    allowed = f.metadata["allowed"]
    return f"{text}; {f.metadata['env']} allows {allowed}" if allowed else text


def _check(f: dataclasses.Field[Any], value: Any, what: str) -> Any:
    """``value`` if the setting's :class:`Bounds` allow it, else a ConfigError naming the
    variable and the range (NaN and infinities are never allowed)."""
    allowed = f.metadata["allowed"]
    if isinstance(allowed, Bounds) and value is not None and not allowed.allows(value):
        raise ConfigError(
            f"{what} is out of range: {f.metadata['env']} allows {allowed}",
            hint=f.metadata["doc"],
        )
    return value


def _shown_value(f: dataclasses.Field[Any], value: Any) -> str:
    return "<hidden>" if f.metadata["secret"] else repr(value)


def _from_variable(f: dataclasses.Field[Any], raw: str) -> Any:
    what = f"{f.metadata['env']}={_shown_value(f, raw)}"
    try:
        value = f.metadata["parse"](raw)
    except ValueError as exc:
        raise ConfigError(f"{what} is not valid", hint=_allowed_hint(f, str(exc))) from None
    return _check(f, value, what)


def _coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    """Accept an explicit argument in one of its natural types, or as text in the variable's
    form, and check it against the setting's range."""
    what = f"setting {f.name}={_shown_value(f, value)} ({f.metadata['env']})"
    if isinstance(value, str):
        try:
            parsed = f.metadata["parse"](value)
        except ValueError as exc:
            raise ConfigError(f"{what} is not valid", hint=_allowed_hint(f, str(exc))) from None
        return _check(f, parsed, what)
    accepts: tuple[type, ...] = f.metadata["accepts"]
    if not isinstance(value, accepts) or (isinstance(value, bool) and bool not in accepts):
        kind = type(value).__name__
        article = "an" if kind[:1] in "aeiou" else "a"
        raise ConfigError(
            f"setting {f.name} cannot be {article} {kind}",
            hint=_allowed_hint(
                f, f"pass {_KINDS.get(accepts, 'text')}, or text in the form of {f.metadata['env']}"
            ),
        )
    if isinstance(value, os.PathLike):
        return Path(value).expanduser()
    if isinstance(value, (list, tuple)):
        try:
            return f.metadata["parse"](value)
        except ValueError as exc:
            raise ConfigError(f"{what} is not valid", hint=_allowed_hint(f, str(exc))) from None
    if float in accepts and isinstance(value, int):
        value = float(value)
    return _check(f, value, what)


def settings_table(fmt: Literal["markdown"] = "markdown") -> str:
    """The README's settings table, generated from :class:`Settings`."""
    rows = [
        "| setting | variable | default | allowed | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in dataclasses.fields(Settings):
        default = f.metadata["shown"] or _show_default(f.default)
        allowed = _show_allowed(f)
        rows.append(
            f"| `{f.name}` | `{f.metadata['env']}` | {default} | {allowed} | {f.metadata['doc']} |"
        )
    return "\n".join(rows) + "\n"


def _show_allowed(f: dataclasses.Field[Any]) -> str:
    allowed = f.metadata["allowed"]
    if isinstance(allowed, Bounds):
        text = str(allowed)
        number, sep, rest = text.partition(", or ")
        return f"`{number}`{sep}{rest}"
    if allowed:
        return str(allowed)
    if isinstance(f.default, bool):
        return "`true` or `false`"
    if os.PathLike in f.metadata["accepts"]:
        return "a directory"
    return "text"


def _show_default(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}s`"
    if isinstance(value, float):
        return f"`{value}s`"
    return f"`{value}`"
