"""The drain estimate follows a remote that turns slow: within a few batches, and while a
batch that is already slower than the measure is still being sent.

The remote here is the memory remote with a delay per batch: a stand-in for a slow server
whose speed the test can turn at a given moment. The end-to-end case on SeaweedFS behind a
slowing proxy is ``test_breaker``'s SIGTERM test."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cargohold
from cargohold.remotes.memory import MemoryRemote


class _SlowRemote(MemoryRemote):
    """Each batch takes ``delay`` seconds per object; ``gate`` (when cleared) holds one."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def _apply(self, requests, keys, concurrency):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.gate.wait(30)
        time.sleep(self.delay * (len(requests) + len(keys)))
        return super()._apply(requests, keys, concurrency)


def _write(hold: cargohold.Hold, start: int, count: int) -> None:
    for i in range(start, start + count):
        hold.put(f"k/{i}", b"x" * 100)


def test_a_remote_that_turns_slow_shrinks_the_backlog_allowed_within_a_few_batches(
    tmp_path: Path,
) -> None:
    remote = _SlowRemote()
    with cargohold.open(
        remote, data_dir=tmp_path / "data", signal_handlers=False, shutdown_grace=10, sync_batch=50
    ) as hold:
        # Fast: forty batches measured at memory speed.
        for round_ in range(40):
            _write(hold, round_ * 50, 50)
            hold.flush(30)
        fast = hold.status().drain_seconds
        assert fast is not None
        # 20 ms an object from now on: four batches later the estimate says so.
        remote.delay = 0.02
        for round_ in range(40, 44):
            _write(hold, round_ * 50, 50)
            hold.flush(60)
        _write(hold, 44 * 50, 50)  # 50 pending: about 1 s at the slow rate
        estimate = hold.status().drain_seconds
        assert estimate is not None
        assert estimate >= 50 * 0.02 * 0.9, (fast, estimate)
        remote.delay = 0.0
        hold.flush(60)


def test_a_batch_that_hangs_counts_before_it_ends(tmp_path: Path) -> None:
    remote = _SlowRemote()
    with cargohold.open(
        remote, data_dir=tmp_path / "data", signal_handlers=False, shutdown_grace=10, sync_batch=50
    ) as hold:
        for round_ in range(10):
            _write(hold, round_ * 50, 50)
            hold.flush(30)
        remote.gate.clear()
        remote.entered.clear()
        _write(hold, 1000, 50)
        assert remote.entered.wait(30)
        time.sleep(1.0)  # the batch has taken 1 s so far: 20 ms an object at least
        estimate = hold.status().drain_seconds
        remote.gate.set()
        assert estimate is not None
        assert estimate >= 50 * 0.02, estimate
        hold.flush(60)
