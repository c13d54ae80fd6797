"""The download cache: ``hold.fetch(url)`` downloads an asset once, then serves a local file.

An asset (a sign-language video, a model file, a dataset shard) is downloaded on first use
and kept in the Hold, so it counts against the local tier's byte bound like everything else
and, with the ``fetch_to_remote`` setting (on by default), reaches the remote too.

Layout in the Hold::

    fetch/<h>/<name>     the bytes; metadata: url, etag, last-modified, sha256
    fetch/<h>.json       the record: url, etag, last_modified, sha256, size, checked, ...

``<h>`` is the SHA-256 (hex) of the URL, ``<name>`` the last segment of its path, so the
file :func:`fetch` returns has the asset's own name (``hello.mp4``). URLs keep their query
in ``<h>`` but user, password and secret-looking query values are redacted from what is
stored (see :mod:`cargohold._redact`).

Guarantees:

- **One download per URL** across threads (a lock per URL), processes sharing the data
  directory (a file lock under the local tier), and, with ``fetch_to_remote``, instances
  sharing the remote (a lease in the remote, see :mod:`cargohold._lease`): waiters take
  the holder's copy. A restarted instance copies the asset from the remote instead of the
  origin. With the remote unreachable, each instance downloads for itself, with a warning.
- **Nothing half-downloaded is served**: bytes stream to a partial file, and only a
  complete download (its length as announced, its SHA-256 as given) is stored. A
  ``sha256=`` that does not match raises :class:`IntegrityError` and caches nothing.
- **Resumes**: a download cut off mid-stream (in this call, or by a process that died) goes
  on from where it stopped with ``Range`` and ``If-Range``, when the origin supports ranges
  and gave a validator; otherwise it starts over.
- **Revalidates** after ``max_age`` (the ``fetch_max_age`` setting) with one conditional
  request (``If-None-Match`` / ``If-Modified-Since``): ``304`` costs no download. A download
  pinned with ``sha256=`` never changes, so it is never revalidated.
- **Serves the stale copy** (with a warning) when the origin cannot be reached or answers
  with a 5xx while revalidating; with no copy at all, it retries with backoff for
  ``retry_timeout`` seconds, then raises :class:`RemoteUnavailable`.
- A returned path stays valid until the asset is downloaded again or evicted: use it soon,
  or copy it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._fork import at_fork
from ._keylocks import KeyedLocks
from ._lease import ExclusiveLease, exclusive_lease, require_single_flight
from ._redact import redact_url
from ._version import __version__
from .errors import (
    CargoholdError,
    HoldClosed,
    IntegrityError,
    InvalidInput,
    InvalidKey,
    NotFoundError,
    PermissionDenied,
    RemoteError,
    RemoteUnavailable,
    StorageFull,
    TimedOut,
    from_os_error,
)
from .hold import provide
from .keys import normalize_key
from .remotes import ObjectInfo
from .remotes._base import MAX_METADATA_BYTES, check_content_type

if TYPE_CHECKING:
    import httpx

    from .hold import Hold

__all__ = ["FetchProgress", "fetch", "remove_stale_partials"]

log = logging.getLogger("cargohold.fetch")

PREFIX = "fetch/"
RECORD_FORMAT = 1
#: Seconds a fetched copy found once is answered from memory (its file checked with an
#: fstat once the local index has changed, see _Hot): at most this long after another
#: process replaced the asset, the old file is served; a file removed by hand, behind
#: cargohold's back, may be named for this long too.
HOT_SECONDS = 1.0
#: Most copies answered from memory at once; each keeps its file open (see _Hot).
HOT_MAX = 128
_CHUNK = 1024 * 1024
_LOG_LARGE = 64 * 1024**2  # downloads from this size log their progress
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The remote, not the origin, failing: fall back to downloading for this instance alone.
_REMOTE_TROUBLE = (RemoteError, TimedOut, PermissionDenied)


@dataclass(frozen=True, slots=True)
class FetchProgress:
    """How far a download has come: ``done`` bytes of ``total`` (None when the origin
    did not say). Passed to ``progress`` every 1 MiB or so, and once at the end.

    While another process or instance downloads the same URL (it holds the lease), the
    call waits and sends ``stage="waiting"`` with ``holder`` (who, since when) about
    once a second. ``message`` and ``fraction`` suit a progress bar:
    ``progress=lambda p: gr_progress(p.fraction, desc=p.message)`` in a Gradio app."""

    url: str
    done: int
    total: int | None
    stage: Literal["waiting", "downloading"] = "downloading"
    holder: str | None = None

    @property
    def fraction(self) -> float | None:
        """``done / total``, or None while waiting or when the size is unknown."""
        if self.stage == "waiting" or not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def message(self) -> str:
        if self.stage == "waiting":
            return f"waiting for {self.url}, being downloaded by {self.holder or '?'}"
        total = f" of {self.total:,}" if self.total is not None else ""
        return f"downloading {self.url}: {self.done:,}{total} bytes"


@dataclass(frozen=True, slots=True)
class _Record:
    """What is known about a downloaded copy; stored as JSON under ``fetch/<h>.json``."""

    url: str  # redacted
    name: str
    etag: str | None
    last_modified: str | None
    sha256: str
    size: int
    content_type: str | None
    downloaded: float
    checked: float  # when the origin last confirmed these bytes (a 200 or a 304)

    def dumps(self) -> bytes:
        return json.dumps({"format": RECORD_FORMAT, **_asdict(self)}, sort_keys=True).encode()

    @classmethod
    def loads(cls, raw: bytes) -> _Record | None:
        try:
            data = json.loads(raw)
            return cls(**{name: data[name] for name in cls.__slots__})
        except (ValueError, KeyError, TypeError):
            return None


def _asdict(record: _Record) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


@dataclass(frozen=True, slots=True)
class _Copy:
    """A copy held in the local tier: its record and a file with its bytes."""

    record: _Record
    path: Path


@dataclass(frozen=True, slots=True)
class _Downloaded:
    path: Path
    size: int
    sha256: str
    etag: str | None
    last_modified: str | None
    content_type: str | None


@dataclass(slots=True)
class _Hot:
    """A copy found recently, with its file held open. While nothing has committed to the
    local index since the copy was last checked (``stamp``, see
    LocalTier.change_stamp), its file cannot have been removed; once something has,
    ``fstat`` of the descriptor tells (eviction, garbage collection and replacement all
    unlink it, leaving no links) without the path lookup a ``stat`` costs."""

    copy: _Copy
    until: float  # time.monotonic() after which it is looked up again
    fd: int
    stamp: bytes | None  # the index's change stamp when the file was last seen linked
    path: Path  # copy.path and copy.record.checked, one attribute away: the fast path
    checked: float  # reads them on every call


class _State:
    """Per-Hold: a lock per URL (kept only while in use), copies found recently, what
    each URL names, and the HTTP client every download of this Hold shares."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.locks = KeyedLocks()
        self.hot: dict[str, _Hot] = {}  # by the URL as given; descriptors closed with them
        self.targets: dict[str, _Target] = {}
        self._client: httpx.Client | None = None
        self._client_pid = 0
        self._client_lock = threading.Lock()
        self._closed = False
        _all_states.add(self)  # reset in a forked child

    def client(self, hold: Hold) -> httpx.Client:
        """The Hold's HTTP client (a keep-alive connection pool), made on first use.

        Fork-safe: a child process never uses its parent's client, whose connections
        are the parent's sockets (both would read and write them); it makes its own, and
        leaves the parent's alone (closing it would close nothing of the parent's, but
        nothing of it is the child's to tidy either)."""
        client = self._client
        if client is not None and self._client_pid == os.getpid():
            return client
        import httpx  # here, not at import: it costs a quarter second to import

        with self._client_lock:
            if self._client is not None and self._client_pid == os.getpid():
                return self._client
            if self._closed:
                raise HoldClosed(f"this Hold on {hold.remote.url} is closed")
            settings = hold.settings
            timeout = httpx.Timeout(settings.request_timeout, connect=settings.connect_timeout)
            self._client = httpx.Client(
                timeout=timeout,
                follow_redirects=True,
                headers={"User-Agent": f"cargohold/{__version__}", "Accept-Encoding": "identity"},
            )
            self._client_pid = os.getpid()
            return self._client

    def _after_fork(self) -> None:
        # Locks a parent's thread held at the fork would stay held here for good.
        self.guard = threading.Lock()
        self._client_lock = threading.Lock()

    def close(self) -> None:
        """When the Hold closes: close held files and this process's client."""
        self._closed = True
        self.forget_hot()
        client, self._client = self._client, None
        if client is not None and self._client_pid == os.getpid():
            client.close()

    def forget_hot(self) -> None:
        """Close every held file (when the Hold closes, or the table is full)."""
        with self.guard:
            for hot in self.hot.values():
                with contextlib.suppress(OSError):
                    os.close(hot.fd)
            self.hot.clear()

    def __del__(self) -> None:
        self.forget_hot()


_all_states: weakref.WeakSet[_State] = weakref.WeakSet()


def _reset_in_child() -> None:
    for state in list(_all_states):
        state._after_fork()


at_fork(_reset_in_child)


def _state(hold: Hold) -> _State:
    # Kept on the Hold itself (closed with it): a dictionary keyed by Hold (weakly) cost
    # a repeated fetch a sixth of its time.
    return hold.extension(_State)


@dataclass(frozen=True, slots=True)
class _Request:
    url: str
    shown: str  # the URL with secrets redacted: for logs, errors and records
    id: str  # SHA-256 of the URL
    name: str
    sha256: str | None
    max_age: float
    headers: dict[str, str]
    progress: Callable[[FetchProgress], None] | None

    @property
    def record_key(self) -> str:
        return f"{PREFIX}{self.id}.json"

    @property
    def blob_key(self) -> str:
        return f"{PREFIX}{self.id}/{self.name}"

    def usable(self, record: _Record, now: float | None = None) -> bool:
        """Whether ``record``'s copy may be served as it is, without asking the origin."""
        if self.sha256 is not None:
            return record.sha256 == self.sha256  # pinned content never goes stale
        age = (time.time() if now is None else now) - record.checked
        return age <= self.max_age


def fetch(
    hold: Hold,
    url: str,
    *,
    sha256: str | None = None,
    max_age: float | None = None,
    progress: Callable[[FetchProgress], None] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Path:
    """The behaviour behind :meth:`Hold.fetch`; see this module's docstring. Raises
    ConfigError when downloads are shared through the remote (``fetch_to_remote``) and the
    Hold cannot keep one to one instance (see :func:`cargohold._lease.require_single_flight`)."""
    if hold.settings.fetch_to_remote:
        require_single_flight(hold, "sharing downloads through the remote (fetch_to_remote)")
    try:
        return _fetch(hold, url, sha256, max_age, progress, headers)
    except CargoholdError:
        raise
    except OSError as exc:  # the local disk: read-only, full, not ours
        raise from_os_error(
            exc,
            f"keep the download of {redact_url(str(url))} in {hold.local_dir}",
            fix="free space in the data directory, or set CARGOHOLD_DATA_DIR to a writable "
            "directory on a disk with room",
        ) from exc


def _fetch(
    hold: Hold,
    url: str,
    sha256: str | None,
    max_age: float | None,
    progress: Callable[[FetchProgress], None] | None,
    headers: Mapping[str, str] | None,
) -> Path:
    state = _state(hold)
    if isinstance(url, str):  # the fast path: a copy found less than HOT_SECONDS ago
        hot = _still_hot(hold, state, url, sha256, max_age)
        if hot is not None:
            return hot
    request = _request(hold, state, url, sha256, max_age, progress, headers)
    found = _local_copy(hold, request)
    if found is not None and request.usable(found.record):
        _remember(hold, state, url, found)
        return found.path
    with _url_lock(state, request), _file_lock(hold, request):
        found = _local_copy(hold, request)  # fetched by another thread or process meanwhile
        if found is not None and request.usable(found.record):
            _remember(hold, state, url, found)
            return found.path
        copy = _Fetch(hold, request, found).run()
    _remember(hold, state, url, copy)
    return copy.path


@dataclass(frozen=True, slots=True)
class _Target:
    """What a URL names: itself normalised, redacted, its digest and its file name."""

    url: str
    shown: str
    id: str
    name: str


def _target(state: _State, url: str) -> _Target:
    found = state.targets.get(url)
    if found is not None:
        return found
    if not isinstance(url, str):
        raise InvalidInput(f"fetch takes a URL as str, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"fetch takes http:// or https:// URLs, not {redact_url(url)!r}",
            hint="for files already on disk, put them with hold.put(key, Path(...))",
        )
    normal = urllib.parse.urlunsplit(parts)
    digest = hashlib.sha256(normal.encode()).hexdigest()
    target = _Target(normal, redact_url(normal), digest, _file_name(parts.path, digest))
    with state.guard:
        if len(state.targets) >= 4096:
            state.targets.clear()
        state.targets[url] = target
    return target


def _request(
    hold: Hold,
    state: _State,
    url: str,
    sha256: str | None,
    max_age: float | None,
    progress: Callable[[FetchProgress], None] | None,
    headers: Mapping[str, str] | None,
) -> _Request:
    target = _target(state, url)
    if sha256 is not None:
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
            raise InvalidInput(f"sha256 must be 64 hex digits, not {sha256!r}")
        sha256 = sha256.lower()
    if max_age is None:
        max_age = hold.settings.fetch_max_age
    elif isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age < 0:
        raise InvalidInput(f"max_age must be a number of seconds >= 0, not {max_age!r}")
    return _Request(
        url=target.url,
        shown=target.shown,
        id=target.id,
        name=target.name,
        sha256=sha256,
        max_age=float(max_age),
        headers=dict(headers or {}),
        progress=progress,
    )


def _file_name(path: str, digest: str) -> str:
    """The URL's last path segment as a key segment (the file's name), or ``download``."""
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    name = re.sub(r"[\x00-\x1f\x7f-\x9f/\\]", "_", name).strip()
    if name in ("", ".", ".."):
        return "download"
    while len(name.encode()) > 200:  # room to spare under the 255-byte segment limit
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[:-8]}{dot}{ext}" if dot and len(ext) < 16 and stem else name[:-8]
    try:
        normalize_key(f"{PREFIX}{digest}/{name}")
    except InvalidKey:
        return "download"
    return name


# -- the local tier -------------------------------------------------------------------------


def _still_hot(
    hold: Hold, state: _State, url: str, sha256: str | None, max_age: float | None
) -> Path | None:
    """The path of a copy found recently, if it may be served as it is: found less than
    HOT_SECONDS ago, what was asked for, fresh enough, and its file still there. Anything
    odd about the arguments answers None, and the slow path says what is wrong with them."""
    hot = state.hot.get(url)
    if hot is None:
        return None
    stamp = hold.local_only.change_stamp()  # read before the check it stands for
    if stamp is None or stamp != hot.stamp or time.monotonic() > hot.until:
        # The index changed (or the copy is old): look at the file itself. No lock is
        # needed otherwise, as the descriptor is not touched.
        with state.guard:  # the descriptor cannot be closed (and its number reused) meanwhile
            if state.hot.get(url) is not hot:
                return None
            if time.monotonic() > hot.until or _unlinked(hot.fd):
                # Closed now: an open descriptor would keep a removed file's disk space.
                del state.hot[url]
                os.close(hot.fd)
                return None
            hot.stamp = stamp
    if sha256 is None and max_age is None:  # the usual call: the default max_age
        if time.time() - hot.checked > hold.settings.fetch_max_age:
            return None
        return hot.path
    record = hot.copy.record
    if sha256 is not None:
        if not isinstance(sha256, str) or sha256.lower() != record.sha256:
            return None
    else:
        limit = hold.settings.fetch_max_age if max_age is None else max_age
        if not isinstance(limit, int | float) or time.time() - record.checked > limit:
            return None
    return hot.copy.path


def _unlinked(fd: int) -> bool:
    """The file was removed (evicted, collected or replaced) since it was opened."""
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def _remember(hold: Hold, state: _State, url: str, copy: _Copy) -> None:
    stamp = hold.local_only.change_stamp()  # before the open that shows the file is there
    try:
        fd = os.open(copy.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # gone already: the next fetch looks it up again
    now = time.monotonic()
    with state.guard:
        replaced = state.hot.pop(url, None)
        if replaced is not None:
            os.close(replaced.fd)
        if len(state.hot) >= HOT_MAX:  # the expired go first, then the oldest
            for key in [k for k, h in state.hot.items() if now > h.until]:
                os.close(state.hot.pop(key).fd)
            while len(state.hot) >= HOT_MAX:
                os.close(state.hot.pop(next(iter(state.hot))).fd)
        state.hot[url] = _Hot(copy, now + HOT_SECONDS, fd, stamp, copy.path, copy.record.checked)


def _local_copy(hold: Hold, request: _Request) -> _Copy | None:
    """The copy this data directory holds, if its record and its bytes agree. Only the
    local tier is read: a miss costs no remote request."""
    local = hold.local_only
    entry = local.entry(request.record_key)
    if entry is None or entry.deleted:
        return None
    raw = local.data(entry)
    record = _Record.loads(raw) if raw is not None else None
    if record is None:
        return None
    blob = local.entry(request.blob_key)
    if blob is None or blob.deleted or blob.metadata.get("sha256") != record.sha256:
        return None  # the bytes were evicted, or replaced without their record (a crash)
    path = local.path(request.blob_key)
    return _Copy(record, path) if path is not None else None


def _url_lock(state: _State, request: _Request) -> contextlib.AbstractContextManager[None]:
    def waiting(seconds: float) -> None:
        log.info("cargohold: waiting %.0fs for another thread fetching %s", seconds, request.shown)

    return state.locks.hold(request.id, waiting=waiting)


@contextlib.contextmanager
def _file_lock(hold: Hold, request: _Request) -> Iterator[None]:
    """One fetch of a URL at a time among the processes sharing this data directory.

    A lock file under the local tier, not a lock in SQLite: it is held for a whole
    download, and it goes with the process that holds it (flock), so a killed download
    blocks no one. (On network file systems flock may silently succeed; the local tier
    belongs on a local disk anyway.)

    The holder removes the file before it lets go, so ``fetch-locks/`` holds only the
    files of fetches under way (and of processes killed mid-fetch, until that URL is
    fetched again). A waiter may then hold a lock on a file that is no longer there:
    after taking the lock it checks that the path still names the file it locked, and
    starts over if not, so two processes never both hold the lock of one URL.
    """
    folder = hold.local_dir / "fetch-locks"
    folder.mkdir(exist_ok=True)
    path = folder / f"{request.id}.lock"
    started = last_log = time.monotonic()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    now = time.monotonic()
                    if now - last_log >= 10:
                        last_log = now
                        log.info(
                            "cargohold: waiting %.0fs for another process fetching %s",
                            now - started,
                            request.shown,
                        )
                    # flock has no timeout, and a blocked flock cannot log: poll, as the
                    # filelock package does.
                    time.sleep(0.05)
            if _names(path, fd):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed by its holder while this waited: lock the current one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding it: see the docstring
        os.close(fd)


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


# -- one fetch that found no usable local copy ----------------------------------------------


class _Fetch:
    def __init__(self, hold: Hold, request: _Request, found: _Copy | None) -> None:
        self.hold = hold
        self.state = _state(hold)
        self.request = request
        self.found = found
        self.settings = hold.settings
        self.share = hold.settings.fetch_to_remote
        self.partial = hold.local_dir / "fetch-partial" / f"{request.id}.part"
        self.partial_meta = self.partial.with_name(f"{request.id}.part.json")

    def run(self) -> _Copy:
        lease: ExclusiveLease | None = None
        try:
            if self.share:
                try:
                    lease, adopted = self._lease_or_copy()
                    if adopted is not None:
                        return adopted
                except _REMOTE_TROUBLE as exc:
                    self._go_alone(exc)
            best = self.found
            if self.share:
                try:
                    shared = self._remote_copy()
                except _REMOTE_TROUBLE as exc:
                    self._go_alone(exc)
                    shared = None
                if shared is not None:
                    if self.request.usable(shared.record):
                        return shared
                    best = shared  # stale, but the newest there is: revalidate it
            return self._from_origin(best)
        finally:
            if lease is not None:
                lease.release()

    def _go_alone(self, exc: CargoholdError) -> None:
        self.share = False
        log.warning(
            "cargohold: the remote %s cannot coordinate or share the download of %s (%s): "
            "downloading it for this instance alone",
            self.hold.remote.url,
            self.request.shown,
            exc,
        )

    # -- the remote ----------------------------------------------------------------------

    def _lease_or_copy(self) -> tuple[ExclusiveLease | None, _Copy | None]:
        """Take the lease for this URL, or wait until its holder's copy is in the remote."""
        lease = exclusive_lease(
            self.hold,
            f"leases/fetch/{self.request.id}",
            ttl=self.settings.lease_ttl,
            purpose=f"the download of {self.request.shown}",
        )
        delay = 0.05
        started = time.monotonic()
        next_log = started + 2  # a short wait is normal; a longer one is said, every 10 s
        next_tell = started + 0.5
        holder: str | None = None
        progress = self.request.progress
        while True:
            if lease.try_acquire():
                return lease, None
            copy = self._remote_copy(only_if_usable=True)
            if copy is not None:
                return None, copy
            now = time.monotonic()
            if now >= next_log:
                holder = lease.holder_info()
                log.warning(
                    "cargohold: waiting %.0fs for %s, being made by %s; if that process was "
                    "killed, its lease expires %gs after its last renewal "
                    "(CARGOHOLD_LEASE_TTL), and this call then downloads it",
                    now - started,
                    lease.purpose,
                    holder,
                    self.settings.lease_ttl,
                )
                next_log = now + 10
            if progress is not None and now >= next_tell:
                holder = holder or lease.holder_info()
                progress(FetchProgress(self.request.shown, 0, None, "waiting", holder))
                next_tell = now + 1
            time.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 1.5, 1.0)

    def _remote_copy(self, *, only_if_usable: bool = False) -> _Copy | None:
        """The remote's copy, brought into the local tier (a HEAD when the local one is
        the same), or None when the remote has none."""
        request = self.request
        for _ in range(3):
            try:
                if only_if_usable:
                    record = _Record.loads(self.hold.remote.get(request.record_key))
                    if record is None or not request.usable(record):
                        return None
                record = _Record.loads(self.hold.get(request.record_key, max_age=0))
                if record is None:
                    return None
                path = self.hold.path(request.blob_key, max_age=0)
                info = self.hold.head(request.blob_key, max_age=math.inf)
            except NotFoundError:
                return None
            if (info.metadata or {}).get("sha256") == record.sha256:
                return _Copy(record, path)
            # Read between another instance's new bytes and its new record: read again.
        return None

    # -- the origin ----------------------------------------------------------------------

    def _from_origin(self, best: _Copy | None) -> _Copy:
        request = self.request
        if best is not None and request.sha256 is not None and best.record.sha256 != request.sha256:
            best = None  # not the bytes asked for: of no use, even stale
        try:
            downloaded = _Download(self, best.record if best else None).run()
        except RemoteUnavailable as exc:
            if best is None:
                raise
            log.warning(
                "cargohold: serving the copy of %s checked %s ago, as the origin cannot be "
                "reached: %s",
                request.shown,
                _ago(best.record.checked),
                exc,
            )
            return best
        now = time.time()
        if downloaded is None:  # 304: the copy is current
            assert best is not None
            record = replace(best.record, checked=now)
            self._store_record(record)
            return _Copy(record, best.path)
        record = _Record(
            url=request.shown,
            name=request.name,
            etag=downloaded.etag,
            last_modified=downloaded.last_modified,
            sha256=downloaded.sha256,
            size=downloaded.size,
            content_type=downloaded.content_type,
            downloaded=now,
            checked=now,
        )
        return self._store(downloaded, record)

    # -- storing ---------------------------------------------------------------------------

    def _store(self, downloaded: _Downloaded, record: _Record) -> _Copy:
        request = self.request
        metadata = _blob_metadata(record)
        content_type = _content_type(downloaded.content_type, request.blob_key)
        try:
            if self.share:
                self._durable(
                    request.blob_key,
                    lambda: self.hold.put(
                        request.blob_key,
                        downloaded.path,
                        metadata=metadata,
                        content_type=content_type,
                        durable=True,
                    ),
                )
            else:
                self._keep_local(request.blob_key, downloaded.path, metadata, content_type)
        finally:
            with contextlib.suppress(FileNotFoundError):
                downloaded.path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.partial_meta.unlink()
        self._store_record(record)
        path = self.hold.local_only.path(request.blob_key)
        if path is None:
            raise StorageFull(
                f"{request.shown} ({record.size} bytes) was evicted from the local tier as "
                "soon as it was stored",
                hint="raise CARGOHOLD_LOCAL_MAX_BYTES",
            )
        return _Copy(record, path)

    def _store_record(self, record: _Record) -> None:
        key = self.request.record_key
        if self.share:
            self._durable(
                key,
                lambda: self.hold.put(
                    key, record.dumps(), content_type="application/json", durable=True
                ),
            )
        else:
            self._keep_local(key, record.dumps(), {}, "application/json")

    def _durable(self, key: str, put: Callable[[], ObjectInfo]) -> None:
        try:
            put()
        except (TimedOut, RemoteError) as exc:
            # Kept in the local journal; the syncer sends it when the remote is back.
            log.warning("cargohold: %s is stored locally but not on the remote yet: %s", key, exc)

    def _keep_local(
        self, key: str, data: Path | bytes, metadata: dict[str, str], content_type: str
    ) -> None:
        """Store a copy in the local tier only (``fetch_to_remote`` off): a clean entry the
        syncer never sends, evicted like any other when the tier is full."""
        local = self.hold.local_only
        current = local.entry(key)
        if current is not None and current.pending:
            # A write of this key made with fetch_to_remote on, not yet synced: replace it
            # the ordinary way, or it would reach the remote stale.
            self.hold.put(key, data, metadata=metadata, content_type=content_type)
            return
        local.keep(
            key,
            data,
            etag=f"fetched-{hashlib.sha256(key.encode()).hexdigest()[:16]}-{time.time_ns()}",
            metadata=metadata,
            content_type=content_type,
        )


def _blob_metadata(record: _Record) -> dict[str, str]:
    metadata = {"sha256": record.sha256}
    if record.etag:
        metadata["etag"] = record.etag
    if record.last_modified:
        metadata["last-modified"] = record.last_modified
    metadata["url"] = record.url
    total = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if total > MAX_METADATA_BYTES:
        del metadata["url"]  # a very long URL: the record keeps it
    return metadata


def _content_type(given: str | None, key: str) -> str:
    try:
        return check_content_type(given, key)
    except InvalidInput:
        return check_content_type(None, key)


def _ago(moment: float) -> str:
    seconds = max(0.0, time.time() - moment)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# -- the download ------------------------------------------------------------------------------


class _Retry(Exception):
    """A transient failure: retry (with Range when the partial file allows it)."""


class _Download:
    """One download from the origin into the partial file; see ``run``."""

    def __init__(self, fetch: _Fetch, validators: _Record | None) -> None:
        self.fetch = fetch
        self.request = fetch.request
        self.settings = fetch.settings
        self.validators = validators
        self.partial = fetch.partial
        self.partial_meta = fetch.partial_meta
        self.body_started = False

    def run(self) -> _Downloaded | None:
        """The complete, verified download; None for a 304 (the validators' copy is
        current). Retries transient failures with backoff for ``retry_timeout`` seconds
        (``max_retries`` times at most), resuming what already arrived. With a copy to fall
        back on, an origin that cannot be reached is not retried: the copy is served."""
        import httpx  # here, not at import: it costs a quarter second to import

        self.partial.parent.mkdir(exist_ok=True)
        deadline = time.monotonic() + self.settings.retry_timeout
        attempt = 0
        last: BaseException | None = None
        client = self.fetch.state.client(self.fetch.hold)
        while True:
            self.body_started = False
            try:
                with client.stream("GET", self.request.url, headers=self._headers()) as response:
                    return self._receive(response)
            except (httpx.TransportError, _Retry) as exc:
                last = exc
            attempt += 1
            # With a copy to fall back on, an origin that is down (no connection, a 5xx)
            # is not waited for; a body cut off mid-way is resumed.
            if (not self.body_started and self.validators is not None) or (
                attempt > self.settings.max_retries or time.monotonic() >= deadline
            ):
                raise RemoteUnavailable(
                    f"the origin of {self.request.shown} did not answer after {attempt} "
                    f"attempt(s): {_describe(last)}",
                    remote=self.request.shown,
                    hint="check the URL and the network; the download resumes where it "
                    "stopped when the origin supports ranges",
                ) from last
            pause = min(2.0, 0.1 * 2**attempt)
            time.sleep(random.uniform(pause / 2, pause))  # noqa: S311 - jitter, not crypto

    def _resume_from(self) -> tuple[int, str | None]:
        """Bytes already in the partial file, and the validator they were sent with."""
        try:
            meta = json.loads(self.partial_meta.read_bytes())
            size = self.partial.stat().st_size
        except (OSError, ValueError):
            return 0, None
        if meta.get("url") != self.request.shown or not meta.get("validator"):
            return 0, None
        return size, str(meta["validator"])

    def _headers(self) -> dict[str, str]:
        headers = dict(self.request.headers)
        if self.validators is not None:
            if self.validators.etag:
                headers["If-None-Match"] = self.validators.etag
            if self.validators.last_modified:
                headers["If-Modified-Since"] = self.validators.last_modified
        offset, validator = self._resume_from()
        if offset and validator:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = validator
        return headers

    def _receive(self, response: httpx.Response) -> _Downloaded | None:
        status = response.status_code
        if status == 304 and self.validators is not None:
            self._forget_partial()
            return None
        if status == 416:  # the partial file is not a prefix of what is there now
            self._forget_partial()
            raise _Retry("the origin refused the range of a partial download; starting over")
        if status == 206:
            offset = self._check_content_range(response)
        elif status == 200:
            offset = 0
        else:
            raise _origin_error(self.request, response)
        total = _total_size(response, offset)
        limit = self.settings.local_max_bytes
        if total is not None and total > limit:
            raise StorageFull(
                f"{self.request.shown} is {total} bytes, more than the local tier holds "
                f"(local_max_bytes={limit})",
                hint="raise CARGOHOLD_LOCAL_MAX_BYTES",
            )
        if offset == 0:
            self._note_validator(response)
        return self._write(response, offset, total)

    def _check_content_range(self, response: httpx.Response) -> int:
        offset, _ = self._resume_from()
        match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != offset:
            self._forget_partial()
            raise _Retry("the origin sent another range than the one asked for; starting over")
        return offset

    def _note_validator(self, response: httpx.Response) -> None:
        """Remember what the partial file is a prefix of, so a later attempt (or process)
        may resume it with If-Range. Without a strong validator, it cannot."""
        etag = response.headers.get("ETag")
        validator = etag if etag and not etag.startswith("W/") else None
        validator = validator or response.headers.get("Last-Modified")
        meta = {"url": self.request.shown, "validator": validator}
        self.partial_meta.write_text(json.dumps(meta))

    def _write(self, response: httpx.Response, offset: int, total: int | None) -> _Downloaded:
        digest = hashlib.sha256()
        if offset:
            with self.partial.open("rb") as done:
                while chunk := done.read(_CHUNK):
                    digest.update(chunk)
        size = offset
        request = self.request
        loud = total is None or total >= _LOG_LARGE
        started = last_log = time.monotonic()
        if loud:
            log.info("cargohold: downloading %s (%s bytes)", request.shown, total or "unknown")
        self.body_started = True
        reported = size
        with self.partial.open("ab" if offset else "wb") as out:
            # As the bytes arrive (not in 1 MiB pieces): what arrived before a cut is kept.
            for chunk in response.iter_raw():
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                if request.progress is not None and size - reported >= _CHUNK:
                    reported = size
                    request.progress(FetchProgress(request.shown, size, total))
                if loud and time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    log.info(
                        "cargohold: %s: %d of %s bytes, %.1f MB/s",
                        request.shown,
                        size,
                        total or "?",
                        (size - offset) / 1e6 / max(1e-9, last_log - started),
                    )
        if total is not None and size != total:
            raise _Retry(f"the body stopped at {size} of {total} bytes")
        if request.progress is not None and size != reported:
            request.progress(FetchProgress(request.shown, size, total))
        sha = digest.hexdigest()
        if request.sha256 is not None and sha != request.sha256:
            self._forget_partial()
            raise _integrity_error(request, sha)
        if loud:
            log.info("cargohold: downloaded %s (%d bytes)", request.shown, size)
        return _Downloaded(
            path=self.partial,
            size=size,
            sha256=sha,
            etag=response.headers.get("ETag"),
            last_modified=response.headers.get("Last-Modified"),
            content_type=response.headers.get("Content-Type"),
        )

    def _forget_partial(self) -> None:
        for path in (self.partial, self.partial_meta):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _integrity_error(request: _Request, sha: str) -> IntegrityError:
    return IntegrityError(
        f"{request.shown} has SHA-256 {sha}, not {request.sha256}: nothing was cached",
        remote=request.shown,
        hint="check the URL and the sha256 given (the file at the origin may have changed)",
    )


def _total_size(response: httpx.Response, offset: int) -> int | None:
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rsplit("/", 1)[-1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _origin_error(request: _Request, response: httpx.Response) -> BaseException:
    status = response.status_code
    what = f"{request.shown} answered {status} {response.reason_phrase}".strip()
    if status in (408, 425, 429) or status >= 500:
        return _Retry(what)
    if status in (404, 410):
        return NotFoundError(what, remote=request.shown)
    if status in (401, 403):
        return PermissionDenied(
            what,
            remote=request.shown,
            hint="pass the credentials the origin wants, e.g. headers={'Authorization': ...}",
        )
    return RemoteError(what, remote=request.shown)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, _Retry) else f"{type(exc).__name__}: {text}"


def remove_stale_partials(hold: Hold, *, older_than: float = 24 * 3600.0) -> int:
    """Remove partial downloads untouched for ``older_than`` seconds (left by downloads that
    were cut off and never asked for again), with their notes. Returns how many. Also
    removes the lock files of fetches whose process was killed (no one holds them)."""
    _remove_idle_locks(hold.local_dir / "fetch-locks")
    folder = hold.local_dir / "fetch-partial"
    cutoff = time.time() - older_than
    removed = 0
    for partial in folder.glob("*.part") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            if partial.stat().st_mtime < cutoff:
                partial.unlink()
                removed += 1
                with contextlib.suppress(FileNotFoundError):
                    partial.with_name(partial.name + ".json").unlink()
    return removed


def _remove_idle_locks(folder: Path) -> None:
    """Remove each lock file no process holds, by the protocol of :func:`_file_lock`:
    take it (without waiting), check the path still names it, remove it, let go."""
    for path in folder.glob("*.lock") if folder.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _names(path, fd):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        except BlockingIOError:
            pass  # a fetch under way
        finally:
            os.close(fd)


provide("fetch", fetch)  # what Hold.fetch calls
