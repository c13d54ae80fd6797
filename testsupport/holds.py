"""Helpers for tests that open Holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cargohold import Hold, HoldStatus
from cargohold.remotes import Remote

__all__ = ["OutageRun", "assert_outage_lost_nothing", "write_through_an_outage"]


@dataclass
class OutageRun:
    """What a writer saw while the remote was down (see :func:`write_through_an_outage`)."""

    written: dict[str, bytes] = field(default_factory=dict)  # the last value of each key
    during_outage: list[str] = field(default_factory=list)  # keys put while it was down
    errors: list[BaseException] = field(default_factory=list)  # put() must raise none
    status: HoldStatus | None = None  # the Hold's status at the end of the outage


def write_through_an_outage(
    hold: Hold,
    stop_remote: Callable[[], None],
    start_remote: Callable[[], None],
    *,
    at_least: float = 4.0,
    at_most: float = 60.0,
) -> OutageRun:
    """Put values from a thread while the remote is stopped for ``at_least`` seconds and
    until the Hold reports a sync error (some SDKs retry on their own for a while first),
    then start it again. The caller asserts on the returned run, then flushes."""
    run = OutageRun()
    stop = threading.Event()
    outage = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            key = f"w/{i % 300:03d}"
            value = f"{i}".encode() * (1 + i % 5000)
            try:
                hold.put(key, value)
            except BaseException as exc:
                run.errors.append(exc)
                return
            run.written[key] = value
            if outage.is_set():
                run.during_outage.append(key)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        hold.flush(60)  # some writes reach the remote before the outage
        stop_remote()
        outage.set()
        started = time.monotonic()
        while not run.errors and time.monotonic() - started < at_most:
            run.status = hold.status()
            if time.monotonic() - started > at_least and run.status.last_error is not None:
                break
            stop.wait(0.2)
        run.status = hold.status()
        outage.clear()
        start_remote()
    finally:
        stop.set()
        thread.join(60)
    return run


def assert_outage_lost_nothing(run: OutageRun, hold: Hold, check: Remote, flush: float) -> None:
    """What an outage must not break: no put failed, puts went on while the remote was
    down and stayed pending with the error reported, and once the remote is back and the
    Hold flushed, ``check`` (the same remote, opened apart) has the last value of every key."""
    assert not run.errors, run.errors
    assert run.during_outage, "puts must keep succeeding while the remote is down"
    assert run.status is not None
    assert run.status.pending_count > 0
    assert run.status.last_error is not None
    hold.flush(flush)
    for key, value in run.written.items():
        assert check.get(key) == value, key
    assert hold.status().pending_count == 0
