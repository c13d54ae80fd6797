"""Catalog leases end with their holder too: close() gives up a PgLease at once (real
PostgreSQL), and the row says who holds it and since when; a release racing a renewal
neither renews a released lease nor releases twice."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold import Hold
from cargohold.catalog import Catalog, PgLease
from cargohold.remotes import MemoryRemote
from tests.test_lease import TTL, release_during_renewal

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


def test_a_release_during_a_renewal_waits_for_it_and_gives_up_once(
    catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, PgLease.release checked its released flag without a lock and did not wait
    for the renewal in flight: two releases at once could both delete, and a renewal
    could land after the release."""
    name = f"catalog-leases-{uuid.uuid4().hex}"
    remote = MemoryRemote(name)
    catalog = Catalog(catalog_url, remote)
    try:
        lease = PgLease(catalog, f"leases/{name}", ttl=TTL, purpose="a test")
        renew, release = catalog.renew_lease, catalog.release_lease
        events = release_during_renewal(
            lease,
            lambda wrap: monkeypatch.setattr(catalog, "renew_lease", wrap(renew)),
            lambda wrap: monkeypatch.setattr(catalog, "release_lease", wrap(release)),
        )
        assert events == ["waited", "renew", "give up"], events
        assert catalog.lease_holder(f"leases/{name}") is None
    finally:
        catalog.close()
        MemoryRemote.forget(name)
