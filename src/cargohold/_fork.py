"""What a child process must redo after ``os.fork()`` (gunicorn ``--preload``,
``multiprocessing`` with fork, Celery prefork).

A forked child has only the thread that called ``fork()``. Every other thread (the syncer,
an event loop of an S3 client, a catalog listener) is gone, and any lock one of them held
at that moment stays held forever. Connections are shared with the parent: an SQLite
connection must not be used in two processes, a PostgreSQL socket or an HTTP/2 stream read
by both corrupts both. So objects that own such things register a method here, and the
child runs it before anything else: it builds fresh locks, connections and clients, and
starts its threads again on first use (never in the hook itself).

What the parent opened is *abandoned* in the child, never closed: closing an inherited
SQLite connection may checkpoint or remove the WAL under the parent, closing a psycopg
connection sends the server a Terminate for the parent's session, and releasing an
inherited ``flock`` releases the parent's lock (the lock belongs to the shared open file).
:func:`abandon` keeps a reference for the child's lifetime, so no finalizer runs either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["abandon", "at_fork", "on_fork"]

log = logging.getLogger("cargohold.fork")

_resets: list[Callable[[], None]] = []  # module-level: run first
_callbacks: list[weakref.WeakMethod[Callable[[], None]]] = []
_abandoned: list[Any] = []
#: How many forks this process descends from: an object that saw another number has
#: threads to start again (see :func:`forked_since`).
generation = 0


def at_fork(reset: Callable[[], None]) -> None:
    """Call the module-level ``reset`` in each child after ``fork()``, before any object's
    callback (module state such as a shared lock)."""
    _resets.append(reset)


def on_fork(method: Callable[[], None]) -> None:
    """Call ``method`` (a bound method; held weakly) in each child after ``fork()``.
    Callbacks run in the order they were registered, so an object registered after the
    ones it uses runs after them. They must not start threads: a child may be about to
    exec (``subprocess`` with ``preexec_fn`` runs these hooks too), and a syncer started
    there could take the sync lock and send. Threads start again on first use instead
    (``Hold`` checks :data:`generation`). The entry goes when its object does, so a
    process that makes many short-lived objects (a lease per build) and never forks does
    not keep one per object it ever made."""
    _callbacks.append(weakref.WeakMethod(method, _forget))


def _forget(ref: weakref.WeakMethod[Callable[[], None]]) -> None:
    """A registered object died: drop its entry (it may be gone already in a child)."""
    with contextlib.suppress(ValueError):
        _callbacks.remove(ref)


def abandon(*objects: Any) -> None:
    """Keep ``objects`` alive and untouched for the rest of this (child) process."""
    _abandoned.extend(objects)


def _call(what: Callable[[], None]) -> None:
    try:
        what()
    except Exception:  # a child must start whatever one object's reset does
        log.exception("cargohold: resetting %r after fork failed", what)


def _after_fork_in_child() -> None:
    global generation
    generation += 1
    for reset in _resets:
        _call(reset)
    alive: list[weakref.WeakMethod[Callable[[], None]]] = []
    for ref in _callbacks:
        method = ref()
        if method is None:
            continue
        alive.append(ref)
        _call(method)
    _callbacks[:] = alive


# The only after-fork hook cargohold registers with the interpreter: every part registers
# here instead, so the order above holds whatever the order of imports.
os.register_at_fork(after_in_child=_after_fork_in_child)
