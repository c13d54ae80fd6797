"""Flush open Holds when the platform stops the process.

Hosts send SIGTERM (Fly sends SIGINT) and then, after a grace period, SIGKILL. The
handlers installed here flush every open Hold within its grace budget, log what (if
anything) remains, and then hand the signal to whatever handler was there before (the
app's, uvicorn's, Python's default), so the app shuts down as it always did. ``atexit``
does the same for an ordinary exit.

Python runs signal handlers in the main thread only, so handlers are installed only when
the first Hold is opened there; elsewhere (a worker thread, a notebook's kernel thread)
only ``atexit`` applies, and that is logged at debug level.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

__all__ = ["Flushable", "install", "register"]

log = logging.getLogger("cargohold.shutdown")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Flushable(Protocol):
    shutdown_grace: float

    def _shutdown_flush(self, budget: float) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


_holds: weakref.WeakSet[Any] = weakref.WeakSet()
_previous: dict[int, Any] = {}
_atexit_registered = False
_lock = threading.Lock()


def register(hold: Flushable, *, handlers: bool) -> None:
    """Flush ``hold`` at exit, and on SIGTERM/SIGINT if ``handlers``."""
    global _atexit_registered
    with _lock:
        _holds.add(hold)
        if not _atexit_registered:
            # By the time ordinary atexit callbacks run, concurrent.futures has shut its
            # thread pools (they refuse new work), and batches to some remotes use them.
            # threading's own exit hooks run before that, last registered first; the
            # standard library itself registers concurrent.futures' hook this way.
            early = getattr(threading, "_register_atexit", None)
            if early is not None:
                early(_at_exit)
            else:  # pragma: no cover - every CPython since 3.9 has it
                atexit.register(_at_exit)
            _atexit_registered = True
    if handlers:
        install()


def install() -> None:
    """Chain our handler in front of the current SIGTERM and SIGINT handlers (once)."""
    if threading.current_thread() is not threading.main_thread():
        log.debug("cargohold: not in the main thread, so no signal handlers; atexit still flushes")
        return
    with _lock:
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current is _handle:
                continue
            _previous[signum] = current
            signal.signal(signum, _handle)


def _flush_all(reason: str) -> None:
    holds = list(_holds)
    if not holds:
        return
    started = time.monotonic()
    for hold in holds:
        budget = hold.shutdown_grace - (time.monotonic() - started)
        try:
            hold._shutdown_flush(max(0.0, budget))
        except Exception:
            log.exception("cargohold: flushing on %s failed", reason)


def _handle(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    log.info("cargohold: %s received: flushing before shutdown", name)
    _flush_all(name)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        handler: Callable[[int, FrameType | None], Any] = previous
        handler(signum, frame)
    elif previous == signal.SIG_DFL:
        # Do what the signal would have done without us: restore the default, re-raise.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    # SIG_IGN: the app ignores this signal; so do we, after flushing.


def _at_exit() -> None:
    started = time.monotonic()
    for hold in list(_holds):
        budget = hold.shutdown_grace - (time.monotonic() - started)
        try:
            hold.close(timeout=max(0.0, budget))
        except Exception:
            log.exception("cargohold: closing at exit failed")
