"""Flush open Holds when the platform stops the process.

Hosts send SIGTERM (Fly sends SIGINT) and then, after a grace period, SIGKILL. The
handlers installed here flush every open Hold within its grace budget, log what (if
anything) remains, and then hand the signal to whatever handler was there before (the
app's, uvicorn's, Python's default), so the app shuts down as it always did. ``atexit``
does the same for an ordinary exit.

Why the signal path cannot deadlock
-----------------------------------

Python runs a signal handler on the main thread, between two bytecodes of whatever that
thread was doing: possibly inside a ``put`` that holds the local tier's write lock, inside
``logging`` holding a handler's lock, inside ``Thread.start`` holding threading's own lock.
A handler that waits for anything another frame may hold waits forever. So the handler
waits for nothing and takes no lock:

1. On a stop signal it records the moment (float assignments) and writes one byte, the
   signal's number, to a pipe (``os.write``: a system call, no lock) and returns. The
   interrupted frame goes on and releases whatever it holds.
2. The *flusher*, a daemon thread started when the handlers were installed and blocked in
   ``os.read`` on that pipe, wakes, logs, and runs the flush of every open Hold on threads
   of its own, one per Hold, all at once: each has the whole of what is left of the grace,
   so a Hold whose remote is down does not use up the time of the others. The flusher
   waits for them at most until the grace (from the signal's moment) is spent, whatever
   the flushes do.
3. It then hands the signal back to the main thread (``signal.pthread_kill``): the handler
   runs again, sees the hand-back, and calls the previous handler, or restores the default
   action and re-raises, or (SIG_IGN) does nothing. So the app's own handler runs every
   time, on the main thread where Python expects it, at most the grace budget late.

The flusher, the flush threads and every other thread cargohold starts block SIGTERM,
SIGINT and SIGHUP from birth (:mod:`cargohold._threads`: a system call, no lock), so the
kernel gives a stop signal to the main thread, whose handler step 1 is, even while it sits
in a C-level read; never to one of ours, on which Python would only set a flag and the
handler would wait for the main thread's next bytecode. The flush itself waits on nothing
unbounded: a ``persist_dir``'s stop waits for its scan thread at most what is left of the
grace, and its scans journal without waiting on the remote (:func:`journaling`).

Meanwhile the app keeps running: servers keep answering, and they drain (and may keep
accepting writes) after their own handler ran. :func:`shutting_down` lets the Hold see
that a stop has begun: from then on each ``put`` returns only once the remote has it
(see ``Hold.put``), so a write acknowledged after the signal is not lost when the process
dies by the default action moments later, without another flush. Writes no caller waits
on (a persist_dir scan's, inside :func:`journaling`) are journaled as before: a scan that
waited on a remote that is down would hold the exit past the grace, and the flush or the
exit's close that follows sends them within its budget.

A stop the process outlives
---------------------------

An app may ignore SIGTERM (SIG_IGN), or its handler may not exit; then the process runs
on after the flush, and later comes another signal, or an ordinary exit. The rule:

- A *stop* begins with a signal and lasts until its flush has ended *and* its grace (the
  longest of the open Holds', from that signal) has passed. Every put and delete made
  after the first stop signal stays write-through for the rest of the process: the host
  asked this process to stop once, and may kill it at any moment; so nothing acknowledged
  after a stop is left for a later flush to ship.
- A signal during a stop is handed on at once if its flush has ended, or if the same
  signal already came during that stop (an impatient Ctrl-C); otherwise (say SIGINT after
  SIGTERM) once the flush has ended, within the grace. Never later, never not at all.
- A signal after a stop this process outlived begins a new stop, with a whole grace of
  its own: it is the host (or the user) asking again, and its flush ships what the first
  one could not (a remote that was down then).
- What a Hold gives up at a stop (``Hold.at_stop``: single-flight leases) is given up at
  its start, and a callback registered during the stop runs at once; once a stop the
  process outlives is over, callbacks are kept again, for the next stop (or close) to
  run. So a stop the app chose to survive does not make every later lease be given up
  as soon as it is taken.
- The exit hook (and ``close()`` without a timeout) after a stop signal has what is left
  of that stop's grace, and none once it has passed: the host's SIGKILL counts from the
  signal, and an exit without a new signal is the app finishing that stop, late (a pool
  terminating its workers, a server draining long requests). So an exit never flushes
  past the grace of the latest stop; what the remote still misses stays in the journal,
  logged. The exit hook during a stop first waits for the stop's flush (within its grace)
  rather than flush beside it and close the Holds under it.

After ``fork()`` the child has no flusher thread and shares the parent's pipe:
:func:`_after_fork` gives it a new pipe and a new flusher, and forgets the parent's stop.

A stop of an ancestor reaches forked children
---------------------------------------------

A ``multiprocessing.Pool`` (fork) or gunicorn ``--preload`` worker writes through the Hold
its parent opened, and the platform signals only the parent (PID 1). The parent's flush
ships what was pending when it started; its children go on writing until the parent
terminates them after that flush, and the platform's SIGKILL counts from the parent's
signal, not from theirs. Measured on a loaded machine (the pool trials of
tests/processes, grace 3 s): the workers acknowledged hundreds of writes after the
parent's signal, each a plain journaled write, which the parent's flush no longer
covered; the workers' own flush, on the SIGTERM of ``Pool.terminate()``, ran past the
grace, and what the parent's exit then had no time for was lost. So each process has a
*stop page*: one byte of anonymous shared memory (``mmap``, ``MAP_SHARED``), set by the
signal handler when a stop begins (a store to memory: no lock, no system call). A
forked child keeps its ancestors' pages (shared with them, so it sees their later
stops) and gets a page of its own; :func:`ancestor_stopped` reads them. From the moment
any ancestor's stop began, a child's puts are write-through as its own would be
(``Hold._stopping``), so nothing a child acknowledges after the parent's signal waits for
a flush. Only downward: a worker's own SIGTERM (gunicorn recycling one) writes the
worker's page, which its parent never reads. The child still flushes on its own signal
with its own grace, as before (handlers and grace are per process).

Why no write is missed: a put journals first and asks ``_stopping`` after. If it sees
no stop, its journal entry was written before the ancestor's handler set the byte, so
before that ancestor's flush started, and the flush covers it (it sends every change
made before it started, from every process sharing the data directory). If it sees the
stop, it waits for the remote.

Handlers are installed only when the first Hold is opened on the main thread; elsewhere (a
worker thread, a notebook's kernel thread) only ``atexit`` applies, logged at debug level.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import mmap
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

from ._fork import at_fork
from ._threads import start_thread

__all__ = ["Flushable", "install", "register", "shutting_down"]

log = logging.getLogger("cargohold.shutdown")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Flushable(Protocol):
    shutdown_grace: float

    def _shutdown_flush(self, budget: float) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


_holds: weakref.WeakSet[Any] = weakref.WeakSet()
_previous: dict[int, Any] = {}
_atexit_registered = False
_lock = threading.Lock()  # install/register only: never taken by the signal handler

# Written by the signal handler (plain assignments, no lock) and read by everyone else.
_began: float | None = None  # time.monotonic() of the first stop signal
_stop_from: float | None = None  # time.monotonic() of the signal that began the latest stop
_stops = 0  # stops begun
_seen: set[int] = set()  # signals that came during the latest stop
_handing_back: set[int] = set()  # signals the flusher has handed back to the main thread
_pipe: tuple[int, int] | None = None  # (read, write): handler -> flusher


def _stop_page() -> mmap.mmap:
    """One byte of memory shared with the processes forked from here (see the module
    docstring): 1 once a stop began in the process that made it."""
    return mmap.mmap(-1, 1, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


_page = _stop_page()  # this process's; set by the handler
_ancestor_pages: list[mmap.mmap] = []  # those of the processes this one was forked from
_flusher: threading.Thread | None = None

# Written by the flusher's threads.
_flushed = 0  # stops whose flush has ended
_stop_grace = math.inf  # the latest stop's grace: unknown (never over) until its flush starts
_worker: threading.Thread | None = None  # the flush of stop number _worker_stop
_worker_stop = 0


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
    """Chain our handler in front of the current SIGTERM and SIGINT handlers (once per
    handler: a framework that installs its own later is chained again when the next
    Hold opens)."""
    if threading.current_thread() is not threading.main_thread():
        log.debug("cargohold: not in the main thread, so no signal handlers; atexit still flushes")
        return
    with _lock:
        _start_flusher()
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current is _handle:
                continue
            _previous[signum] = current
            signal.signal(signum, _handle)


def shutting_down() -> float | None:
    """The ``time.monotonic()`` at which a stop signal arrived in this process, or None."""
    return _began


def ancestor_stopped() -> bool:
    """True once a process this one was forked from (at any depth) began a stop: the
    platform may kill this one with it (see the module docstring). Reads shared memory:
    no lock, no system call."""
    return any(page[0] for page in _ancestor_pages)


def remaining(grace: float) -> float:
    """Seconds left of ``grace`` counted from the signal that began the latest stop (all
    of it if none came; see the module docstring)."""
    began = _stop_from
    if began is None:
        return grace
    return max(0.0, grace - (time.monotonic() - began))


def current_stop() -> int:
    """The number of the latest stop begun by a signal (0: none yet)."""
    return _stops


def stop_under_way(stop: int) -> bool:
    """Whether stop number ``stop`` is still under way: it is the latest, and its flush
    has not ended or its grace has not passed (see "A stop the process outlives")."""
    if stop != _stops:
        return False
    return _flushed < stop or remaining(_stop_grace) > 0


def in_flusher() -> bool:
    """True on the threads that run the shutdown flush, and inside :func:`journaling`:
    their writes are not write-through (a flush that follows sends them)."""
    return threading.current_thread().name == _FLUSH_THREAD or getattr(_journaling, "depth", 0) > 0


_journaling = threading.local()


@contextlib.contextmanager
def journaling() -> Iterator[None]:
    """Writes made in this block on this thread are journaled and acknowledged at once,
    even after a stop signal, rather than waiting for the remote: for writes no caller
    waits on, whose sending a flush that follows bounds by its own budget (a persist_dir
    scan, see :mod:`cargohold.persist`). No lock: a thread-local counter."""
    _journaling.depth = getattr(_journaling, "depth", 0) + 1
    try:
        yield
    finally:
        _journaling.depth -= 1


_FLUSH_THREAD = "cargohold-shutdown-flush"


def _start_flusher() -> None:
    global _pipe, _flusher
    if _flusher is not None and _flusher.is_alive():
        return
    if _pipe is None:
        read, write = os.pipe()
        os.set_blocking(write, False)  # a full pipe must never block the handler
        _pipe = (read, write)
    _flusher = start_thread(_flusher_loop, args=(_pipe[0],), name="cargohold-shutdown")


def _handle(signum: int, frame: FrameType | None) -> None:
    """The signal handler: no lock, no wait, no logging (see the module docstring)."""
    global _began, _stop_from, _stops, _stop_grace
    if signum in _handing_back:
        _handing_back.discard(signum)
        _chain(signum, frame)
        return
    flushing = _flushed < _stops
    if flushing and signum in _seen:
        _chain(signum, frame)  # asked twice: do not make the user wait again
        return
    pipe, flusher = _pipe, _flusher
    if pipe is None or flusher is None or not flusher.is_alive():
        # No flusher (a forked child that has not used its Hold yet): nothing of its own
        # to flush, and nothing may wait here. Hand on at once; atexit still closes.
        _chain(signum, frame)
        return
    now = time.monotonic()
    if _began is None:
        _began = now
        _page[0] = 1  # the children's puts are write-through from now on
    if _stop_from is None or (not flushing and now - _stop_from >= _stop_grace):
        # The first stop, or a new one after a stop this process outlived.
        _seen.clear()
        _stop_grace = math.inf  # set by the flusher when this stop's flush starts
        _stop_from = now
        _stops += 1
    _seen.add(signum)
    try:
        os.write(pipe[1], bytes([signum]))
    except OSError:  # pragma: no cover - a pipe of 64 KiB full of signals
        _chain(signum, frame)


def _chain(signum: int, frame: FrameType | None) -> None:
    """Do what the signal would have done without us."""
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        handler: Callable[[int, FrameType | None], Any] = previous
        handler(signum, frame)
    elif previous == signal.SIG_DFL or previous is None:
        # Restore the default and re-raise: the process ends as it would have.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    # SIG_IGN: the app ignores this signal; so do we, after flushing.


def _flusher_loop(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:  # pragma: no cover - the pipe was closed
            return
        if not data:  # pragma: no cover
            return
        for signum in data:
            _flush_then_hand_back(signum)


def _flush_then_hand_back(signum: int) -> None:
    """Start the latest stop's flush unless it has started, wait for it within the stop's
    grace, then hand ``signum`` back."""
    global _worker, _worker_stop, _stop_grace
    stop, began = _stops, _stop_from
    assert began is not None  # the handler set it before writing to the pipe
    started = _worker_stop != stop
    if started:
        _stop_grace = max((hold.shutdown_grace for hold in list(_holds)), default=0.0)
        name = signal.Signals(signum).name
        log.info("cargohold: %s received: flushing before shutdown", name)
        _worker_stop = stop
        _worker = start_thread(_flush_all, args=(name, stop), name=_FLUSH_THREAD)
    worker = _worker
    assert worker is not None
    worker.join(max(0.0, began + _stop_grace - time.monotonic()))  # never longer
    if started and worker.is_alive():
        log.warning("cargohold: the shutdown flush is still running at the end of the grace")
    _hand_back(signum)


def _hand_back(signum: int) -> None:
    _handing_back.add(signum)
    main = threading.main_thread()
    # Not main.is_alive(): once the main thread's code has returned, threading marks it
    # stopped while it still waits (and runs handlers) for the non-daemon threads.
    if main.ident is not None:
        with contextlib.suppress(ProcessLookupError):
            signal.pthread_kill(main.ident, signum)
            return
    # The main thread is gone: nothing can run its handler, and only it may change the
    # disposition, so the default action cannot be restored from here.
    _handing_back.discard(signum)
    log.warning("cargohold: %s came after the main thread ended: it is not handed on", signum)


def _flush_all(reason: str, stop: int) -> None:
    """Flush every open Hold, each on a thread of its own, all within the stop's grace;
    the stop's flush has ended once every one has returned."""
    global _flushed

    def flush(hold: Any) -> None:
        # A moment less than the flusher waits, to log what remains before then.
        left = remaining(hold.shutdown_grace)
        hold._shutdown_flush(max(0.0, left - min(0.25, 0.1 * left)))

    try:
        _each(list(_holds), flush, f"flushing on {reason}", _FLUSH_THREAD)
    finally:
        _flushed = stop


def _each(items: list[Any], action: Callable[[Any], None], doing: str, name: str) -> None:
    """``action`` on every item (a Hold each) at once, one thread each (on this thread when
    there is only one): each has the whole budget, whatever the others' remotes do.
    Returns once every one has; each is bounded by the budget it was given."""

    def run(item: Any) -> None:
        try:
            action(item)
        except Exception:
            log.exception("cargohold: %s failed", doing)

    if len(items) == 1:
        run(items[0])
        return
    threads = []
    for item in items:
        try:
            thread = start_thread(run, args=(item,), name=name)
        except RuntimeError:  # no new threads (an interpreter that is finalizing): one by one
            run(item)
            continue
        threads.append(thread)
    for thread in threads:
        thread.join()


def _at_exit() -> None:
    worker, began = _worker, _stop_from
    if worker is not None and began is not None and worker.is_alive():
        # A stop's flush is under way: wait for it within that stop's grace, rather than
        # flush beside it and close the Holds under it.
        worker.join(max(0.0, began + _stop_grace - time.monotonic()))
    # Each Hold's timeout is taken before any closes: what is left of the latest stop's
    # grace, or a whole grace when no stop signal came.
    timeouts = [(hold, remaining(hold.shutdown_grace)) for hold in list(_holds)]
    _each(
        timeouts, lambda pair: pair[0].close(timeout=pair[1]), "closing at exit", "cargohold-exit"
    )


def _after_fork() -> None:
    """In a child after fork(): a pipe and flusher of its own, and no stop begun (the
    parent's signal was the parent's: its flush and grace are not the child's), but the
    parent's stop page kept, so the child's puts turn write-through with the parent's
    stop (see the module docstring) and a stop page of its own. Handlers stay installed (signal dispositions are
    inherited), so a forked worker that keeps them is flushed on its own SIGTERM."""
    global _pipe, _flusher, _began, _lock, _stop_from, _stops, _flushed, _stop_grace
    global _worker, _worker_stop, _page
    _lock = threading.Lock()  # another parent thread may have held it at the fork
    _began = _stop_from = None
    _stops = _flushed = _worker_stop = 0
    _stop_grace = math.inf
    _worker = None
    _seen.clear()
    _handing_back.clear()
    old = _pipe
    _pipe, _flusher = None, None
    if old is not None:
        for fd in old:
            with contextlib.suppress(OSError):
                os.close(fd)
    # Last, so that a failure here (no memory for a page) cannot skip the resets above;
    # the page is kept as an ancestor's before a new one replaces it.
    _ancestor_pages.append(_page)  # still shared with the parent: its stops reach here
    _page = _stop_page()
    # No thread here: this child may be about to exec. The flusher starts on first use of
    # a Hold (resume); until then a stop signal is handed on at once (_handle).


def resume() -> None:
    """In a forked child, on first use of a Hold: the flusher, if handlers are installed."""
    if any(signal.getsignal(s) is _handle for s in SIGNALS):
        with _lock:
            _start_flusher()


at_fork(_after_fork)
