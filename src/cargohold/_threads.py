"""Every thread cargohold starts is born with the stop signals blocked.

A process-directed signal (the host's SIGTERM, a terminal's SIGINT, a SIGHUP) is taken by
one thread of the process, any that does not block it. Python runs a signal's handler
only on the main thread, and only when that thread runs bytecode or one of its system
calls returns EINTR: a signal another thread took merely sets a flag. So a main thread
blocked in a C-level call (a read of a pipe or socket, a C library's wait) runs no
handler until that call returns, and the host's SIGKILL comes first. Linux gives such a
signal to the main thread when it can take it at once, but to another thread when it
cannot (it blocks the signal for a moment, as CPython does while it starts a subprocess,
or it already has a signal pending and is not running); other kernels (macOS) take any
thread. With every one of our threads blocking them, the kernel delivers these signals
to a thread whose handler is Python's (the main thread), or keeps them pending until it
can: never to a thread that only sets a flag.

The mask is set in the *starting* thread around ``Thread.start`` (a new thread inherits
its creator's mask), so the new thread never runs a moment with the signals open, and
the creator's mask is restored at once: a signal that came meanwhile stays pending and is
delivered then, not lost. This takes no lock and waits for nothing but the start itself.
Threads that our threads start (a thread pool's workers, asyncio's resolver threads, an
SDK's runtime) inherit the mask.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "signals_blocked", "start_thread"]

#: What hosts and terminals send to stop or reload a process (SIGHUP is POSIX only).
STOP_SIGNALS = frozenset(
    s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None
)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Block :data:`STOP_SIGNALS` in this thread for the block, so that threads started
    in it (directly, or by a thread pool's ``submit``) are born blocking them. Where
    threads have no signal mask (Windows) this does nothing."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_thread(
    target: Callable[..., Any], *, name: str, args: tuple[Any, ...] = ()
) -> threading.Thread:
    """Start a daemon thread running ``target(*args)`` that blocks :data:`STOP_SIGNALS`
    from its first instruction (see the module docstring)."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    with signals_blocked():
        thread.start()
    return thread
