"""A lock per key that lives only while some thread holds it or waits for it.

The generation cache (a lock per entry) and the download cache (a lock per URL) take a
lock per key for single-flight. A dictionary that kept every key's lock would grow with
every distinct key a long-running process ever sees; here each key's lock is counted by
its users and dropped by the last one, so the table holds only the keys in use right now.

Fork: a child starts with an empty table (``os.register_at_fork``). A lock that a
parent's thread held at the fork would stay held in the child for good, since that
thread does not exist there; in the child no thread holds any lock yet.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator

from ._fork import at_fork

__all__ = ["KeyedLocks"]


class _Slot:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


_instances: weakref.WeakSet[KeyedLocks] = weakref.WeakSet()


class KeyedLocks:
    """``with locks.hold(key):`` one thread at a time per key; ``len(locks)`` is how
    many keys are held or waited for now."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        _instances.add(self)

    def __len__(self) -> int:
        return len(self._slots)

    @contextlib.contextmanager
    def hold(
        self, key: str, *, waiting: Callable[[float], None] | None = None, every: float = 10.0
    ) -> Iterator[None]:
        """Hold ``key``'s lock for the block. While it waits, ``waiting(seconds)`` is
        called every ``every`` seconds (to log who waits on what)."""
        with self._guard:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            slot.users += 1
        try:
            if waiting is None:
                slot.lock.acquire()
            else:
                started = time.monotonic()
                while not slot.lock.acquire(timeout=every):
                    waiting(time.monotonic() - started)
            try:
                yield
            finally:
                slot.lock.release()
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0 and self._slots.get(key) is slot:
                    del self._slots[key]

    def _after_fork(self) -> None:
        self._guard = threading.Lock()
        self._slots = {}


def _reset_in_child() -> None:
    for locks in list(_instances):
        locks._after_fork()


at_fork(_reset_in_child)
