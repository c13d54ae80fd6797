"""The Hold: a local tier that answers at disk speed, in front of a durable remote.

``cargohold.open()`` builds one from settings. Writes land in the local tier and its
journal, and a syncer thread drains them to the remote; reads are served locally, else
read through from the remote and kept. See :class:`Hold` for what each call promises.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, Self, TypeVar, cast

from . import _fork, _shutdown
from ._fork import on_fork
from ._keylocks import KeyedLocks
from ._local_only import LocalOnly
from ._logging import apply_log_level
from ._ranged import RangedRemoteFile
from ._threads import start_thread
from .config import Settings
from .errors import (
    CargoholdError,
    CatalogUnavailable,
    ConfigError,
    HoldClosed,
    InvalidInput,
    NotFoundError,
    PreconditionFailed,
    RemoteError,
    StorageFull,
    TimedOut,
)
from .keys import normalize_key, normalize_prefix
from .local import INLINE_MAX, Entry, LocalTier, Refusal, Staged, local_etag
from .paths import data_dir as choose_data_dir
from .platform import default_shutdown_grace
from .remotes import ObjectInfo, PutData, PutMode, Remote, open_remote
from .remotes._base import (
    check_content_type,
    check_data,
    check_metadata,
    check_mode,
    refuse_conditional,
)
from .sync import Syncer

if TYPE_CHECKING:
    from .catalog import Catalog, Change
    from .fetch import FetchProgress
    from .memo import Memo, Strings
    from .persist import PersistedDir
    from .scratch import Scratch
    from .sqlite import SqliteStatus

__all__ = ["Hold", "HoldStatus", "HydrateReport", "Progress", "open"]

_T = TypeVar("_T")
_E = TypeVar("_E")

log = logging.getLogger("cargohold")
_embedded_warned = False
#: Most keys whose "served unchecked" warning a Hold remembers (see Hold._warn_stale).
STALE_WARNED_MAX = 256

#: The conveniences of :class:`Hold` that a feature module provides (see :func:`provide`).
Feature = Literal["fetch", "memo", "memoize", "persist_dir", "scratch", "sqlite", "sqlite_status"]
#: Filled by the feature modules as they are imported (``cargohold/__init__.py`` imports
#: them all): the features are built on the Hold, so this module never imports them.
_features: dict[str, Callable[..., Any]] = {}


def provide(feature: Feature, entry: Callable[..., Any]) -> None:
    """Make ``entry`` what the Hold's ``feature`` convenience calls, as ``entry(hold,
    *args, **options)`` once the Hold is checked open (``hold.memo(...)`` calls the
    ``memo`` entry). Called by each feature module when it is imported; the last call
    for a feature wins."""
    _features[feature] = entry


def _feature(feature: Feature) -> Callable[..., Any]:
    entry = _features.get(feature)
    if entry is None:  # only when this module was loaded without the cargohold package
        raise ConfigError(
            f"Hold.{feature}() is provided by a cargohold module that was not imported",
            hint="import cargohold (it imports every feature)",
        )
    return entry


class FlushSource(Protocol):
    """Something whose writes every flush of a Hold includes (see
    :meth:`Hold.include_in_flush`): ``persist_dir``'s folders, replicated SQLite databases."""

    def scan(self) -> object:
        """Write what changed since the last scan into the Hold."""

    def stop(self, timeout: float) -> object:
        """Stop for good, with a last scan, within ``timeout`` seconds (what is left of
        the close's budget): it must not wait on the remote past that."""


@dataclass(frozen=True, slots=True)
class SyncActivity:
    """What this process's syncer has done since the Hold opened (a snapshot; see
    :meth:`Hold.sync_activity`). Times are Unix seconds."""

    synced_objects: int
    synced_bytes: int
    #: Failed sync attempts in all, and the latest of them as (time, message), oldest first.
    error_count: int
    errors: tuple[tuple[float, str], ...]
    #: The latest batches sent, as (time, objects, bytes), oldest first.
    history: tuple[tuple[float, int, int], ...]


@dataclass(frozen=True, slots=True)
class HoldStatus:
    """A snapshot of a Hold's state. ``loss_window`` is the age in seconds of the oldest
    write not yet on the remote: what losing this disk right now would lose."""

    remote: str
    embedded_default: bool
    pending_count: int
    pending_bytes: int
    loss_window: float
    oldest_pending: datetime | None
    last_sync: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    local_bytes: int
    local_max_bytes: int
    syncing: bool
    refused: dict[str, str]
    remote_stats: Mapping[str, object]
    #: About how long sending everything pending would take at the measured drain rate
    #: (None before the first batch was measured), and the most ``put`` lets it reach
    #: (``drain_fraction`` of ``shutdown_grace``; None: no such limit).
    drain_seconds: float | None = None
    drain_limit: float | None = None
    drain_objects_per_s: float | None = None
    drain_bytes_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a ``hydrate`` has come."""

    done: int
    total: int
    bytes: int


@dataclass(frozen=True, slots=True)
class HydrateReport:
    objects: int
    bytes: int
    skipped: int
    failed: dict[str, str]
    seconds: float


def _when(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


class Hold:
    """Local-disk speed, remote durability. Build with :func:`cargohold.open`.

    Every method is safe from many threads; several processes may open the same data
    directory (one of them syncs at a time). Keys follow :mod:`cargohold.keys`.
    """

    def __init__(
        self,
        *,
        remote: Remote,
        local_dir: Path,
        settings: Settings,
        embedded_default: bool = False,
        catalog: Catalog | None = None,
        syncing: bool = True,
        _log_level_applied: bool = False,
    ) -> None:
        if not _log_level_applied:  # open() applies it before anything that may log
            apply_log_level(settings)
        self.settings = settings
        self.catalog = catalog
        self.remote = remote
        self.embedded_default = embedded_default
        if settings.shutdown_grace is None:  # unset: what the detected host allows
            # (A host may announce a drain of days; the setting's range stops at one.)
            settings = settings.replace(shutdown_grace=min(default_shutdown_grace(), 86_400.0))
            self.settings = settings
        self.shutdown_grace: float = settings.shutdown_grace  # type: ignore[assignment]
        if settings.local_max_bytes < settings.max_pending_bytes:
            raise ConfigError(
                f"local_max_bytes ({settings.local_max_bytes}) is below max_pending_bytes "
                f"({settings.max_pending_bytes}): unsynced writes could never fit",
                hint="raise CARGOHOLD_LOCAL_MAX_BYTES or lower CARGOHOLD_MAX_PENDING_BYTES",
            )
        self.local = LocalTier(local_dir, fsync=settings.fsync)
        try:
            self.local.bind_remote(remote.url)
        except BaseException:
            self.local.close()
            raise
        self.syncer = Syncer(
            self.local,
            remote,
            max_bytes=settings.local_max_bytes,
            concurrency=settings.sync_concurrency,
            batch_size=settings.sync_batch,
            resend_after=settings.resend_after,
            sync_delay=settings.sync_delay,
            catalog=catalog,
            request_timeout=settings.request_timeout,
        )
        self._closed = False
        #: close() has begun: new writes are refused, and one that got past that check
        #: before it is acknowledged only once on the remote (close's flush may be over).
        self._closing = False
        self._flights: dict[str, threading.Lock] = {}
        self._flights_lock = threading.Lock()
        #: Conditional writes and deletes of one key, one at a time in this process (see
        #: delete(if_match=...)).
        self._conditional = KeyedLocks()
        self._stale_warned: dict[str, float] = {}
        self.reads = 0  # get/open/path calls, for the hit ratio in metrics
        #: Deletes this Hold has seen (its own, and other instances' through the catalog):
        #: caches of what is stored (the generation cache's hot entries) compare it to
        #: notice one without a lookup per read.
        self.deletions = 0
        self.read_throughs = 0  # of which the local tier did not have the object
        self._persisted: list[FlushSource] = []  # see include_in_flush
        #: The features' per-Hold state, by its class (see extension).
        self._extensions: dict[type, object] = {}
        self._extensions_lock = threading.RLock()  # a kind() may ask for another kind
        #: The local tier seen alone, for features that keep a cache of their own in it.
        self.local_only = LocalOnly(self.local, max_bytes=settings.local_max_bytes)
        #: What features give up when this Hold stops gracefully (see at_stop).
        self._stop_hooks: dict[object, Callable[[], None]] = {}
        # Re-entrant: the app's own signal handler (handed the signal back on the main
        # thread, between two bytecodes) may close() the Hold while that thread is inside
        # at_stop() or a cancel().
        self._stop_hooks_lock = threading.RLock()
        self._stopped = False
        #: The signal stop (see _shutdown.current_stop) that set _stopped; None: close().
        self._stopped_by: int | None = None
        if syncing:
            self.syncer.start()
        if catalog is not None:
            catalog.listen(self._on_change, on_gap=self._on_notice_gap)
        #: Stops the remote's change feed, when there is one and no catalog (whose notices
        #: say the same): another instance's write then drops a stale copy at once.
        self._unfollow = None if catalog is not None else self._follow()
        _shutdown.register(self, handlers=settings.signal_handlers)
        self._forks = _fork.generation
        on_fork(self._after_fork)
        if self.shutdown_grace == 0 and not embedded_default:
            log.warning(
                "cargohold: shutdown_grace is 0 (the host gives no time between SIGTERM and "
                "SIGKILL, as on Railway by default): a write is lost with this disk until it "
                "syncs (status().loss_window says how long that is). Pass durable=True for "
                "writes that must not be lost, or give the service a grace period."
            )

    def _after_fork(self) -> None:
        """In a child after fork(): locks another parent thread may have held."""
        self._flights = {}
        self._flights_lock = threading.Lock()
        self._extensions_lock = threading.RLock()  # a kind() may ask for another kind
        # The parent's leases are the parent's: the child must not give them up.
        self._stop_hooks = {}
        self._stop_hooks_lock = threading.RLock()
        self._stopped = False  # the parent's stop is not the child's (_shutdown forgets it too)
        self._stopped_by = None

    def _resume_after_fork(self) -> None:
        """The first use in a forked child: start the threads the parent had (never in
        the fork hook itself, see :mod:`cargohold._fork`)."""
        self._forks = _fork.generation
        _shutdown.resume()
        self.syncer.resume()
        if self.catalog is not None:
            self.catalog.resume()
        elif self._unfollow is not None:  # the feed's thread stayed in the parent
            self._unfollow = self._follow()

    # -- writes -----------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: PutData,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        durable: bool = False,
        mode: PutMode = "overwrite",
        if_match: str | None = None,
        transfer: Transfer = "copy",
    ) -> ObjectInfo:
        """Store ``data`` (bytes, a binary file object or a Path) under ``key``.

        Returns once the local tier and its journal have it: a process crash (even
        SIGKILL) after this returns loses nothing, and the syncer puts it on the remote
        in the background. Until the remote has the bytes, the returned etag is a local
        one (``L<version>.<time>``, see :func:`cargohold.local.local_etag`), which
        ``if_match`` accepts while the key is unchanged; with ``durable=True`` it is the
        remote's own (unless the key was written again meanwhile).

        Once ``close()`` has begun, puts are refused (HoldClosed), and one that was
        already under way returns only once the remote has it: close's flush may be over.
        Once a stop signal (SIGTERM, SIGINT) has come, to this process or to one it was
        forked from, every put is durable: the process may die by the default action
        right after its shutdown flush. A put waits, holding
        no lock, while what is pending would take longer than ``drain_fraction`` of
        ``shutdown_grace`` to send at the measured rate (see ``_make_room``).

        ``durable=True`` returns only once the remote has the bytes (write-through); if the
        remote cannot be reached in ``request_timeout + retry_timeout`` seconds it raises
        TimedOut, and the write stays journaled for the syncer.
        ``mode="create"`` (fail with AlreadyExists if the key exists) and ``if_match=etag``
        (fail with PreconditionFailed unless the remote object still has that etag) are
        enforced by the remote itself, so they are write-through too; a remote that cannot
        enforce them (``Remote.conditional_writes`` False) refuses them with ConfigError.

        ``transfer="move"`` (``data`` a Path) gives the file to the Hold: on return it is
        gone from where it was, and if the put raises it stays there. A large file on the
        data directory's disk with no other hard link becomes the local tier's file
        without a copy (build outputs, downloads); any other is copied, then removed.
        ``transfer="copy"`` (the default) leaves the file as it was.
        """
        self._check_writable()
        key = normalize_key(key)
        source = check_data(data)
        given = _given_file(transfer, source)  # the Path a move takes, else None
        mode = check_mode(mode, if_match)
        meta = check_metadata(metadata)
        ctype = check_content_type(content_type, key)
        if mode == "create" or if_match is not None:
            if not self.remote.conditional_writes:
                raise refuse_conditional(self.remote, key)  # before anything is written
            with self._conditional.hold(key):
                info = self._put_conditional(
                    key, source, mode, if_match, meta, ctype, take=given is not None
                )
            if given is not None:
                _remove_given(given)
            return info
        staged = self.local.stage(key, source, take=given is not None)
        try:
            self._make_room(staged.size)
            entry = self.local.commit(staged, metadata=meta, content_type=ctype)
        except BaseException:
            self.local.discard(staged)
            raise
        if given is not None:  # the tier has the bytes (the same file, if linked)
            _remove_given(given)
        self._keep_bound(staged.size)
        self.syncer.wake()
        if not durable and not self._stopping() and not self._closing:
            return entry.info()
        # The syncer sends it: one sender per key keeps an older version from landing last.
        self._write_through(key)
        synced = self.local.entry(key)
        if synced is not None and synced.version == entry.version and synced.etag:
            return synced.info()
        return entry.info()  # written again meanwhile; this write did reach the remote

    def _put_conditional(
        self,
        key: str,
        source: Any,
        mode: PutMode,
        if_match: str | None,
        metadata: dict[str, str],
        content_type: str,
        *,
        take: bool = False,
    ) -> ObjectInfo:
        # A local change to this key that has not reached the remote would be compared
        # against (and later overwrite) the wrong version: send it first (ahead of the
        # backlog, if it has one).
        if self.local.pending_keys(before=time.time(), keys={key}):
            self.local.mark_urgent(key)
        self.syncer.flush(self.settings.backpressure_timeout, keys=[key])
        before = self.local.entry(key)
        if if_match is not None and if_match.startswith("L"):
            # A local etag (from a put the remote did not have yet): it stands for the
            # etag the remote gave those bytes, if the key has not changed since.
            if before is None or before.etag is None or local_etag(before) != if_match:
                raise PreconditionFailed(
                    f"{key!r} has changed since the write with etag {if_match}",
                    key=key,
                    remote=self.remote.url,
                )
            if_match = before.etag
        staged = self.local.stage(key, source, take=take)
        try:
            info = self.remote.put(
                key,
                self.local.staged_data(staged),
                mode=mode,
                if_match=if_match,
                metadata=metadata,
                content_type=content_type,
            )
        except BaseException:
            self.local.discard(staged)
            raise
        version = before.version if before is not None else None
        if version is None:
            self.local.commit_clean(staged, info)
        else:
            self.local.commit_clean(staged, info, only_version=version)
        return info

    def _drain_limit(self) -> float | None:
        """The most seconds of sending the backlog may amount to (None: no limit)."""
        fraction = self.settings.drain_fraction
        if fraction is None or not self.shutdown_grace:
            return None  # with no grace there is nothing to drain within
        return fraction * self.shutdown_grace

    def _over(self, count: int, size: int, added: int) -> str | None:
        """Why a write of ``added`` bytes on top of ``count`` pending changes of ``size``
        bytes must wait, or None if it may go."""
        cap = self.settings.max_pending_bytes
        if size + added > cap:
            return f"would pass max_pending_bytes ({cap})"
        limit = self._drain_limit()
        if limit is not None and not self.syncer.failing:
            # (While the remote fails, nothing drains within any grace: the backlog is
            # bounded by max_pending_bytes alone, and the loss window says what is at risk.)
            seconds = self.syncer.drain_seconds(count + 1, size + added)
            if seconds is None and count + 1 > _UNMEASURED_CHANGES * self.settings.sync_batch:
                # The remote's speed is not known yet (a new data directory): a writer at
                # full speed must not build a backlog before the first batch measures it.
                return "must wait for the first batch to measure the remote's speed"
            if seconds is not None and seconds > limit:
                return (
                    f"would take about {seconds:.1f}s to send at the measured rate, past "
                    f"{limit:.1f}s (drain_fraction of shutdown_grace)"
                )
        return None

    def _stopping(self) -> bool:
        """A stop signal came: the process may die by the default action at any moment
        after its shutdown flush (a server still draining), so writes are acknowledged only
        once the remote has them. Asked *after* a write is journaled: a write journaled
        before the signal's handler ran is covered by the shutdown flush, which starts
        later; one journaled after it sees the flag. A stop of a process this one was
        forked from counts too (a pool's workers: the platform signals only the parent,
        whose flush covers the children's writes journaled before it began; see
        ``_shutdown``)."""
        stopping = _shutdown.shutting_down() is not None or _shutdown.ancestor_stopped()
        return stopping and not _shutdown.in_flusher()

    def _make_room(self, size: int) -> None:
        """Back-pressure: keep unsynced bytes under ``max_pending_bytes``, and what is
        pending sendable within ``drain_fraction`` of the shutdown grace at the drain rate
        measured to this remote, so a graceful stop can ship all of it. Waits holding no
        lock (a signal handler never waits for this frame; see ``_shutdown``)."""
        # Before the remote's speed is measured (or learned from the syncing process),
        # decide on the exact totals: the estimate leaves out what other processes wrote
        # in the last second, and writers in several processes (a pool's workers) each
        # passing the allowance on it built N times that backlog (measured: 1,024
        # changes from two workers before the first batch of a loaded machine ended,
        # more than a 3 s grace drained). It lasts until the first batch ends.
        unmeasured = self._drain_limit() is not None and self.syncer.drain_seconds(1, 0) is None
        estimate = self.local.estimate()
        if (
            not unmeasured
            and self._over(estimate.pending_count, estimate.pending_bytes, size) is None
        ):
            return  # the common case, decided without a query
        deadline = time.monotonic() + self.settings.backpressure_timeout
        while True:
            totals = self.local.totals()
            why = self._over(totals.pending_count, totals.pending_bytes, size)
            if totals.pending_count == 0 or why is None:
                return
            if self.settings.backpressure == "raise" or time.monotonic() >= deadline:
                raise StorageFull(
                    f"{totals.pending_count} change(s) ({totals.pending_bytes} bytes) are "
                    f"waiting for {self.remote.url}, and this write of {size} bytes {why}",
                    hint=self.syncer.state.last_error
                    or "the remote is slower than the writes: write less often, give the "
                    "service a longer grace period (CARGOHOLD_SHUTDOWN_GRACE), or raise "
                    "CARGOHOLD_DRAIN_FRACTION / CARGOHOLD_MAX_PENDING_BYTES",
                )
            self.syncer.wake()
            self.syncer.wait_progress(min(1.0, max(0.0, deadline - time.monotonic())))

    def _keep_bound(self, added: int) -> None:
        """Evict at once when a write passes ``local_max_bytes`` (to 90%, so not every
        write pays), rather than waiting for the syncer's next round."""
        limit = self.settings.local_max_bytes
        if added and self.local.estimate().local_bytes > limit:
            self.local.evict(int(limit * 0.9))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove ``key``. It reads as missing at once; the syncer deletes it remotely
        (after a stop signal, it returns once the remote has). Idempotent: deleting a
        missing key is not an error.

        ``if_match=etag`` deletes only if the key still has that etag (the remote's, or
        the local one a put returned while the key is unchanged), else raises
        PreconditionFailed (a missing key too). This is a check then a local deletion
        under a lock per key that conditional puts and deletes of this Hold share: of
        racing conditional writers *in this process* exactly one wins.

        Between instances: the syncer's remote delete names the etag of the version this
        instance held (when it held a synced copy and the remote has
        ``conditional_deletes``), so a write another instance lands after that version
        survives, with or without ``if_match``. Otherwise the remote delete is
        unconditional: a write landing elsewhere before it reaches the remote is deleted.
        """
        self._check_writable()
        key = normalize_key(key)
        if if_match is None:
            self._delete(key)
            return
        with self._conditional.hold(key):
            if not self.has_etag(key, if_match):
                raise PreconditionFailed(
                    f"{key!r} no longer has etag {if_match} (changed or deleted)",
                    key=key,
                    remote=self.remote.url,
                )
            self._delete(key)

    def _delete(self, key: str) -> None:
        self.local.delete(key)
        self.deletions += 1
        self.syncer.wake()
        if self._stopping() or self._closing:
            self._write_through(key)

    def _write_through(self, key: str) -> None:
        """Return once the key's change just journaled is on the remote (TimedOut after
        the remote's own time for one request and its retries). The syncer sends it ahead
        of the backlog, in whichever process syncs: a write-through put waits for one
        round trip, not for every older change (a durable put behind a large backlog, a
        server's writes during a stop)."""
        self.local.mark_urgent(key)
        self.syncer.wake()
        self.syncer.flush(self.settings.request_timeout + self.settings.retry_timeout, keys=[key])

    def has_etag(self, key: str, etag: str) -> bool:
        """Whether ``key``'s current version has ``etag``: the remote's, or the local etag
        a ``put`` returned for the same write (see :func:`cargohold.local.local_etag`),
        which stays valid once the syncer has given the write the remote's etag. False
        for a missing key. The same comparison ``put(if_match=...)`` and
        ``delete(if_match=...)`` make."""
        self._check_open()
        key = normalize_key(key)
        try:
            current = self.head(key)
        except NotFoundError:
            return False
        if current.etag == etag:
            return True
        entry = self.local.entry(key)
        if entry is None or entry.deleted:
            return False
        # A local etag names this row's write: valid while the row is what is current
        # (not a stale copy the remote has since replaced).
        return (entry.pending or entry.etag == current.etag) and etag == local_etag(entry)

    # -- reads ------------------------------------------------------------------------

    def get(self, key: str, *, max_age: float | None = None) -> bytes:
        """The bytes of ``key``: from the local tier, else read through from the remote
        (and kept). A copy older than ``max_age`` seconds (default: the ``max_age``
        setting) is first checked against the remote's etag. Raises NotFoundError."""
        self._check_open()
        self.reads += 1
        # Fast path: an object held here and fresh. Looked up by the key as given: every
        # key in the index is valid and canonical, so a hit needs no key checks.
        found = self.local.lookup(key)
        if found is not None and self._fresh_enough(found[2], found[3], max_age):
            data = found[0] if found[0] is not None else self.local.read_blob(str(found[1]))
            if data is not None:
                self.local.touch(key, found[4])
                return data
        key = normalize_key(key)
        for _ in range(5):
            entry = self._current(key, max_age)
            data = self.local.data(entry)
            if data is not None:
                return data
        raise RemoteError(f"the local copy of {key!r} kept changing while it was read", key=key)

    def open(
        self, key: str, *, max_age: float | None = None, read_through: bool = True
    ) -> BinaryIO:
        """A binary, seekable file object to stream ``key`` from; it reads one version of
        the key even if the key is written again while it is open. Close it when done.

        With ``read_through=False``, an object the local tier has no fresh copy of is not
        downloaded: the file reads the remote's current version with ranged GETs, fetching
        only the bytes asked for (one GET per ``read(n)``), and keeps nothing locally. If
        that version is replaced while the file is open, a read raises RemoteError rather
        than return bytes of two versions.
        """
        if read_through:
            return self.open_with_info(key, max_age=max_age)[0]
        self._check_open()
        self.reads += 1
        return self._open_ranged(normalize_key(key), max_age)

    def open_with_info(
        self, key: str, *, max_age: float | None = None
    ) -> tuple[BinaryIO, ObjectInfo]:
        """``open(key)`` and the :class:`ObjectInfo` of exactly the version that file
        reads: its size, etag, metadata and content type describe those bytes, even if the
        key is written again or deleted meanwhile (``head`` then ``open`` could describe
        one version and read another). Close the file when done."""
        self._check_open()
        self.reads += 1
        key = normalize_key(key)
        for _ in range(5):
            entry = self._current(key, max_age)
            opened = self.local.open_entry(entry)
            if opened is not None:
                return opened, entry.info()
        raise RemoteError(f"the local copy of {key!r} kept changing while it was opened", key=key)

    def _open_ranged(self, key: str, max_age: float | None) -> BinaryIO:
        """The local copy if it is fresh enough, else ranged reads of the remote's."""
        for _ in range(5):
            entry = self.local.entry(key)
            if entry is None:
                break
            if entry.deleted:
                raise self._not_found(key)
            if self._fresh(entry, max_age, download=False) is not entry:
                break  # the remote has another version (or none): read the remote's
            opened = self.local.open_entry(entry)
            if opened is not None:
                return opened
        else:
            raise RemoteError(
                f"the local copy of {key!r} kept changing while it was opened", key=key
            )
        return RangedRemoteFile(self.remote, self.remote.head(key))  # type: ignore[return-value]

    def path(self, key: str, *, max_age: float | None = None) -> Path:
        """A local file with the bytes of ``key``, named like the key's last segment, for
        libraries that want a path. Treat it as read-only; it stays until the key is
        written again, deleted or evicted, so use it soon (or copy it)."""
        self._check_open()
        self.reads += 1
        key = normalize_key(key)
        for _ in range(5):
            self._current(key, max_age)
            path = self.local.path(key)
            if path is not None:
                return path
        raise RemoteError(f"the local copy of {key!r} kept changing", key=key)

    def head(self, key: str, *, max_age: float | None = None) -> ObjectInfo:
        """Size, etag, metadata, content type and time of ``key``, without its bytes."""
        self._check_open()
        key = normalize_key(key)
        entry = self.local.entry(key)
        if entry is not None and entry.deleted:
            raise self._not_found(key)
        if entry is None:
            return self.remote.head(key)
        return self._fresh(entry, max_age, download=False).info()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix``: the remote's listing with this Hold's unsynced writes
        and deletions applied, each key once. Keys are in the remote's order; a key only
        written here goes before the first remote key above it in byte order (S3's order;
        a remote that lists otherwise, as SeaweedFS lists ``a/b`` before ``a-c``, still
        gets every key exactly once)."""
        self._check_open()
        prefix = normalize_prefix(prefix)
        pending = {e.key: e for e in self.local.entries(prefix, pending_only=True)}
        added = sorted(
            (k for k, e in pending.items() if not e.deleted), key=str.encode, reverse=True
        )
        # Pending keys already given (or, for a deletion, already hidden): the remote's
        # order need not be byte order, so a key may come up again after its turn.
        done: set[str] = set()
        for info in self._remote_listing(prefix):
            while added and added[-1].encode() < info.key.encode():
                key = added.pop()
                if key not in done:
                    done.add(key)
                    yield pending[key].info()
            entry = pending.get(info.key)
            if entry is None:
                yield info
            elif info.key not in done:
                done.add(info.key)
                if not entry.deleted:
                    yield entry.info()
        for key in reversed(added):
            if key not in done:
                yield pending[key].info()

    def _remote_listing(self, prefix: str) -> Iterator[ObjectInfo]:
        """The remote's objects under ``prefix``: from the catalog's index when there is one
        and it answers, else (or from where it stopped answering) from the remote."""
        last: str | None = None
        if self.catalog is not None and self.catalog.available:
            try:
                for info in self.catalog.objects(prefix):
                    last = info.key
                    yield info
                return
            except CatalogUnavailable:
                pass  # warned once by the catalog; carry on from the remote
        for info in self.remote.list(prefix):
            if last is None or info.key.encode() > last.encode():
                yield info

    def _follow(self) -> Callable[[], None] | None:
        return self.remote.follow_changes(self._changed, self._on_notice_gap)

    def _on_change(self, change: Change) -> None:
        self._changed(change.key, change.etag)

    def _changed(self, key: str, etag: str | None) -> None:
        """Another instance synced a write of ``key`` (``etag`` None: a delete; ``""``: a
        change of unknown etag): drop a stale local copy now, rather than after
        ``max_age``. (From the catalog's or the remote's feed thread.)"""
        if self._closed:
            return
        if etag is None:
            self.deletions += 1
        with contextlib.suppress(HoldClosed):  # closed meanwhile
            entry = self.local.entry(key)
            if entry is not None and not entry.pending and entry.etag != etag:
                self.local.forget(key, entry.version)

    def _on_notice_gap(self) -> None:
        """The catalog's change notices were not heard for a while: any cached copy may
        be stale, so each is checked against the remote (a HEAD) before it is next served,
        and in-memory tables of entries are dropped as after a delete."""
        if self._closed:
            return
        with contextlib.suppress(CargoholdError):
            count = self.local.expire_validations()
            log.info(
                "cargohold: change notices may have been missed; %d cached copies will be "
                "checked against the remote before they are served again",
                count,
            )
        self.deletions += 1

    def _current(self, key: str, max_age: float | None) -> Entry:
        """The local row for ``key``, fresh enough, reading through on a miss."""
        entry = self.local.entry(key)
        if entry is None:
            return self._read_through(key)
        if entry.deleted:
            raise self._not_found(key)
        return self._fresh(entry, max_age, download=True)

    def _fresh_enough(
        self, dirty_since: float | None, validated: float | None, max_age: float | None
    ) -> bool:
        """A local change is always current; a copy of the remote's, for ``max_age``."""
        if dirty_since is not None:
            return True
        limit = self.settings.max_age if max_age is None else max_age
        return math.isinf(limit) or (validated is not None and time.time() - validated <= limit)

    def _fresh(self, entry: Entry, max_age: float | None, *, download: bool) -> Entry:
        if self._fresh_enough(entry.dirty_since, entry.validated, max_age):
            return entry
        try:
            info = self.remote.head(entry.key)
        except NotFoundError:
            if self.local.forget(entry.key, entry.version):
                raise self._not_found(entry.key) from None
            return self._current(entry.key, max_age)
        except CargoholdError as exc:
            self._warn_stale(entry.key, exc)
            return entry
        if info.etag == entry.etag:
            self.local.set_validated(entry.key, entry.version, info.etag)
            return entry
        if not download:
            return Entry(**{**_fields(entry), "size": info.size, "etag": info.etag})
        return self._read_through(entry.key, replacing=entry.version)

    def _read_through(self, key: str, *, replacing: int | None = None) -> Entry:
        self.read_throughs += 1
        with self._flight(key):
            entry = self.local.entry(key)
            if entry is not None and entry.version != replacing:
                if entry.deleted:
                    raise self._not_found(key)
                return entry  # another thread fetched (or wrote) it meanwhile
            tmp = self.local.tmp / f"fetch-{uuid.uuid4().hex}"
            [result] = self.remote.download_many([(key, tmp)], concurrency=1)
            if isinstance(result, CargoholdError):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise result
            staged = self.local.stage_file(key, tmp)
            stored = self.local.commit_clean(staged, result, only_version=replacing)
            if stored is not None:
                self._keep_bound(stored.size)
                return stored
        # A local write of this key landed while we downloaded: it is newer.
        return self._current(key, math.inf)

    @contextlib.contextmanager
    def _flight(self, key: str) -> Iterator[None]:
        """One read-through per key at a time in this process."""
        with self._flights_lock:
            lock = self._flights.setdefault(key, threading.Lock())
        with lock:
            yield
        with self._flights_lock:
            if not lock.locked():
                self._flights.pop(key, None)

    def _warn_stale(self, key: str, exc: CargoholdError) -> None:
        """Warn once a minute per key. The table is kept in the order of its warnings
        (a key warned again moves to the end) and cut to its newest half past
        STALE_WARNED_MAX keys: a key forgotten early can only warn once more. No lock:
        each step is one dictionary operation, atomic under the GIL, and a copy made
        while another thread warns at worst forgets that one warning."""
        now = time.monotonic()
        warned = self._stale_warned
        if now - warned.get(key, -math.inf) <= 60:
            return
        warned.pop(key, None)
        warned[key] = now
        if len(warned) > STALE_WARNED_MAX:
            self._stale_warned = dict(list(warned.items())[-(STALE_WARNED_MAX // 2) :])
        log.warning("cargohold: serving the local copy of %r unchecked: %s", key, exc)

    def _not_found(self, key: str) -> NotFoundError:
        return NotFoundError(
            f"no object {key!r} in {self.remote.url}", key=key, remote=self.remote.url
        )

    # -- sync -------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Return once the remote has every write and delete made before this call.

        Raises TimedOut after ``timeout`` seconds (the writes stay journaled), or the
        error of a write the remote refuses for good (an invalid key for that remote).
        """
        self._check_open()
        for persisted in self._persisted:
            persisted.scan()
        self.syncer.flush(timeout)

    def refused(self) -> dict[str, Refusal]:
        """Writes and deletes the remote refused for good (a key or metadata it cannot
        store, a local file removed by hand), by key: set aside so that they block neither
        ``flush()`` for the other keys nor readiness. Each stays aside until the key is
        written again, or :meth:`retry_refused` / :meth:`drop_refused` end it. Kept in the
        data directory: every process sharing it sees them, and they outlast a restart."""
        self._check_open()
        return self.local.refused()

    def retry_refused(self, keys: Iterable[str] | None = None) -> builtins.list[str]:
        """Send the refused changes of ``keys`` (all, if None) again, for when the remote
        can take them now (a limit raised, a bucket policy fixed). Returns the keys retried;
        a change refused again is set aside again."""
        self._check_open()
        retried = self.local.clear_refused(None if keys is None else _keys(keys))
        if retried:
            self.syncer.wake()
        return retried

    def drop_refused(self, keys: Iterable[str] | None = None) -> builtins.list[str]:
        """Give up the refused changes of ``keys`` (all, if None): each key reads as the
        remote has it again (a refused delete is undone, a refused write discarded). A key
        written again since its refusal keeps that write. Returns the keys dropped."""
        self._check_open()
        dropped = self.local.drop_refused(None if keys is None else _keys(keys))
        for key in dropped:
            log.warning("cargohold: dropped the refused change of %r", key)
        return dropped

    def hydrate(
        self,
        prefix: str = "",
        *,
        progress: Callable[[Progress], None] | None = None,
        concurrency: int | None = None,
    ) -> HydrateReport:
        """Copy every object under ``prefix`` from the remote into the local tier now,
        instead of on first read. Objects already held at the remote's version, and keys
        with unsynced local writes, are skipped. ``progress`` is called after each batch
        (``total`` grows while the listing is still being read).

        The listing is read on a thread of its own while batches are fetched, small
        objects are read into memory and stored a batch per transaction, large ones stream
        to files. Objects that fail are reported in ``failed``; the rest still land.
        """
        self._check_open()
        prefix = normalize_prefix(prefix)
        started = time.monotonic()
        held = {e.key: (e.pending, e.etag) for e in self.local.entries(prefix)}
        lanes = concurrency or self.settings.sync_concurrency
        listed: queue.Queue[ObjectInfo | BaseException | None] = queue.Queue(maxsize=10_000)

        def read_listing() -> None:
            try:
                for info in self.remote.list(prefix):
                    listed.put(info)
                listed.put(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                listed.put(exc)

        start_thread(read_listing, name="cargohold-hydrate-list")
        done = total_bytes = skipped = seen = 0
        failed: dict[str, str] = {}
        finished = False
        while not finished:
            batch: list[ObjectInfo] = []
            while len(batch) < lanes * 8:
                item = listed.get() if not batch else _next_or_none(listed)
                if item is _EMPTY:
                    break  # fetch what we have while the listing catches up
                if item is None:
                    finished = True
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, ObjectInfo)
                seen += 1
                pending, etag = held.get(item.key, (False, None))
                if pending or etag == item.etag:
                    skipped += 1
                else:
                    batch.append(item)
            small = [info.key for info in batch if info.size <= INLINE_MAX]
            large = [info.key for info in batch if info.size > INLINE_MAX]
            for keys, fetch in ((small, self._hydrate_small), (large, self._hydrate_large)):
                if not keys:
                    continue
                stored, errors = fetch(keys, lanes)
                done += len(stored)
                total_bytes += sum(entry.size for entry in stored)
                failed.update(errors)
            self._keep_bound(total_bytes)
            if progress is not None and batch:
                progress(Progress(done=done + len(failed), total=seen - skipped, bytes=total_bytes))
        return HydrateReport(
            objects=done,
            bytes=total_bytes,
            skipped=skipped,
            failed=failed,
            seconds=time.monotonic() - started,
        )

    def _hydrate_small(
        self, keys: Sequence[str], concurrency: int
    ) -> tuple[Sequence[Staged], dict[str, str]]:
        errors: dict[str, str] = {}
        pairs = []
        for key, result in zip(
            keys, self.remote.fetch_many(keys, concurrency=concurrency), strict=True
        ):
            if isinstance(result, CargoholdError):
                errors[key] = str(result)
            else:
                info, data = result
                pairs.append((self.local.stage(key, data), info))
        return self.local.commit_clean_many(pairs), errors

    def _hydrate_large(
        self, keys: Sequence[str], concurrency: int
    ) -> tuple[Sequence[Staged], dict[str, str]]:
        errors: dict[str, str] = {}
        items = [(key, self.local.tmp / f"hydrate-{uuid.uuid4().hex}") for key in keys]
        pairs = []
        for (key, tmp), result in zip(
            items, self.remote.download_many(items, concurrency=concurrency), strict=True
        ):
            if isinstance(result, CargoholdError):
                errors[key] = str(result)
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            else:
                pairs.append((self.local.stage_file(key, tmp), result))
        return self.local.commit_clean_many(pairs), errors

    def status(self) -> HoldStatus:
        """Pending writes, the loss window, the last sync and error, and local bytes."""
        totals = self.local.totals()
        state = self.syncer.state
        last_success, last_error, last_error_at = (
            state.last_success,
            state.last_error,
            state.last_error_at,
        )
        if last_success is None or last_error is None:
            # Not (yet) the syncing process: what the one that synced last recorded.
            recorded_success, recorded_error, recorded_error_at = self.syncer.recorded()
            last_success = last_success or recorded_success
            if last_error is None:
                last_error, last_error_at = recorded_error, recorded_error_at
        return HoldStatus(
            remote=self.remote.url,
            embedded_default=self.embedded_default,
            pending_count=totals.pending_count,
            pending_bytes=totals.pending_bytes,
            loss_window=0.0
            if totals.oldest_pending is None
            else max(0.0, time.time() - totals.oldest_pending),
            oldest_pending=_when(totals.oldest_pending),
            last_sync=_when(last_success),
            last_error=last_error,
            last_error_at=_when(last_error_at),
            local_bytes=totals.local_bytes,
            local_max_bytes=self.settings.local_max_bytes,
            syncing=state.active,
            refused={key: r.reason for key, r in self.local.refused().items()},
            remote_stats=dict(self.remote.stats()),
            drain_seconds=self.syncer.drain_seconds(totals.pending_count, totals.pending_bytes),
            drain_limit=self._drain_limit(),
            drain_objects_per_s=state.drain_objects_per_s,
            drain_bytes_per_s=state.drain_bytes_per_s,
        )

    # -- the features' conveniences (each provided by its module, see provide) --------

    def persist_dir(
        self, folder: str | Path, *, prefix: str | None = None, interval: float | None = None
    ) -> PersistedDir:
        """Keep ``folder`` in the remote under ``prefix`` (default: the folder's name).

        Restores it now (files the remote has and the folder lacks or has older), then
        scans every ``interval`` seconds (the ``persist_interval`` setting) and on
        ``flush()``/``close()``/shutdown, pushing added and changed files (compared by
        content digest) and deleting removed ones. Returns the :class:`PersistedDir`.
        See :mod:`cargohold.persist`.
        """
        self._check_open()
        return cast(
            "PersistedDir", _feature("persist_dir")(self, folder, prefix=prefix, interval=interval)
        )

    def fetch(
        self,
        url: str,
        *,
        sha256: str | None = None,
        max_age: float | None = None,
        progress: Callable[[FetchProgress], None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Path:
        """A local file with the bytes at ``url`` (http or https), named like the URL's
        last segment: downloaded once, then served from the local tier.

        One download per URL across threads, processes and (with ``fetch_to_remote``)
        instances sharing the remote; verified against ``sha256`` when given
        (IntegrityError, nothing cached, on a mismatch); resumed with Range after an
        interruption; revalidated with ETag / Last-Modified once older than ``max_age``
        seconds (default: the ``fetch_max_age`` setting); the stale copy is served, with
        a warning, while the origin is down. ``headers`` go with each request to the
        origin (credentials, say). See :mod:`cargohold.fetch`.
        """
        self._check_open()
        return cast(
            Path,
            _feature("fetch")(
                self, url, sha256=sha256, max_age=max_age, progress=progress, headers=headers
            ),
        )

    def scratch(self, request_id: str | None = None, *, quota: int | str | None = None) -> Scratch:
        """A per-request workspace, ``with hold.scratch(request_id) as work: ...``.

        A new directory (time and request id in its name) removed on exit whatever
        happens; a byte ``quota`` (default: the ``scratch_quota`` setting) enforced on the
        workspace's own writers; on an exception, a debug bundle (files, traceback,
        the request's record with secrets redacted) uploaded under
        ``debug/<date>/<request id>/`` and named on the exception. One structured log
        record per request. See :mod:`cargohold.scratch`.
        """
        self._check_open()
        return cast("Scratch", _feature("scratch")(self, request_id, quota=quota))

    def memo(
        self,
        namespace: str,
        *,
        version: str = "1",
        ttl: float | None = None,
        max_bytes: int | None = None,
        seed_dir: str | Path | None = None,
        lease_ttl: float | None = None,
        strings: Strings = "no-paths",
        path_grace: float | None = None,
    ) -> Memo:
        """The generation cache for ``namespace`` at ``version`` (bump it to invalidate).

        ``ttl`` (seconds) and ``max_bytes`` bound the namespace; ``seed_dir`` is a
        read-only folder of entries committed with the app, consulted first (default: the
        ``memo_seed_dir`` setting); ``lease_ttl`` is how long a dead builder's lease keeps
        others waiting (default: the ``lease_ttl`` setting, ``CARGOHOLD_LEASE_TTL``; a
        builder that stops gracefully gives its lease up at once). ``strings="as-text"``
        stores a str result as text even when it names an existing file (by default that
        is refused: return a Path); ``path_grace`` is how many seconds a returned path
        stays valid at least (default 600). See :mod:`cargohold.memo`.
        """
        self._check_open()
        return cast(
            "Memo",
            _feature("memo")(
                self,
                namespace,
                version=version,
                ttl=ttl,
                max_bytes=max_bytes,
                seed_dir=seed_dir,
                lease_ttl=lease_ttl,
                strings=strings,
                path_grace=path_grace,
            ),
        )

    def memoize(
        self, namespace: str | None = None, *, version: str = "1", **options: Any
    ) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
        """Decorate a function so each distinct set of arguments runs it once, across
        threads, processes and instances sharing the remote; hits return the stored
        result (a file result as a local ``Path``). Options as for :meth:`memo`;
        ``namespace`` defaults to the function's qualified name. The function writes its
        files into ``cargohold.memo.workdir()`` and returns their ``Path``. ``ignore=``
        names parameters left out of the inputs; ``progress=`` names one that is told how
        the call goes as ``arg(fraction, desc=message)`` (a Gradio ``gr.Progress``
        default is found without naming it). See :func:`cargohold.memo.memoize`."""
        self._check_open()
        return cast(
            "Callable[[Callable[..., _T]], Callable[..., _T]]",
            _feature("memoize")(self, namespace, version=version, **options),
        )

    def sqlite(
        self,
        name: str,
        *,
        path: str | Path | None = None,
        wait: float | None = None,
        interval: float = 1.0,
        mode: Literal["write", "follow"] = "write",
    ) -> Path:
        """An SQLite database kept on the remote: open the returned path with ``sqlite3``
        (or anything built on it) as usual.

        If the file is missing (a new container), the remote's latest state is restored
        first. It is switched to WAL mode (ConfigError, with the reason, if it cannot be),
        and from then on every committed transaction is shipped within about
        ``interval`` seconds or the request budget's spacing
        (``sqlite_uploads_per_minute``), whichever is longer, by a thread of this Hold; :meth:`flush` returns once the
        remote has every transaction committed before it, and a graceful stop ships the
        last ones (writes wait meanwhile). One instance writes a name's history at a time:
        this waits up to ``wait`` seconds (default twice ``lease_ttl``) for another
        instance's lease, then raises TimedOut naming it. ``path`` defaults to
        ``<local dir>/sqlite/<name>``. ConflictError if the remote holds another database
        under ``name``; nothing on the remote is overwritten. ConfigError, before anything
        is written, for a writer on a remote without conditional writes (the fence needs
        them; a ``mode="follow"`` reader does not) or on a file system whose locks do not
        hold.

        ``mode="follow"``: a read-only follower. The remote's latest state is restored to
        ``path`` (NotFoundError if it has none) and replaced atomically, every
        ``interval`` seconds and at each :meth:`flush`, by the state its writer has
        shipped since; nothing is written to the remote and no lease is taken. Open it
        read-only; a connection keeps the state it opened. See :mod:`cargohold.sqlite`.
        """
        self._check_open()
        return cast(
            Path,
            _feature("sqlite")(self, name, path=path, wait=wait, interval=interval, mode=mode),
        )

    def sqlite_status(self, name: str) -> SqliteStatus:
        """How far replication of ``name`` (see :meth:`sqlite`) is behind: transactions
        committed here and not on the remote yet, and for how long."""
        self._check_open()
        return cast("SqliteStatus", _feature("sqlite_status")(self, name))

    # -- the extension point: what features keep on a Hold ----------------------------

    def extension(self, kind: type[_E]) -> _E:
        """The one instance of ``kind`` this Hold keeps for a feature (its per-Hold
        state), made as ``kind()`` on the first call: once, even when threads race.

        When the Hold closes, after its syncer has stopped, each instance that has a
        ``close()`` method has it called (an exception there is suppressed). A forked
        child keeps its parent's instances: a feature resets what a child must not share
        in its own fork hook (see :mod:`cargohold._fork`).
        """
        found = self._extensions.get(kind)
        if found is None:
            with self._extensions_lock:
                found = self._extensions.get(kind)
                if found is None:
                    found = self._extensions[kind] = kind()
        return cast(_E, found)

    def include_in_flush(self, source: FlushSource) -> None:
        """Make ``source``'s writes part of every flush of this Hold: :meth:`flush` and
        the shutdown flush call ``source.scan()`` first (on the flushing thread, so what
        it writes is in that flush), and :meth:`close` calls ``source.stop()`` (its last
        scan) before its own flush. For as long as the Hold is open."""
        self._check_open()
        self._persisted.append(source)

    @property
    def local_dir(self) -> Path:
        """The local tier's folder (inside the data directory). A feature may keep a
        folder of its own in it, named for the feature (``memo-files``, ``fetch-partial``):
        the local tier leaves other names alone, and a file there is on the local tier's
        file system (see :meth:`LocalOnly.keep <cargohold._local_only.LocalOnly.keep>`)."""
        return self.local.root

    def sync_activity(self) -> SyncActivity:
        """What this process's syncer has sent and which errors it met since the Hold
        opened (all zero in a process that does not sync): a snapshot, for dashboards
        and metrics. :meth:`status` has the rest."""
        state = self.syncer.state
        return SyncActivity(
            synced_objects=state.synced_objects,
            synced_bytes=state.synced_bytes,
            error_count=state.error_count,
            errors=tuple(state.errors),  # one C call: no thread runs in between
            history=tuple(state.history),
        )

    @property
    def remote_failing(self) -> bool:
        """True while this process's syncer backs off because the remote refused or missed
        its latest sends (until a batch goes through). Always False in a process that does
        not sync. For callers deciding whether a remote round trip is worth waiting for."""
        return self.syncer.failing

    def wait_for_sync(self, timeout: float) -> None:
        """Wake the syncer and return once it has finished a batch, or after ``timeout``
        seconds: to show a flush's progress (poll :meth:`status` between calls). Promises
        nothing about what was sent; :meth:`flush` does."""
        self._check_open()
        self.syncer.wake()
        self.syncer.wait_progress(timeout)

    def sync_paused(self) -> contextlib.AbstractContextManager[None]:
        """``with hold.sync_paused():`` sends nothing to the remote inside the block: writes
        are journaled as usual and sent after it. For measuring the local tier alone
        (``cargohold bench``)."""
        self._check_open()
        return self.syncer.paused()

    # -- lifecycle --------------------------------------------------------------------

    def at_stop(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once when this Hold stops gracefully, and return a function
        that cancels it (call that once the callback is no longer needed).

        A graceful stop is the shutdown flush on SIGTERM or SIGINT, or :meth:`close`:
        the callbacks run at its start, on a thread of their own beside the flush, and
        the stop waits for them at most as long as for the flush. Features give up what
        other instances may be waiting for there (single-flight leases). A callback
        registered once the stop has begun is called at once, on the caller's thread,
        until the stop is over: for ``close()`` that is never; for a stop signal the
        process outlives (the app ignored it or went on), once its flush has ended and
        its grace has passed; from then on callbacks are kept for the next stop.
        A forked child does not inherit its parent's callbacks. Exceptions are logged.
        """
        token = object()
        with self._stop_hooks_lock:
            if not self._in_stop():
                self._stop_hooks[token] = callback
                token_kept = True
            else:
                token_kept = False
        if not token_kept:
            _call_logged(callback)
            return _nothing

        def cancel() -> None:
            with self._stop_hooks_lock:
                self._stop_hooks.pop(token, None)

        return cancel

    def _in_stop(self) -> bool:
        """Whether at_stop callbacks run at once (see at_stop); under _stop_hooks_lock."""
        stop = self._stopped_by
        if self._stopped and stop is not None and not _shutdown.stop_under_way(stop):
            self._stopped = False  # a stop this process outlived: keep callbacks again
            self._stopped_by = None
        return self._stopped

    def _run_stop_hooks(self, *, signal_stop: int | None = None) -> threading.Thread | None:
        """Start the at_stop callbacks on a thread of their own (None: there are none).
        ``signal_stop``: the number of the signal stop this is for; None for close()."""
        with self._stop_hooks_lock:
            if not self._stopped or self._stopped_by is not None:
                # close() after a signal stop: stopped for good from now on.
                self._stopped_by = signal_stop
            self._stopped = True
            hooks = list(self._stop_hooks.values())
            self._stop_hooks.clear()
        if not hooks:
            return None

        def run() -> None:
            for hook in hooks:
                _call_logged(hook)

        return start_thread(run, name="cargohold-stop-hooks")

    def close(self, timeout: float | None = None, *, flush: bool = True) -> None:
        """Flush for up to ``timeout`` seconds (default ``shutdown_grace``), then stop.

        Writes that could not be flushed stay in the local journal (and are logged) and
        sync when a Hold next opens this data directory. ``flush=False`` stops without
        waiting for them (for short-lived readers such as ``cargohold stats``). Safe to
        call twice.
        """
        if self._closed:
            return
        # After a stop signal, what is left of the grace counted from the signal.
        budget = _shutdown.remaining(self.shutdown_grace) if timeout is None else timeout
        deadline = time.monotonic() + budget
        hooks = self._run_stop_hooks()  # leases given up at once, beside the flush
        for persisted in self._persisted:
            persisted.stop(max(0.0, deadline - time.monotonic()))  # its last scan writes
        # Before the flush starts: a write journaled after this is not acknowledged until
        # the remote has it (see put), one journaled before is the flush's to send.
        self._closing = True
        self.syncer.close(max(0.0, deadline - time.monotonic()), flush=flush)
        if flush:
            self._log_unsent()
        if hooks is not None:
            # They use the remote, which is closed below.
            hooks.join(max(0.0, deadline - time.monotonic()))
            if hooks.is_alive():
                log.warning("cargohold: giving up leases at close did not finish in time")
        self._closed = True
        for extension in builtins.list(self._extensions.values()):
            closer = getattr(extension, "close", None)
            if callable(closer):
                with contextlib.suppress(Exception):
                    closer()
        if self.catalog is not None:
            self.catalog.close()  # first: its listener thread reads the local tier
        if self._unfollow is not None:
            self._unfollow()  # so does the remote's feed
        self.local.close()
        self.remote.close()

    def _shutdown_flush(self, budget: float) -> None:
        """Called on SIGTERM/SIGINT: flush within ``budget`` seconds, log what remains."""
        if self._closed:
            return
        deadline = time.monotonic() + budget
        # Leases given up at once, beside the flush.
        hooks = self._run_stop_hooks(signal_stop=_shutdown.current_stop())
        try:
            for persisted in self._persisted:
                persisted.scan()
            self.syncer.flush(budget)
            log.info("cargohold: flushed to %s before shutdown", self.remote.url)
        except HoldClosed:
            return  # close() took over meanwhile (the app's, or the exit's): it logs what remains
        except (TimedOut, CargoholdError) as exc:
            try:
                status = self.status()
            except HoldClosed:
                return
            log.warning(
                "cargohold: %d write(s) (%d bytes) did not reach %s within %.1fs: %s. They "
                "are in the local journal at %s and sync when it is opened again.",
                status.pending_count,
                status.pending_bytes,
                self.remote.url,
                budget,
                exc,
                self.local.root,
            )
            self._log_unsent()
        finally:
            if hooks is not None:
                hooks.join(max(0.0, deadline - time.monotonic()))

    def _log_unsent(self) -> None:
        """After a flush that ran out of time: log by key what is not on the remote yet
        (the oldest first, at most _UNSENT_NAMED of them), so the operator knows which
        writes wait in the journal, not only how many."""
        try:
            pending = self.local.pending_keys(before=math.inf, limit=_UNSENT_NAMED + 1)
        except CargoholdError:
            return  # closed meanwhile (close() took over): it logs what remains
        if not pending:
            return
        names = ", ".join(key for key, _ in pending[:_UNSENT_NAMED])
        log.warning(
            "cargohold: not on %s yet: %s%s",
            self.remote.url,
            names,
            ", ..." if len(pending) > _UNSENT_NAMED else "",
        )

    def _check_writable(self) -> None:
        """Writes are refused once close() has begun (its flush covers only earlier ones)."""
        self._check_open()
        if self._closing:
            raise HoldClosed(
                f"this Hold on {self.remote.url} is closing",
                hint="write before close(), or open a new Hold with cargohold.open()",
            )

    def _check_open(self) -> None:
        if self._forks != _fork.generation:
            self._resume_after_fork()
        if self._closed:
            raise HoldClosed(
                f"this Hold on {self.remote.url} is closed",
                hint="open a new one with cargohold.open()",
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Hold {self.local.root} -> {self.remote.url}>"


#: How :meth:`Hold.put` takes a Path's bytes: ``copy`` leaves the file, ``move`` takes it.
Transfer = Literal["copy", "move"]


def _given_file(transfer: object, source: object) -> Path | None:
    """The file a put takes (moves), None for a copy; refuses what it cannot do."""
    if transfer == "copy":
        return None
    if transfer != "move":
        raise InvalidInput(f"put's transfer must be 'copy' or 'move', not {transfer!r}")
    if not isinstance(source, Path):
        raise InvalidInput(
            f"put(..., transfer='move') moves a file: pass a pathlib.Path, not "
            f"{type(source).__name__} (or leave transfer at 'copy')"
        )
    return source


def _remove_given(source: Path) -> None:
    """Remove a file a put has taken (``transfer="move"``); the write is committed, so a
    file that cannot be removed is only logged."""
    try:
        source.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cargohold: stored %s but could not remove it: %s", source, exc)


def _call_logged(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("cargohold: a stop callback failed")


def _nothing() -> None:
    pass


_EMPTY = object()
#: Batches' worth of changes that may be pending before any batch to this remote has been
#: measured (see Hold._over): one, which the first batch sends whole, so a stop signal
#: before any batch ended leaves one batch to send. (Two, counted per process, let two
#: pool workers pile up four batches, which a loaded machine did not send in a 3 s grace.)
_UNMEASURED_CHANGES = 1
#: How many keys a flush that ran out of time names in the log (see Hold._log_unsent).
_UNSENT_NAMED = 20


def _next_or_none(q: queue.Queue[Any]) -> Any:
    """The next listed item if one is ready, else ``_EMPTY`` (do not wait for it)."""
    try:
        return q.get_nowait()
    except queue.Empty:
        return _EMPTY


def _fields(entry: Entry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in entry.__slots__}


def open(
    remote: str | Remote | None = None,
    *,
    data_dir: str | Path | None = None,
    syncing: bool = True,
    **settings: Any,
) -> Hold:
    """Open a Hold. Settings come from arguments > ``CARGOHOLD_*`` variables > defaults.

    ``syncing=False`` opens a reader that never sends anything itself (a short command such
    as ``cargohold stats`` must not start sends it would cut off when it exits): its own
    writes are journaled and sent by whichever Hold syncs this data directory next, and
    ``flush()`` waits for that one.

    ``remote`` is a URL (``s3://bucket/prefix``, ``file:///mnt/volume``, ...) or a Remote,
    which then belongs to the Hold: ``close()`` closes it, and so does an open that fails.
    With none configured, the embedded default is used: a ``file`` remote inside the data
    directory. That keeps everything working with no server or credentials, but the
    remote then lives on the same disk as the app, which this logs once.
    """
    global _embedded_warned
    resolved = Settings.load(
        remote=remote if isinstance(remote, str) else None, data_dir=data_dir, **settings
    )
    apply_log_level(resolved)  # first: what follows may log
    root = choose_data_dir(resolved).path
    embedded = False
    if isinstance(remote, Remote):
        remote_obj = remote
    elif resolved.remote:
        remote_obj = open_remote(resolved.remote, settings=resolved)
    else:
        embedded = True
        remote_obj = open_remote((root / "remote").as_uri(), settings=resolved)
        if not _embedded_warned:
            _embedded_warned = True
            log.warning(
                "cargohold: no remote configured, so using the embedded default %s. It is on "
                "the same disk as the app and is lost with it: set CARGOHOLD_REMOTE to a "
                "bucket or volume for durability.",
                remote_obj.url,
            )
    catalog = None
    try:
        if resolved.catalog:
            try:
                from .catalog import Catalog
            except ImportError as exc:
                raise ConfigError(
                    "a catalog needs psycopg", hint="pip install 'cargohold[postgres]'"
                ) from exc
            catalog = Catalog(resolved.catalog, remote_obj)
        return Hold(
            remote=remote_obj,
            local_dir=root / "local",
            settings=resolved,
            embedded_default=embedded,
            catalog=catalog,
            syncing=syncing,
            _log_level_applied=True,
        )
    except BaseException:
        # The Hold would have owned both (its close() closes them): a failed set-up
        # closes them here, so no connection pool, event loop or thread outlives the error.
        if catalog is not None:
            with contextlib.suppress(Exception):
                catalog.close()
        with contextlib.suppress(Exception):
            remote_obj.close()
        raise


def _keys(keys: Iterable[str]) -> list[str]:
    """Keys named by a caller, checked and spelled as stored; a bare str is one key."""
    return [normalize_key(keys)] if isinstance(keys, str) else [normalize_key(k) for k in keys]
