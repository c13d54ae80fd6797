"""A write someone waits for goes ahead of the backlog.

A durable put (and every write during a stop, which is write-through) returns once the
remote has it. Before, the syncer sent it after every older pending change: behind a
backlog of thousands (a grace of 0 switches the backlog limit off), a server's writes
during a stop each waited for the whole backlog, kept their connections open and held the
server's exit past the grace (the uvicorn --workers 2 stress trials at grace 0, on a
loaded machine). Now the syncer sends a waited-for change first, in whichever process
syncs the data directory.

The remote is SeaweedFS behind the fault proxy, which delays every PUT a little, so that
the backlog takes a while to drain; what is checked is how much of the backlog was on the
remote when the durable put returned, never a time."""

from __future__ import annotations

import uuid
from pathlib import Path

import cargohold
from cargohold.remotes.s3 import S3Remote
from tests.conftest import proxied_s3_url
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

BACKLOG = 200


def _open(url: str, data_dir: Path) -> cargohold.Hold:
    return cargohold.open(
        url,
        data_dir=data_dir,
        signal_handlers=False,
        sync_batch=8,
        sync_concurrency=1,  # one PUT at a time: the backlog drains slowly through the delay
        drain_fraction=None,
        max_pending_bytes="1GiB",
    )


def _slow_remote(seaweedfs: SeaweedFS, bucket: str, proxy: FaultProxy) -> str:
    proxy.add(Fault(status=None, times=10**9, delay=0.03, match=lambda m, p: m == "PUT"))
    return proxied_s3_url(proxy, seaweedfs, bucket, prefix=f"first-{uuid.uuid4().hex[:8]}")


def _on_remote(url: str) -> set[str]:
    return {info.key for info in S3Remote.from_url(url).list()}


def _assert_sent_before_the_backlog(url: str) -> None:
    """Once the durable put returned: it is on the remote, most of the older backlog not."""
    on_remote = _on_remote(url)
    assert "waited-for" in on_remote
    sent_before = len(on_remote - {"waited-for"})
    assert sent_before < BACKLOG // 2, f"{sent_before} older changes went first"


def test_a_durable_put_is_sent_before_the_backlog(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, seaweedfs_proxy: FaultProxy, tmp_path: Path
) -> None:
    url = _slow_remote(seaweedfs, seaweedfs_bucket, seaweedfs_proxy)
    with _open(url, tmp_path) as hold:
        with hold.syncer.paused():
            for i in range(BACKLOG):
                hold.put(f"backlog/{i:04d}", b"older")
        hold.put("waited-for", b"now", durable=True)
        _assert_sent_before_the_backlog(url)
        hold.flush(300)
    assert len(_on_remote(url)) == BACKLOG + 1


def test_a_process_that_stands_by_has_its_durable_put_sent_first_by_the_syncing_one(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, seaweedfs_proxy: FaultProxy, tmp_path: Path
) -> None:
    url = _slow_remote(seaweedfs, seaweedfs_bucket, seaweedfs_proxy)
    with _open(url, tmp_path) as syncing:
        with syncing.syncer.paused():
            for i in range(BACKLOG):
                syncing.put(f"backlog/{i:04d}", b"older")
        # A second Hold on the same data directory cannot take its sync.lock (a flock is
        # per open file, as between processes): it stands by, as another worker would.
        with _open(url, tmp_path) as standing_by:
            assert not standing_by.syncer.state.active
            standing_by.put("waited-for", b"now", durable=True)
            _assert_sent_before_the_backlog(url)
        syncing.flush(300)
    assert len(_on_remote(url)) == BACKLOG + 1
