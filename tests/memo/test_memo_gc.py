"""Garbage collection of memo result files never deletes on an incomplete view: a record
it cannot read (the remote failing, or a corrupt record) means it deletes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold
from cargohold.errors import RemoteError, RemoteUnavailable
from cargohold.memo import collect_garbage
from cargohold.remotes import FileRemote
from tests.conftest import s3_url
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

QUICK = {"connect_timeout": 1, "retry_timeout": 1, "max_retries": 1, "signal_handlers": False}


def _build(value: bytes):  # type: ignore[no-untyped-def]
    return lambda inputs, workdir: value


def _three_entries(hold: Hold) -> str:
    """Entries 1 and 2 in use, entry 3 deleted (its file unused); the record key of 1."""
    memo = hold.memo("gc", version="v1")
    for i in (1, 2, 3):
        memo.get_or_create({"i": i}, _build(f"result {i}".encode() * 50))
    memo.delete({"i": 3})
    hold.flush(30)
    return memo._record_key(memo.digest({"i": 1}))


def _blob_count(hold: Hold) -> int:
    return sum(1 for _ in hold.list("memo/blobs/"))


def test_gc_on_a_flaky_remote_deletes_nothing(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """One record's GET fails (503 from a fault proxy in front of SeaweedFS, a fault the
    real server cannot be made to produce): the collector must not treat the result file
    that record claims as unused."""
    url = s3_url(seaweedfs, seaweedfs_bucket, f"gc-{uuid.uuid4().hex[:8]}")
    with cargohold.open(url, data_dir=tmp_path / "writer", **QUICK) as writer:
        record_key = _three_entries(writer)
        assert _blob_count(writer) == 3
    with FaultProxy(seaweedfs.endpoint) as proxy:
        proxy.add(
            Fault(
                status=503,
                times=1_000_000,
                match=lambda method, path: (
                    method == "GET" and path.split("?")[0].endswith(record_key)
                ),
            )
        )
        flaky_url = url.replace(seaweedfs.endpoint, proxy.endpoint)
        # A fresh instance (an empty local tier, as `cargohold gc` on another machine).
        with cargohold.open(flaky_url, data_dir=tmp_path / "gc", **QUICK) as gc_hold:
            with pytest.raises(RemoteUnavailable) as raised:
                collect_garbage(gc_hold, older_than=0)
            assert "deleted nothing" in str(raised.value)
            assert raised.value.key == record_key
            assert any(status == 503 for _, _, status in proxy.requests)
            proxy.faults.clear()
            assert _blob_count(gc_hold) == 3
            # With the remote answering again, only entry 3's file goes.
            assert collect_garbage(gc_hold, older_than=0) == 1
            gc_hold.flush(30)
    with cargohold.open(url, data_dir=tmp_path / "reader", **QUICK) as reader:
        memo = reader.memo("gc", version="v1")
        assert memo.get({"i": 1}).value == b"result 1" * 50  # type: ignore[union-attr]
        assert memo.get({"i": 2}).value == b"result 2" * 50  # type: ignore[union-attr]
        assert _blob_count(reader) == 2


def test_gc_with_a_corrupt_record_deletes_nothing(tmp_path: Path) -> None:
    """A file remote where one record's bytes are not a record any more."""
    remote_dir = tmp_path / "remote"
    with cargohold.open(FileRemote(remote_dir), data_dir=tmp_path / "writer", **QUICK) as writer:
        record_key = _three_entries(writer)
    (remote_dir / record_key).write_bytes(b"{not json")
    with cargohold.open(FileRemote(remote_dir), data_dir=tmp_path / "gc", **QUICK) as gc_hold:
        with pytest.raises(RemoteError) as raised:
            collect_garbage(gc_hold, older_than=0)
        assert "deleted nothing" in str(raised.value)
        assert record_key in str(raised.value)
        assert _blob_count(gc_hold) == 3
    # `cargohold gc` runs its other collectors, then fails with that error.
    env = {
        **os.environ,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "cli"),
        "CARGOHOLD_REMOTE": remote_dir.as_uri(),
    }
    out = subprocess.run(
        [sys.executable, "-m", "cargohold", "gc", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "deleted nothing" in out.stderr
    assert record_key in out.stderr
    assert json.loads(out.stdout)["memo_files"] == 0
    with cargohold.open(FileRemote(remote_dir), data_dir=tmp_path / "gc", **QUICK) as gc_hold:
        assert _blob_count(gc_hold) == 3
        # The operator removes the broken record; then the collector runs again.
        gc_hold.delete(record_key)
        assert collect_garbage(gc_hold, older_than=0) == 2  # entries 1 (record gone) and 3
        gc_hold.flush(30)
        assert _blob_count(gc_hold) == 1
