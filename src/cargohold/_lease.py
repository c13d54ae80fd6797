"""Leases: a create-only lock object in the remote, kept alive by its holder.

Used for single-flight work across instances that share a remote (a memo build, a
shared download). The remote's conditional puts make it exact:

- **acquire**: ``put(mode="create")``; of many racing callers exactly one succeeds.
- **renew**: the holder rewrites the object with ``if_match`` its own last etag every
  ``ttl / 3`` seconds; the content carries a counter, so the etag changes each time.
- **expire**: a waiter that sees the same etag for ``ttl`` seconds, by its own monotonic
  clock, takes the holder for dead (no clock has to agree with another machine's) and
  takes over with ``if_match`` that stale etag: again exactly one waiter wins.
- **release**: the holder deletes the object, if it still holds it.

**Leases end with their holder.** :func:`exclusive_lease` registers every lease it
hands out with its Hold (:meth:`Hold.at_stop`), so a graceful stop (the shutdown flush
on SIGTERM or SIGINT, or ``close()``) gives up every lease the Hold holds at once, and
the next instance starts the work without waiting for the expiry. Only a holder that is
killed (SIGKILL, an out-of-memory kill) or loses its machine keeps others waiting,
``ttl`` seconds (the ``lease_ttl`` setting) after its last renewal.

That includes a lease whose work is still running on another thread when the stop
comes: it is given up all the same. A second instance may then start the same work
while this one finishes it. That costs compute, never correctness: memo results and
downloads are content-addressed and immutable, and each record is written whole after
its files, so whichever lands last is a complete entry. Keeping the lease instead would
make every other instance wait the full ``ttl`` for a process that is about to die.

The object's content (and the catalog's row) says who holds the lease and since when,
so waiters can say whom they wait for (:meth:`ExclusiveLease.holder_info`).

**A remote without conditional writes** (``Remote.conditional_writes`` False: a Hugging
Face bucket through its native API) cannot hold a lock object: two instances could both
"create" it. There, leases live in the catalog only (with no fallback to the remote when
the catalog stops answering: the callers then work alone, as they do when the remote is
down), and without a catalog :func:`require_single_flight` refuses the features that
need one when they are opened, naming what to configure.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from ._heartbeat import Heartbeat
from ._holder import describe_record, holder_name
from .errors import CargoholdError, CatalogUnavailable, ConfigError, ConflictError, NotFoundError
from .keys import InternalKey, internal_key
from .remotes import ObjectInfo, Remote

if TYPE_CHECKING:
    from .catalog import PgLease
    from .hold import Hold

__all__ = ["ExclusiveLease", "Lease", "exclusive_lease", "require_single_flight", "rewrite_if_ours"]


class ExclusiveLease(Protocol):
    """What single-flight work needs of a lease, wherever it lives."""

    purpose: str

    def try_acquire(self) -> bool: ...
    def holder_info(self) -> str: ...
    def release(self) -> None: ...


log = logging.getLogger("cargohold.lease")


def exclusive_lease(hold: Hold, name: str, *, ttl: float, purpose: str) -> ExclusiveLease:
    """The lease called ``name`` (``leases/...``) for exclusive work: in the shared
    catalog's database when there is one and it answers (its clock decides expiry, and no
    lock object costs remote requests), else a lock object in the remote. A catalog that
    stops answering before the lease is taken hands over to the remote's lock object.

    Once taken, the lease is given up by ``release()`` or, whichever comes first, when
    ``hold`` stops gracefully (see the module docstring)."""
    remote, catalog = hold.remote, hold.catalog
    if not remote.conditional_writes:
        require_single_flight(hold, purpose)
        assert catalog is not None
        from .catalog import PgLease

        return _EndsWithHold(PgLease(catalog, name, ttl=ttl, purpose=purpose), hold)

    def in_remote() -> Lease:
        return Lease(remote, internal_key(name), ttl=ttl, purpose=purpose)

    inner: ExclusiveLease
    if catalog is not None and catalog.available:
        from .catalog import PgLease

        inner = _CatalogFirst(PgLease(catalog, name, ttl=ttl, purpose=purpose), in_remote)
    else:
        inner = in_remote()
    return _EndsWithHold(inner, hold)


def require_single_flight(hold: Hold, feature: str) -> None:
    """Raise ConfigError if ``hold`` has no way to run ``feature``'s work once across
    instances: a remote without conditional writes and no catalog."""
    if hold.remote.conditional_writes or hold.catalog is not None:
        return
    raise ConfigError(
        f"{feature} needs single-flight leases across instances, which {hold.remote.url} "
        "cannot hold (it has no create-only or if-match writes)",
        hint="configure the PostgreSQL catalog (CARGOHOLD_CATALOG=postgresql://...), whose "
        "leases this remote then uses, or use the bucket through its S3 gateway "
        "(hf-s3://OWNER/NAME with S3 keys generated from a token)",
        remote=hold.remote.url,
    )


class _EndsWithHold:
    """A lease given up when its Hold stops gracefully, if its user has not already."""

    def __init__(self, inner: ExclusiveLease, hold: Hold) -> None:
        self._inner = inner
        self._hold = hold
        self._cancel: Callable[[], None] | None = None
        self.purpose = inner.purpose

    def try_acquire(self) -> bool:
        if not self._inner.try_acquire():
            return False
        # Registered after the take: a stop that began meanwhile gives it up at once.
        self._cancel = self._hold.at_stop(self._given_up_at_stop)
        return True

    def _given_up_at_stop(self) -> None:
        self._cancel = None
        log.info("cargohold: stopping: gave up the lease on %s", self.purpose)
        self._inner.release()

    def holder_info(self) -> str:
        return self._inner.holder_info()

    def release(self) -> None:
        cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()
        self._inner.release()


class _CatalogFirst:
    """A lease in the catalog, or in the remote once the catalog fails to answer."""

    def __init__(self, primary: PgLease, fallback: Callable[[], Lease]) -> None:
        self._lease: PgLease | Lease = primary
        self._fallback = fallback
        self.purpose = primary.purpose

    def try_acquire(self) -> bool:
        try:
            return self._lease.try_acquire()
        except CatalogUnavailable:
            if isinstance(self._lease, Lease):
                raise
            log.warning(
                "cargohold: the catalog is unavailable: %s is coordinated through the remote",
                self.purpose,
            )
            self._lease = self._fallback()
            return self._lease.try_acquire()

    def holder_info(self) -> str:
        return self._lease.holder_info()

    def release(self) -> None:
        self._lease.release()


def rewrite_if_ours(remote: Remote, key: str, content: bytes, etag: str | None) -> str | None:
    """Replace a lease object with ``content`` if it still has ``etag`` (the holder's
    last write): its new etag, or None when another changed it (a waiter took it over)
    or it is gone (taken over and released: a remote such as AWS answers If-Match on a
    missing key with 404)."""
    try:
        return remote.put(key, content, if_match=etag).etag
    except (ConflictError, NotFoundError):
        return None


class Lease:
    """One lease object; see the module docstring."""

    def __init__(self, remote: Remote, key: InternalKey, *, ttl: float, purpose: str) -> None:
        self.remote = remote
        self.key = key
        self.ttl = ttl
        self.purpose = purpose
        self.holder = holder_name()
        self.etag: str | None = None
        self._beats = 0
        self._since = 0.0
        self._heartbeat = Heartbeat(ttl=ttl, purpose=purpose, thread_name="cargohold-lease")
        self._seen: tuple[str, float] | None = None  # (etag, monotonic time first seen)

    @property
    def lost(self) -> bool:
        """Another instance took the lease over while this one held it."""
        return self._heartbeat.lost

    def _content(self) -> bytes:
        self._beats += 1
        return json.dumps(
            {
                "holder": self.holder,
                "purpose": self.purpose,
                "beat": self._beats,
                "ttl": self.ttl,
                "since": self._since,
            }
        ).encode()

    def try_acquire(self) -> bool:
        """Take the lease if it is free or its holder is dead. Never blocks on a live holder."""
        self._since = time.time()
        try:
            self.etag = self.remote.put(self.key, self._content(), mode="create").etag
            return self._started()
        except ConflictError:
            pass
        try:
            current = self.remote.head(self.key)
        except NotFoundError:
            return self.try_acquire()  # released between our put and our look
        if not self._stale(current):
            return False
        try:
            self.etag = self.remote.put(self.key, self._content(), if_match=current.etag).etag
        except (ConflictError, NotFoundError):
            return False  # another waiter took over first, or the holder released it
        log.warning("cargohold: took over %s from a holder that stopped renewing it", self.purpose)
        return self._started()

    def holder_info(self) -> str:
        """Who holds it and since when (``?`` if that cannot be read)."""
        try:
            return describe_record(json.loads(self.remote.get(self.key)))
        except (CargoholdError, ValueError, AttributeError):
            return "?"

    def _stale(self, current: ObjectInfo) -> bool:
        now = time.monotonic()
        if self._seen is None or self._seen[0] != current.etag:
            self._seen = (current.etag, now)
            return False
        return now - self._seen[1] > self.ttl

    def _started(self) -> bool:
        self._heartbeat.start(self._renew)
        return True

    def _renew(self) -> bool:
        """Rewrite the object if it is still the one this holder last wrote (True)."""
        etag = rewrite_if_ours(self.remote, self.key, self._content(), self.etag)
        if etag is None:
            return False
        self.etag = etag
        return True

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours. Idempotent; waits for
        at most the one renewal in flight (never for the renewing thread's sleep)."""
        self._heartbeat.end(self._delete_if_ours)

    def _delete_if_ours(self) -> None:
        etag, self.etag = self.etag, None
        if etag is None:
            return
        try:
            if self.remote.conditional_deletes:
                # One step on the remote: a lease another holder took over meanwhile stays.
                self.remote.delete(self.key, if_match=etag)
            elif self.remote.head(self.key).etag == etag:
                self.remote.delete(self.key)
        except (ConflictError, NotFoundError):
            pass  # taken over (and maybe released) by another: nothing of ours is left

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
