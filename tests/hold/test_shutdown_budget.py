"""Several open Holds share one shutdown budget: each must have the whole of it, so a Hold
whose remote does not answer cannot use up the time of the others."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator

import pytest

from cargohold import _shutdown


class Unanswered:
    """A Hold whose remote does not answer: its flush (or close) takes the whole budget it
    is given, unless every Hold's has started meanwhile (they meet at a barrier)."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self.shutdown_grace = 5.0
        self.barrier = barrier

    def _shutdown_flush(self, budget: float) -> None:
        self.barrier.wait(timeout=budget)

    def close(self, timeout: float | None = None) -> None:
        self.barrier.wait(timeout=timeout)


@pytest.fixture
def two_holds(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Barrier]:
    """Two such Holds are the open ones (in place of any the test process has)."""
    barrier = threading.Barrier(2)
    holds = [Unanswered(barrier), Unanswered(barrier)]  # referenced here while the test runs
    monkeypatch.setattr(_shutdown, "_holds", weakref.WeakSet(holds))
    yield barrier
    holds.clear()  # until here: the set holds them weakly


def test_the_stop_flush_of_each_hold_starts_at_once(two_holds: threading.Barrier) -> None:
    _shutdown._flush_all("SIGTERM", _shutdown._stops)
    assert not two_holds.broken  # each one's flush began while the other's was under way


def test_the_exit_closes_each_hold_at_once(two_holds: threading.Barrier) -> None:
    _shutdown._at_exit()
    assert not two_holds.broken
