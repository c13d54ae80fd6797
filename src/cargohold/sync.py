"""The syncer: drains the local tier's journal to the remote.

Written here because it is the core of the write-back promise. One thread per Hold; of
several processes sharing a data directory, the one holding ``sync.lock`` syncs and the
others stand by (and take over if it dies: the lock goes with the process).

- Batches: the changes a caller waits for first (a durable put, a write during a stop:
  ``LocalTier.mark_urgent``, in any process), then the oldest pending ones, up to
  ``batch_size`` at a time, uploaded with ``apply`` (``concurrency`` requests in flight).
- Wakes at once when this process writes, when ``flush()`` or ``close()`` asks, and at
  least every ``poll`` seconds for writes made by other processes. No sleep loops.
- Failures: retried with exponential backoff and full jitter (0.5 s doubling to 30 s). A
  change that can never succeed (the remote refuses its key or metadata) is set aside in
  the local tier's ``refused`` table, named by ``flush()`` once only such changes are left,
  and shown by ``status()`` in every process, instead of blocking everything behind it or
  counting as a failing remote. It stays aside until the key is written again, or the
  operator retries or drops it (``Hold.retry_refused`` / ``Hold.drop_refused``).
- No stale write lands last. A send that got no answer (the request timed out, or the
  process was killed mid-request) may still reach the remote later, and must not land
  after a newer version of the same key. So the syncer writes down, in the local tier's
  session record and before each batch leaves, which (key, version) pairs it is sending;
  an answered send is struck off. While a pair is on that list (for ``resend_after``
  seconds from its send), the same version may be sent again at once (the same bytes: a
  late landing of the first send changes nothing), but a newer version of that key waits.
  A syncer taking over from one that died reads the list and holds back exactly those
  keys' newer versions, so a sibling that stopped gracefully (nothing in flight) or one
  killed while idle delays nothing. A batch that took ``request_timeout`` or longer may
  have had an attempt time out and be retried inside the remote layer (the retry
  answered, the first attempt still on its way): its sends stay on the list too. (A session record of a version before this rule says
  only "not clean": then every change pending at the takeover waits, as before.)
- No delete removes a newer write. A deletion is sent conditional on the etag of the
  version this instance last saw (``delete(key, if_match=)``, where the remote enforces
  it): if another instance wrote the key since, the remote refuses it, the deletion counts
  as superseded (done, logged at INFO) and the newer write stays. Without a version seen
  here, or on a remote without conditional deletes, the delete is unconditional: the last
  writer wins.
- Outcomes are recorded in the local tier (the last success at most every 5 s, every
  error), so ``status()`` in a process that is not syncing still says how syncing goes.
- Batches gather: after new work wakes it, the syncer waits ``sync_delay`` seconds (a few
  hundredths) so a burst of writes goes up as one batch instead of one round trip, one
  journal read and one journal write per object. ``flush()`` and ``close()`` skip the wait.
- Housekeeping between batches: access times, eviction down to the byte bound, removal of
  files of replaced objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from . import errors as _errors
from ._fork import abandon, on_fork
from ._threads import start_thread
from .errors import (
    CargoholdError,
    CatalogUnavailable,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    PermissionDenied,
    PreconditionFailed,
    RemoteError,
    TimedOut,
)
from .local import Entry, LocalTier, Pending, Refusal
from .remotes import Delete, ObjectInfo, Remote

if TYPE_CHECKING:
    from .catalog import Catalog
from .remotes._base import PutRequest

__all__ = ["SyncState", "Syncer"]

log = logging.getLogger("cargohold.sync")

_BACKOFF_START = 0.5
_BACKOFF_MAX = 30.0


@dataclass
class SyncState:
    """What the syncer has done, for ``Hold.status()``."""

    active: bool = False  # this process holds the sync lock
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    synced_objects: int = 0
    synced_bytes: int = 0
    history: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=720))
    errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=20))
    error_count: int = 0
    #: The measured drain rate to this remote (see ``Syncer.drain_seconds``), or None
    #: before the first batch.
    drain_objects_per_s: float | None = None
    drain_bytes_per_s: float | None = None


#: Batches the drain rate is measured over (the latest; a batch weighs by its size).
_RATE_BATCHES = 32
#: The latest batches alone, whose rate wins when it is slower: a remote that turns slow
#: must shrink the backlog allowed within a few batches, not after 32 of them.
_RECENT_BATCHES = 4
#: How often flush() looks at the journal when another process syncs (its progress
#: cannot notify this one): short, since a put made during shutdown waits on it.
_FOREIGN_POLL = 0.05

#: Seconds the catalog's catch-up waits after a round in which the remote answered nothing.
CATALOG_RETRY_SECONDS = 30.0


def _rate_of(batches: Sequence[tuple[int, int, float]]) -> tuple[float, float]:
    """Seconds per object and per byte over ``batches`` of (objects, bytes, seconds)."""
    total_objects = sum(b[0] for b in batches)
    total_bytes = sum(b[1] for b in batches)
    total_seconds = sum(b[2] for b in batches)
    return total_seconds / max(1, total_objects), (
        total_seconds / total_bytes if total_bytes else 0.0
    )


class Syncer:
    """Drains ``local``'s journal into ``remote`` on a background thread."""

    def __init__(
        self,
        local: LocalTier,
        remote: Remote,
        *,
        max_bytes: int,
        concurrency: int = 32,
        batch_size: int = 256,
        poll: float = 1.0,
        resend_after: float = 15.0,
        sync_delay: float = 0.05,
        catalog: Catalog | None = None,
        request_timeout: float | None = None,
    ) -> None:
        self.local = local
        self.remote = remote
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll = poll
        self.resend_after = resend_after
        self.sync_delay = sync_delay
        self.catalog = catalog
        #: The remote's own timeout per attempt: a batch that took this long may have had
        #: an attempt time out and be retried by the remote layer (see _sync_batch).
        self.request_timeout = request_timeout
        self.state = SyncState()
        self._urgent = threading.Event()  # flush() or close(): no gathering delay
        # key -> (version, when sent) of sends that may still land (see the docstring)
        self._sending: dict[str, tuple[int, float]] = {}
        self._sending_recorded: dict[str, tuple[int, float]] | None = None
        self._held_back_before: float | None = None  # after an unclean legacy takeover
        self._held_back_until = 0.0
        self._success_recorded = 0.0
        self._batches = 0
        self._rate: deque[tuple[int, int, float]] = deque(maxlen=_RATE_BATCHES)
        self._seconds_per_object = 0.0  # 0: not measured yet
        self._seconds_per_byte = 0.0
        # (time.monotonic() at its start, objects, bytes) of the batch being sent, if any
        self._running: tuple[float, int, int] | None = None
        self._wake = threading.Event()  # new work, flush, close
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._rounds = 0  # batches finished, counted under _progress (see flush)
        self._lock = FileLock(str(local.root / "sync.lock"), is_singleton=False)
        self._thread: threading.Thread | None = None
        self._resume = False  # a forked child: start the thread on first use
        self._backoff = 0.0
        # A backlog of keys the catalog missed may have been left by an earlier session.
        self._catalog_behind = catalog is not None
        self._catalog_retry_at = 0.0  # time.monotonic() before which catch-up waits
        self._learn_rate()  # the last session's measure, until this one's first batch
        on_fork(self._after_fork)

    def _after_fork(self) -> None:
        """In a child after fork(): the parent's thread is gone and its sync.lock stays the
        parent's (the flock belongs to the shared open file: releasing it here would release
        it there). Fresh events, a lock file of its own, and a thread that stands by until
        it can take the lock, started by :meth:`resume` on first use (see
        :mod:`cargohold._fork`: never in the hook)."""
        running = self._thread is not None and not self._stop.is_set()
        abandon(self._lock)
        self._lock = FileLock(str(self.local.root / "sync.lock"), is_singleton=False)
        self._urgent, self._wake, self._stop = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self._progress = threading.Condition()
        self._thread = None
        self.state = SyncState(
            drain_objects_per_s=self.state.drain_objects_per_s,
            drain_bytes_per_s=self.state.drain_bytes_per_s,
        )
        self._sending, self._sending_recorded = {}, None
        self._held_back_before = None
        self._backoff = 0.0
        self._resume = running

    def resume(self) -> None:
        """In a child after fork(), on its first use of the Hold: start the thread the
        parent had."""
        if self._resume:
            self._resume = False
            self.start()

    # -- control ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = start_thread(self._run, name="cargohold-sync")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the syncer for the length of a ``with`` block (writes still journal and
        are sent afterwards): for benchmarks of the write path, and maintenance."""
        self._stop.set()
        self._urgent.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            yield
        finally:
            self._stop.clear()
            self._thread = None
            self.start()

    def wake(self) -> None:
        """New work: start on it now."""
        if not self._wake.is_set():  # set() takes a lock even when it is set (1 µs a put)
            self._wake.set()

    def flush(self, timeout: float | None = None, *, keys: Iterable[str] | None = None) -> None:
        """Return once every change made before this call (to ``keys``, if given) is on the
        remote. Raises TimedOut after ``timeout`` seconds, naming what is still pending, or
        the error of a change the remote refuses for good once only such changes are
        left (the others are on the remote by then)."""
        start = time.time()
        deadline = None if timeout is None else time.monotonic() + timeout
        wanted = None if keys is None else set(keys)
        self._backoff = 0.0  # a flush retries at once
        self._urgent.set()
        self._wake.set()
        while True:
            rounds = self._rounds  # read before the check, so a batch ending after it counts
            refused = self.local.refused(wanted)
            waiting = self.local.pending_keys(before=start, keys=wanted, limit=len(refused) + 1)
            if not waiting:
                return
            if all(key in refused and refused[key].version == version for key, version in waiting):
                # Only changes the remote refuses for good are left: say which, and why.
                raise _refused_error(list(refused.values()), self.remote.url)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimedOut(
                    f"changes made before flush() are not on {self.remote.url} yet "
                    f"(the oldest: {waiting[0][0]!r})",
                    hint=self.state.last_error or "the remote is slow; try a longer timeout",
                    remote=self.remote.url,
                )
            poll = self.poll if self.state.active else _FOREIGN_POLL
            with self._progress:
                # Notified after every batch; the poll bounds the wait when another
                # process syncs (its progress cannot notify us). A batch that ended since
                # the check above would not notify again: look at once instead.
                if self._rounds == rounds:
                    self._progress.wait(poll if left is None else min(left, poll))

    @property
    def failing(self) -> bool:
        """True while the remote refuses or misses this syncer's sends (it backs off)."""
        return self._backoff > 0

    def drain_seconds(self, count: int, size: int) -> float | None:
        """About how long sending ``count`` changes of ``size`` bytes in all would take at
        the rate measured over the latest batches (the slower of the object rate and the
        byte rate), or None before anything was measured. Cheap: two multiplications."""
        if not self._seconds_per_object:
            return None
        per_object, per_byte = self._seconds_per_object, self._seconds_per_byte
        running = self._running
        if running is not None:
            # A batch already slower than the measure says the remote turned slow now;
            # it counts before it ends (a remote that hangs would never end one).
            elapsed = time.monotonic() - running[0]
            per_object = max(per_object, elapsed / max(1, running[1]))
            if running[2]:
                per_byte = max(per_byte, elapsed / running[2])
        return max(count * per_object, size * per_byte)

    def _success_record(self, at: float | None) -> dict[str, object]:
        return {"at": at, "spo": self._seconds_per_object, "spb": self._seconds_per_byte}

    def _learn_rate(self) -> None:
        """Standing by: the drain rate the syncing process measured, so that puts here
        keep the shared backlog drainable too."""
        with contextlib.suppress(CargoholdError, ValueError, TypeError):
            record = json.loads(self.local.info_value("sync_last_success") or "{}")
            if record.get("spo"):
                self._seconds_per_object = float(record["spo"])
                self._seconds_per_byte = float(record.get("spb") or 0.0)
                self.state.drain_objects_per_s = 1 / self._seconds_per_object
                if self._seconds_per_byte:
                    self.state.drain_bytes_per_s = 1 / self._seconds_per_byte

    def _measure(self, objects: int, size: int, seconds: float) -> None:
        self._rate.append((objects, size, max(seconds, 1e-6)))
        per_object, per_byte = _rate_of(self._rate)
        recent_object, recent_byte = _rate_of(list(self._rate)[-_RECENT_BATCHES:])
        # The slower of the long measure and the latest batches: a slowdown counts at once,
        # a speed-up only once the long measure sees it too.
        self._seconds_per_object = max(per_object, recent_object)
        self._seconds_per_byte = max(per_byte, recent_byte)
        self.state.drain_objects_per_s = 1 / self._seconds_per_object
        self.state.drain_bytes_per_s = (
            1 / self._seconds_per_byte if self._seconds_per_byte else None
        )

    def wait_progress(self, timeout: float) -> None:
        """Block until the syncer finishes a batch, or ``timeout`` seconds pass. In a
        process that stands by, the syncing one's batches cannot notify this one: it waits
        a short poll, then reads the drain rate that process measured, so a put held back
        until the rate is known goes as soon as it is (not a standby poll later)."""
        active = self.state.active
        with self._progress:
            self._progress.wait(timeout if active else min(timeout, _FOREIGN_POLL))
        if not active:
            self._learn_rate()

    def close(self, timeout: float | None, *, flush: bool = True) -> None:
        """Flush for up to ``timeout`` seconds (unless ``flush`` is false), then stop the
        thread. Logs what remains when a flush was asked for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if flush:
                self.flush(timeout)
        except (TimedOut, CargoholdError) as exc:
            totals = self.local.totals()
            log.warning(
                "cargohold: closing with %d change(s) (%d bytes) not yet on %s: %s. They stay "
                "in the local journal and sync when a Hold opens this data directory again.",
                totals.pending_count,
                totals.pending_bytes,
                self.remote.url,
                exc,
            )
        finally:
            self._stop.set()
            self._urgent.set()
            self._wake.set()
            if self._thread is not None:
                # A batch under way ends by its requests' own timeouts; past the budget
                # (a shutdown's grace) the daemon thread is left to the process's end.
                left = 30.0 if deadline is None else max(0.5, deadline - time.monotonic())
                self._thread.join(timeout=min(30.0, left))
            if self.state.active:
                if (self.state.last_success or 0) > self._success_recorded:
                    self._record("sync_last_success", self._success_record(self.state.last_success))
                session: dict[str, object] = {"clean": True, "v": 2, "sending": self._sending}
                if self._held_back_before is not None and self._held_back_until > time.time():
                    # Not over yet: the next session must keep holding those changes back.
                    session["held_back_before"] = self._held_back_before
                with contextlib.suppress(CargoholdError):
                    self.local.set_info("sync_session", json.dumps(session))
            with contextlib.suppress(Exception):
                self._lock.release(force=True)

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.state.active:
                self.state.active = self._take_lock()
                if not self.state.active:
                    self._learn_rate()
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                self._housekeeping(startup=True)
            # Cleared before a batch, never after: a flush() or close() that sets it while
            # the batch runs must still cut the next gather short.
            self._urgent.clear()
            try:
                did_work = self._sync_batch()
            except Exception as exc:
                log.exception("cargohold: the syncer hit an unexpected error")
                self._note_error(f"unexpected: {exc}")
                did_work = False
                self._backoff = _next_backoff(self._backoff)
            with self._progress:
                self._rounds += 1
                self._progress.notify_all()
            if self._backoff:
                # Wait out the backoff; flush() and close() cut it short.
                self._wake.clear()
                self._wake.wait(random.uniform(0, self._backoff))  # noqa: S311 - jitter
                continue
            if not did_work:
                self._housekeeping()
                woken = self._wake.wait(self._idle_wait())
                # close() sets _stop before _urgent, so a stop that raced the clear above
                # is seen here.
                if woken and not self._urgent.is_set() and not self._stop.is_set():
                    self._urgent.wait(self.sync_delay)  # let a burst gather into one batch
                self._wake.clear()

    def _idle_wait(self) -> float:
        """How long to sleep with nothing to send: until the next poll, or sooner if a
        held-back change becomes sendable."""
        wait = self.poll
        now = time.time()
        if self._held_back_before is not None:
            wait = min(wait, max(0.0, self._held_back_until - now))
        if self._sending:
            oldest = min(sent_at for _, sent_at in self._sending.values())
            wait = min(wait, max(0.0, oldest + self.resend_after - now))
        return wait

    def _take_lock(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        previous = json.loads(self.local.info_value("sync_session") or "{}")
        now = time.time()
        if previous.get("v") == 2:
            # What the last syncer had sent without an answer (or was sending when it
            # died): those keys' newer versions wait; everything else goes now.
            for key, (version, sent_at) in previous.get("sending", {}).items():
                if sent_at + self.resend_after > now:
                    self._sending[key] = (int(version), float(sent_at))
            if self._sending:
                log.info(
                    "cargohold: the previous syncer of %s may still have %d send(s) in "
                    "flight: newer versions of those keys wait up to %.0fs",
                    self.local.root,
                    len(self._sending),
                    self.resend_after,
                )
            # Nothing more to hold back, but a legacy window the last session carried on.
            previous = {"clean": True, "held_back_before": previous.get("held_back_before", 0)}
        if previous.get("held_back_before", 0) + self.resend_after > now:
            # An earlier session was still holding changes back when it closed (cleanly):
            # the requests of the syncer that died before it may still be in flight.
            self._held_back_before = previous["held_back_before"]
            self._held_back_until = previous["held_back_before"] + self.resend_after
        if previous and not previous.get("clean"):
            # The last syncer died (or was killed) with requests possibly in flight.
            self._held_back_before = now
            self._held_back_until = now + self.resend_after
            log.info(
                "cargohold: the previous syncer of %s did not shut down cleanly: changes it "
                "may have been sending wait %.0fs before they are sent again",
                self.local.root,
                self.resend_after,
            )
        self._sending_recorded = None
        self._record_sending()
        log.debug("cargohold: this process syncs %s", self.local.root)
        return True

    def _housekeeping(self, *, startup: bool = False) -> None:
        try:
            self.local.flush_access_times()
            self.local.evict(self.max_bytes)
            self.local.collect_garbage()
            self.local.checkpoint()
            if startup:
                self.local.remove_orphans()
        except CargoholdError as exc:
            log.warning("cargohold: local tier upkeep failed: %s", exc)
        try:
            self._catch_up_catalog()
        except CargoholdError as exc:  # CatalogUnavailable included: the next idle moment
            log.debug("cargohold: catalog catch-up postponed: %s", exc)
        except Exception:  # never let bookkeeping stop the syncer
            log.exception("cargohold: catalog catch-up failed")

    def _sync_batch(self) -> bool:
        now = time.time()
        newer_than = None
        if self._held_back_before is not None:
            if now >= self._held_back_until:
                self._held_back_before = None
            else:
                newer_than = self._held_back_before
        batch = self.local.pending(
            self.batch_size, exclude=self._set_aside() | self._waiting(now), newer_than=newer_than
        )
        # The rule again on the rows taken: a newer version written between _waiting's
        # look at a key (then clean) and this query would otherwise go out at once.
        batch = [p for p in batch if not self._must_wait(p.entry, now)]
        if not batch:
            self._record_sending()  # idle: say that nothing is in flight
            return False
        # The send time is taken after the rows were read: a row of this batch written
        # between ``now`` and the query would otherwise count as written after its own
        # send (``_must_wait``) and wait ``resend_after`` behind itself.
        sent_at = time.time()
        started = time.monotonic()
        # Written down before anything leaves (see the module docstring). An earlier send
        # of the same version that got no answer stays on the list once this one is answered.
        earlier = {
            p.entry.key: self._sending[p.entry.key] for p in batch if p.entry.key in self._sending
        }
        for p in batch:
            self._sending[p.entry.key] = (p.entry.version, sent_at)
        self._record_sending()
        done: list[tuple[Entry, ObjectInfo | None]] = []
        errors: list[tuple[Entry, CargoholdError]] = []
        deletes = [p for p in batch if p.entry.deleted]
        puts = []
        for p in batch:
            if p.entry.deleted:
                continue
            if p.path is not None and not p.path.is_file():
                # Only the syncer removes blob files, so this one was removed by hand.
                errors.append((p.entry, _missing_file(p)))
                continue
            puts.append(p)
        self._running = (started, len(batch), sum(p.entry.size for p in batch))
        try:
            put_results, delete_results = self.remote.apply(
                [_put(p) for p in puts],
                [self._delete(p.entry) for p in deletes],
                concurrency=self.concurrency,
            )
        finally:
            self._running = None
        # An attempt that timed out may still land after the remote layer's own retry of it
        # was answered; it took request_timeout, so the batch did too. Such a batch's sends
        # stay on the list as if unanswered.
        retried = (
            self.request_timeout is not None and time.monotonic() - started >= self.request_timeout
        )
        for pending, result in zip(puts, put_results, strict=True):
            if isinstance(result, ObjectInfo):
                done.append((pending.entry, result))
            else:
                errors.append((pending.entry, result))
        superseded: set[str] = set()
        for pending, error in zip(deletes, delete_results, strict=True):
            if error is None:
                done.append((pending.entry, None))
            elif isinstance(error, PreconditionFailed):
                # A conditional delete (see _delete) met a version this instance never saw:
                # another instance wrote the key since. The newer write wins; the deletion
                # is done, and the key reads what the remote now holds.
                log.info(
                    "cargohold: the deletion of %r was superseded by a newer write to %s; "
                    "that write is kept",
                    pending.entry.key,
                    self.remote.url,
                )
                superseded.add(pending.entry.key)
                done.append((pending.entry, None))
            else:
                errors.append((pending.entry, error))
        if done:
            # The catalog first: once mark_synced lets flush() return, queries must see it.
            # A superseded deletion is not one: the catalog keeps the newer write.
            self._tell_catalog([d for d in done if d[0].key not in superseded])
            self.local.mark_synced(done)
            self._batches += 1
            if self._batches % 16 == 0:
                self.local.checkpoint()  # a long busy spell still keeps the WAL short
            now = time.time()
            sent = sum(entry.size for entry, _ in done)
            self.state.last_success = now
            if now - self._success_recorded > 5:  # for status() in other processes
                self._success_recorded = now
                self._record("sync_last_success", self._success_record(now))
            self.state.synced_objects += len(done)
            self.state.synced_bytes += sent
            self.state.history.append((now, len(done), sent))
            if not any(not _refused_for_good(error) for _, error in errors):
                # Only a batch that went through measures the drain rate: one that waited
                # out timeouts measures the outage.
                self._measure(len(done), sent, time.monotonic() - started)
            with contextlib.suppress(CargoholdError):  # a put reads it then, as before
                self.local.refresh_estimate()  # here, so that puts need not query for it
            log.debug(
                "cargohold: synced %d change(s) in %.3fs", len(done), time.monotonic() - started
            )
        for p in batch:  # answered, or refused: no longer in flight
            if p.entry.key in earlier:
                self._sending[p.entry.key] = earlier[p.entry.key]
            else:
                self._sending.pop(p.entry.key, None)
        for entry, error in errors:
            if _unanswered(error):
                self._sending[entry.key] = (entry.version, sent_at)
        if retried:
            for entry, _ in done:
                self._sending[entry.key] = (entry.version, sent_at)
        refusals = [(entry, error) for entry, error in errors if _refused_for_good(error)]
        if refusals:
            with contextlib.suppress(CargoholdError):  # then it is sent again, and refused again
                self.local.set_refused(
                    (entry.key, entry.version, type(error).__name__, str(error))
                    for entry, error in refusals
                )
            for entry, error in refusals:
                log.error(
                    "cargohold: %s refuses %r for good: %s (set aside: write it again, or "
                    "`cargohold refused retry|drop`)",
                    self.remote.url,
                    entry.key,
                    error,
                )
        transient = [e for e in errors if not _refused_for_good(e[1])]
        if transient:
            self._note_error(str(transient[0][1]))
            self._backoff = _next_backoff(self._backoff)
            log.warning(
                "cargohold: %d change(s) did not reach %s (retrying in up to %.1fs): %s",
                len(transient),
                self.remote.url,
                self._backoff,
                transient[0][1],
            )
        else:
            self._backoff = 0.0
        return True

    def _delete(self, entry: Entry) -> Delete:
        """The remote deletion of a tombstone: conditional on the etag of the version this
        instance last saw there (the clean copy the tombstone replaced), so that it cannot
        remove a write another instance made since (a "zombie" delete). Unconditional when
        the instance saw no version (the key was not held here, or only as its own write
        the remote may or may not have) or the remote cannot check a condition."""
        if entry.etag is not None and self.remote.conditional_deletes:
            return Delete(entry.key, entry.etag)
        return Delete(entry.key)

    def _tell_catalog(self, done: list[tuple[Entry, ObjectInfo | None]]) -> None:
        """Keep the shared catalog in step. The remote is the truth: while the catalog is
        down the keys are kept in the local tier's backlog and recorded once it is back
        (:meth:`_catch_up_catalog`), so no listing misses them for good."""
        if self.catalog is None or not done:
            return
        puts = [
            (info, entry.inline if entry.inline is not None and _memo_record(entry.key) else None)
            for entry, info in done
            if info is not None
        ]
        deletes = [entry.key for entry, info in done if info is None]
        try:
            if not self.catalog.available:
                raise CatalogUnavailable("the catalog is unavailable")
            self.catalog.record(puts, deletes)
        except CatalogUnavailable:  # it warned once
            with contextlib.suppress(CargoholdError):
                self.local.note_catalog_backlog(entry.key for entry, _ in done)
                self._catalog_behind = True

    def _catch_up_catalog(self, limit: int = 256) -> None:
        """Record in the catalog what the remote now holds for keys it missed: a HEAD per
        key (a memo record is read whole, to index it), then one transaction. Run when the
        syncer is idle. Best effort: a key the remote refuses for good is dropped (a
        ``catalog rebuild`` covers it); on any other failure the rest waits for the next
        idle moment."""
        if not self._catalog_behind or self.catalog is None or not self.catalog.available:
            return
        if time.monotonic() < self._catalog_retry_at:
            return
        keys = self.local.catalog_backlog(limit)
        if not keys:
            self._catalog_behind = False
            return
        # Before asking the remote: a row another instance records after this moment is
        # newer than our answers and is kept (see Catalog.record).
        asked_at = self.catalog.clock()
        puts: list[tuple[ObjectInfo, bytes | None]] = []
        deletes: list[str] = []
        settled: list[str] = []
        records = [k for k in keys if _memo_record(k)]
        fetched = self.remote.fetch_many(records) if records else []
        answers: list[tuple[str, tuple[ObjectInfo, bytes | None] | CargoholdError]] = [
            (key, got if isinstance(got, CargoholdError) else (got[0], got[1]))
            for key, got in zip(records, fetched, strict=True)
        ]
        for key in keys:
            if not _memo_record(key):
                try:
                    answers.append((key, (self.remote.head(key), None)))
                except CargoholdError as exc:
                    answers.append((key, exc))
        for key, answer in answers:
            if isinstance(answer, NotFoundError):
                deletes.append(key)
            elif isinstance(answer, CargoholdError):
                if not isinstance(answer, InvalidInput | IntegrityError | PermissionDenied):
                    continue  # the remote is unwell: this key waits for the next round
                log.warning("cargohold: the catalog will miss %r: %s", key, answer)
            else:
                puts.append(answer)
            settled.append(key)
        if puts or deletes:
            self.catalog.record(puts, deletes, asked_at=asked_at)
        self.local.clear_catalog_backlog(settled)
        if settled:
            log.info("cargohold: the catalog caught up on %d change(s) it missed", len(settled))
        else:  # the remote answered none of them: do not ask again every idle second
            self._catalog_retry_at = time.monotonic() + CATALOG_RETRY_SECONDS

    def _waiting(self, now: float) -> frozenset[str]:
        """Keys whose newer version must wait for an earlier send that may still land."""
        waiting = set()
        for key, (_, sent_at) in list(self._sending.items()):
            if now >= sent_at + self.resend_after:
                del self._sending[key]
                continue
            entry = self.local.entry(key)
            if entry is not None and self._must_wait(entry, now):
                waiting.add(key)
        return frozenset(waiting)

    def _must_wait(self, entry: Entry, now: float) -> bool:
        """Whether this row is a newer version of a key with an earlier send that may
        still land (on the list, and within ``resend_after`` of it)."""
        sending = self._sending.get(entry.key)
        if sending is None or not entry.pending:
            return False
        version, sent_at = sending
        # Written after the send is newer too, whatever its version: a row removed
        # meanwhile (its clean copy evicted) starts again at version 1.
        return now < sent_at + self.resend_after and (
            entry.version != version or entry.modified > sent_at
        )

    def _record_sending(self) -> None:
        """Write down what may be in flight, for a syncer that takes over if this one dies
        (only when it changed: an idle syncer writes nothing)."""
        if self._sending == self._sending_recorded:
            return
        session = {"pid": os.getpid(), "clean": False, "v": 2, "sending": self._sending}
        try:
            self.local.set_info("sync_session", json.dumps(session))
        except CargoholdError as exc:
            log.warning("cargohold: cannot record the syncer's session: %s", exc)
            return
        self._sending_recorded = dict(self._sending)

    def _set_aside(self) -> frozenset[str]:
        """Keys refused for good, as long as they have not been written again (read from
        the local tier each batch: an operator's retry in another process counts at once)."""
        return frozenset(self.local.refused())

    def _note_error(self, message: str) -> None:
        self.state.last_error = message
        self.state.last_error_at = time.time()
        self.state.errors.append((self.state.last_error_at, message))
        self.state.error_count += 1
        self._record("sync_last_error", {"at": self.state.last_error_at, "message": message})

    def _record(self, name: str, value: dict[str, object]) -> None:
        """Keep a sync outcome in the local tier, where status() in any process (a CLI
        command, a standby worker, the next start) can read it."""
        with contextlib.suppress(CargoholdError):
            self.local.set_info(name, json.dumps(value))

    def recorded(self) -> tuple[float | None, str | None, float | None]:
        """(last success, last error, its time) as recorded by whichever process synced
        this data directory last."""
        success = json.loads(self.local.info_value("sync_last_success") or "{}")
        error = json.loads(self.local.info_value("sync_last_error") or "{}")
        return success.get("at"), error.get("message"), error.get("at")


def _put(pending: Pending) -> PutRequest:
    """The upload of a journal entry; its key and metadata were checked when written."""
    entry = pending.entry
    data: bytes | Path = entry.inline if entry.inline is not None else pending.path  # type: ignore[assignment]
    return PutRequest(
        key=entry.key,
        data=data,
        mode="overwrite",
        if_match=None,
        metadata=entry.metadata,
        content_type=entry.content_type,
    )


def _memo_record(key: str) -> bool:
    parts = key.split("/")
    return len(parts) == 5 and parts[0] == "memo" and parts[1] != "blobs" and key.endswith(".json")


def _missing_file(pending: Pending) -> IntegrityError:
    return IntegrityError(
        f"the local file of {pending.entry.key!r} ({pending.path}) is gone: it was removed "
        "outside cargohold, so this change cannot be synced",
        key=pending.entry.key,
        hint="write the key again, or delete it",
    )


def _refused_error(refusals: list[Refusal], remote: str) -> CargoholdError:
    """The error flush() raises when only changes set aside as refused are left: of the
    first one's class, naming how many there are and what the operator can do."""
    first = refusals[0]
    kind = getattr(_errors, first.kind, None)
    cls = kind if isinstance(kind, type) and issubclass(kind, CargoholdError) else InvalidInput
    others = f" and {len(refusals) - 1} more" if len(refusals) > 1 else ""
    return cls(
        f"{remote} refuses {first.key!r}{others} for good: {first.reason}",
        key=first.key,
        remote=remote,
        hint="the change is set aside, the others went up; write the key again (another "
        "name), or run `cargohold refused retry KEY` once the remote can take it, or "
        "`cargohold refused drop KEY` to give the change up (Hold.retry_refused / "
        "Hold.drop_refused)",
    )


def _refused_for_good(error: CargoholdError) -> bool:
    """Errors that retrying the same bytes cannot fix (a key or metadata the remote refuses,
    bytes that are gone)."""
    return isinstance(error, InvalidInput | IntegrityError)


def _unanswered(error: CargoholdError) -> bool:
    """A send that ended without the remote's answer may still land later."""
    return isinstance(error, RemoteError | TimedOut) or type(error) is CargoholdError


def _next_backoff(current: float) -> float:
    return min(_BACKOFF_MAX, max(_BACKOFF_START, current * 2))
