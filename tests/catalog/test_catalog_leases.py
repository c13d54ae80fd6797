"""Catalog leases end with their holder too: close() gives up a PgLease at once (real
PostgreSQL), and the row says who holds it and since when."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import cargohold
from cargohold import Hold
from cargohold.catalog import Catalog
from cargohold.remotes import MemoryRemote

LONG = 600.0  # lease seconds: a caller waiting for the expiry would hit the test's timeout


def _hold(remote: MemoryRemote, catalog_url: str, data_dir: Path) -> Hold:
    settings = cargohold.Settings.load({}, signal_handlers=False, lease_ttl=LONG)
    return Hold(
        remote=remote, local_dir=data_dir, settings=settings, catalog=Catalog(catalog_url, remote)
    )


def test_close_gives_up_a_catalog_lease_at_once(catalog_url: str, tmp_path: Path) -> None:
    name = f"catalog-leases-{uuid.uuid4().hex}"
    a = _hold(MemoryRemote(name), catalog_url, tmp_path / "a")
    memo = a.memo("video", version="v1")
    inputs = {"prompt": "a cat"}
    lease = f"leases/memo/video/v1/{memo.digest(inputs)}"
    started, finish = threading.Event(), threading.Event()

    def slow(inputs: dict[str, Any], workdir: Path) -> bytes:
        started.set()
        finish.wait(60)
        return b"late"

    def run() -> None:
        with contextlib.suppress(cargohold.HoldClosed):  # the Hold closed under the build
            memo.get_or_create(inputs, slow)

    worker = threading.Thread(target=run)
    worker.start()
    b = _hold(MemoryRemote(name), catalog_url, tmp_path / "b")
    try:
        assert started.wait(30)
        assert b.catalog is not None
        held = b.catalog.lease_holder(lease)
        assert held is not None
        assert f":{os.getpid()}:" in held[0]
        assert held[1] > 0  # since when (a Unix time)
        a.close()
        assert b.catalog.lease_holder(lease) is None, "close() gave the lease up"
        entry = b.memo("video", version="v1").get_or_create(inputs, lambda i, w: b"second")
        assert (entry.value, entry.hit) == (b"second", False)
    finally:
        finish.set()
        worker.join(60)
        a.close()
        b.close()
        MemoryRemote.forget(name)
