"""A fetch waiting on another instance's download of the same URL reports it: progress
events with stage "waiting" naming the holder, then the bytes, and one origin request."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.fetch import FetchProgress
from cargohold.remotes import MemoryRemote
from testsupport.origin import Origin


@pytest.fixture
def shared() -> Iterator[str]:
    name = f"fetch-wait-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    MemoryRemote.forget(name)


def test_a_waiting_fetch_reports_the_holder(shared: str, tmp_path: Path) -> None:
    with Origin() as origin:
        origin.put("/big.bin", b"\x01" * 300_000)
        origin.slow("/big.bin", 5.0)  # the first download holds its lease this long
        url = origin.url("/big.bin")
        a = cargohold.open(shared, data_dir=tmp_path / "a", signal_handlers=False, lease_ttl=600)
        b = cargohold.open(shared, data_dir=tmp_path / "b", signal_handlers=False, lease_ttl=600)
        events: list[FetchProgress] = []
        try:
            first = threading.Thread(target=a.fetch, args=(url,))
            first.start()
            while origin.gets("/big.bin") == 0:  # the first download has begun
                assert first.is_alive(), "the first fetch ended before asking the origin"
                time.sleep(0.02)
            path = b.fetch(url, progress=events.append)
            first.join(60)
        finally:
            a.close()
            b.close()
    assert path.read_bytes() == b"\x01" * 300_000
    assert origin.gets("/big.bin") == 1, "one download between the two instances"
    waiting = [e for e in events if e.stage == "waiting"]
    assert waiting, events
    assert waiting[0].holder is not None
    assert f":{os.getpid()}:" in waiting[0].holder
    assert " since " in waiting[0].holder
    assert waiting[0].fraction is None
    assert "being downloaded by" in waiting[0].message
