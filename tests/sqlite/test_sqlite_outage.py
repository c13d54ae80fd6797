"""A remote outage in the middle of replication, on SeaweedFS behind the fault proxy
(a mock, and it says so: no real server goes down on demand and comes back): the app
keeps committing, nothing is checkpointed away unshipped, and once the remote answers
again replication catches up and nothing is lost."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.errors import CargoholdError
from cargohold.sqlite import restore
from tests.conftest import proxied_s3_url
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.make_bucket("sqlite-outage")


@pytest.fixture
def proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs.endpoint) as running:
        yield running


def test_an_outage_mid_stream_loses_nothing(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, proxy: FaultProxy
) -> None:
    url = proxied_s3_url(proxy, seaweedfs, bucket)
    with cargohold.open(
        url,
        data_dir=tmp_path / "data",
        signal_handlers=False,
        max_retries=1,
        retry_timeout=1,
        lease_ttl=30,
    ) as hold:
        path = hold.sqlite("app.db", interval=3600)  # only flush ships: no race with a thread
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v TEXT)")
        con.commit()
        hold.flush()
        outage = Fault(status=503, times=10**9)  # every request, until it is over
        proxy.add(outage)
        for n in range(1, 601):  # more than a checkpoint's worth of frames
            with con:
                con.execute("INSERT INTO t VALUES (?, ?)", (n, "z" * 3000))
        with pytest.raises(CargoholdError):
            hold.flush()
        status = hold.sqlite_status("app.db")
        assert status.pending_transactions == 600
        assert status.last_error is not None
        outage.times = 0  # the remote is back
        hold.flush()
        status = hold.sqlite_status("app.db")
        assert status.pending_transactions == 0
        assert status.last_error is None
        con.close()
    dest = tmp_path / "restored.db"
    with cargohold.open_remote(url) as remote:
        restore(remote, "app.db", dest)
    check = sqlite3.connect(dest)
    assert [n for (n,) in check.execute("SELECT n FROM t ORDER BY n")] == list(range(1, 601))
    check.close()
