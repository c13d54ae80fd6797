"""cargohold.open() that fails after it built the remote and the catalog closes them both:
no PostgreSQL connection and no remote thread outlives the error.

The tests keep the error (as an app that logs it, or an error reporter, does): its
traceback keeps open()'s frame alive, so nothing is closed by garbage collection."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

import cargohold
from cargohold import ConfigError
from cargohold.remotes import open_remote
from tests.catalog.conftest import ADMIN
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS, free_port


def _connections(catalog_url: str) -> int:
    """Backends connected to the catalog's database, other than this query's own."""
    database = catalog_url.rsplit("/", 1)[-1]
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _settle(catalog_url: str) -> int:
    """The count once closed backends have gone (a backend exits just after its client
    hangs up, so poll a little rather than read once)."""
    deadline = time.monotonic() + 10
    count = _connections(catalog_url)
    while count and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _connections(catalog_url)
    return count


def _loop_threads(bucket: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == f"cargohold-s3-{bucket}"]


def _catalog_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("cargohold-catalog")]


def test_a_bad_setting_leaves_no_connection_and_no_remote_thread(
    catalog_url: str, seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    assert _settle(catalog_url) == 0
    # A Remote given to open() belongs to the Hold (its close() closes it), so a failed
    # open closes it too. Its event-loop thread runs once a batch has used it.
    remote = open_remote(s3_url(seaweedfs, seaweedfs_bucket))
    remote.delete_many(["nothing-here"], concurrency=1)
    assert _loop_threads(seaweedfs_bucket)
    with pytest.raises(ConfigError, match="local_max_bytes") as kept:
        cargohold.open(
            remote,
            data_dir=tmp_path / "data",
            catalog=catalog_url,
            local_max_bytes=1_000,
            max_pending_bytes=2_000,
            signal_handlers=False,
        )
    assert kept.value.__traceback__ is not None
    assert _settle(catalog_url) == 0
    assert not _catalog_threads()
    assert not _loop_threads(seaweedfs_bucket)


def test_a_local_tier_bound_to_another_remote_leaves_no_connection(
    catalog_url: str, tmp_path: Path
) -> None:
    """bind_remote refuses a local tier with writes pending for another remote."""
    data = tmp_path / "data"
    # A write kept pending: its remote is a port where nothing listens.
    first = (
        f"s3://b-{uuid.uuid4().hex[:8]}/p?endpoint=http://127.0.0.1:{free_port()}"
        "&access_key_id=k&secret_access_key=s"
    )
    quick = {"connect_timeout": 1, "retry_timeout": 1, "max_retries": 0, "signal_handlers": False}
    hold = cargohold.open(first, data_dir=data, **quick)
    hold.put("pending", b"not synced")
    hold.close(flush=False)
    assert _settle(catalog_url) == 0
    errors = []
    for _ in range(3):  # each failed open would leave its pool's connection behind
        with pytest.raises(ConfigError, match="not yet synced") as kept:
            cargohold.open(
                (tmp_path / "other").as_uri(), data_dir=data, catalog=catalog_url, **quick
            )
        errors.append(kept.value)
    assert _settle(catalog_url) == 0
    assert not _catalog_threads()
    # The data directory still opens with its own remote, its write still pending.
    with cargohold.open(first, data_dir=data, **quick) as again:
        assert again.status().pending_count == 1
        again.close(flush=False)
