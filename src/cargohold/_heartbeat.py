"""The heartbeat every lease uses: renewals on a thread of their own, and one give-up.

A lease in the remote (:class:`cargohold._lease.Lease`) and one in the catalog's
database (:class:`cargohold.catalog.PgLease`) differ only in how they renew and how they
give up; when to renew, what a failed renewal means, and how a release and a renewal
in flight keep out of each other's way are the same, and written here once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ._fork import on_fork
from ._threads import start_thread
from .errors import CargoholdError

__all__ = ["Heartbeat"]

log = logging.getLogger("cargohold.lease")


class Heartbeat:
    """Keeps one lease alive from when it is taken (:meth:`start`) until :meth:`end`.

    Guarantees, because each renewal and the end take turns under one lock:

    - no renewal starts once :meth:`end` has begun: a released lease is never renewed;
    - :meth:`end` waits for at most the one renewal in flight, never for the sleep
      between two (the thread wakes on an event, not a timer);
    - the give-up runs at most once per :meth:`start`, however many threads call
      :meth:`end` at once (the user's release and a stop hook), and never once the
      lease is known lost to another holder (it is theirs to give up now);
    - a child forked while the lease is held does not hold it: its :meth:`end` returns at
      once and gives nothing up (even if a renewal was in flight at the fork), and the
      parent's heartbeat goes on.
    """

    def __init__(self, *, ttl: float, purpose: str, thread_name: str) -> None:
        self.ttl = ttl
        self.purpose = purpose
        self.thread_name = thread_name
        #: Another holder took the lease over (a renewal said so): the work may be done twice.
        self.lost = False
        self._turn = threading.Lock()
        #: The running heartbeat's stop event, None while the lease is not held. One per
        #: start(): a thread of an earlier hold never takes a later hold's turn.
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None  # the latest start()'s (tests join it)
        on_fork(self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        """In a forked child: the lease is the parent's (its heartbeat thread goes on
        there), so the child neither renews nor gives it up; and the lock may have been
        held by a renewal in flight at the fork, with no thread left here to let it go."""
        self._turn = threading.Lock()
        self._stop = None
        self._thread = None

    def start(self, renew: Callable[[], bool]) -> None:
        """The lease was just taken: call ``renew`` every ``ttl / 3`` seconds until
        :meth:`end`. ``renew`` returns True while the lease is still this holder's, False
        once another took it (the heartbeat then stops, and ``lost`` is set); a
        CargoholdError says nothing either way (the remote or database did not answer),
        so it is logged and the next beat tries again."""
        stop = threading.Event()
        with self._turn:
            self.lost = False
            self._stop = stop
        self._thread = start_thread(self._beat, args=(stop, renew), name=self.thread_name)

    def _beat(self, stop: threading.Event, renew: Callable[[], bool]) -> None:
        while not stop.wait(self.ttl / 3):
            with self._turn:
                if stop.is_set():
                    return  # ended while this beat waited for its turn
                try:
                    kept = renew()
                except CargoholdError as exc:
                    log.warning("cargohold: could not renew the lease on %s: %s", self.purpose, exc)
                    continue
                if not kept:
                    self.lost = True
                    log.error(
                        "cargohold: lost the lease on %s (another instance took it over): "
                        "the work may now be done twice",
                        self.purpose,
                    )
                    return

    def end(self, give_up: Callable[[], None]) -> None:
        """Stop renewing, then call ``give_up`` if the lease is still held and not lost.
        Idempotent; a failed give-up is logged (the lease then expires by itself)."""
        with self._turn:
            stop, self._stop = self._stop, None
            if stop is None:
                return  # never taken, or already ended
            stop.set()
            if self.lost:
                return
            try:
                give_up()
            except CargoholdError as exc:
                log.warning("cargohold: could not release the lease on %s: %s", self.purpose, exc)
