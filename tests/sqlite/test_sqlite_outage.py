"""A remote outage in the middle of replication, on SeaweedFS behind the fault proxy
(a mock, and it says so: no real server goes down on demand and comes back): the app
keeps committing, nothing is checkpointed away unshipped, and once the remote answers
again replication catches up and nothing is lost. And a remote that refuses deletes:
retention fails no flush, and catches up once deletes are allowed again."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.errors import CargoholdError
from cargohold.keys import internal_prefix
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


def open_proxied(url: str, tmp_path: Path, **settings: float) -> cargohold.Hold:
    """A Hold on the proxied remote that gives up on a request quickly."""
    return cargohold.open(
        url,
        data_dir=tmp_path / "data",
        signal_handlers=False,
        max_retries=1,
        retry_timeout=1,
        **settings,
    )


def restored_rows(url: str, tmp_path: Path) -> list[int]:
    dest = tmp_path / "restored.db"
    with cargohold.open_remote(url) as remote:
        restore(remote, "app.db", dest)
    check = sqlite3.connect(dest)
    try:
        return [n for (n,) in check.execute("SELECT n FROM t ORDER BY n")]
    finally:
        check.close()


def test_an_outage_mid_stream_loses_nothing(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, proxy: FaultProxy
) -> None:
    url = proxied_s3_url(proxy, seaweedfs, bucket)
    with open_proxied(url, tmp_path, lease_ttl=30) as hold:
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
    assert restored_rows(url, tmp_path) == list(range(1, 601))


_ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


def test_a_remote_refusing_deletes_fails_no_flush_and_retention_catches_up(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, proxy: FaultProxy
) -> None:
    url = proxied_s3_url(proxy, seaweedfs, bucket)
    refused = Fault(
        status=403,
        times=10**9,
        body=_ACCESS_DENIED,
        match=lambda method, path: method == "DELETE" or "delete" in path,
    )
    proxy.add(refused)
    with open_proxied(url, tmp_path, sqlite_retention=0, sqlite_snapshot_segments=2) as hold:
        path = hold.sqlite("app.db", interval=3600)
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        con.commit()
        for n in range(1, 9):
            with con:
                con.execute("INSERT INTO t VALUES (?)", (n,))
            hold.flush()  # ships; the deletes after each snapshot are refused, not raised
        assert refused.taken.is_set()
        assert hold.sqlite_status("app.db").last_error is None
        records = internal_prefix("sqlite/app.db/g/")
        assert len(list(hold.remote.list(records))) > 2 + 2  # nothing could be deleted
        refused.times = 0  # deletes allowed again: the next snapshot's retention runs
        for n in range(9, 13):
            with con:
                con.execute("INSERT INTO t VALUES (?)", (n,))
            hold.flush()
        con.close()
        assert len(list(hold.remote.list(records))) <= 2 + 2
    assert restored_rows(url, tmp_path) == list(range(1, 13))
