"""A send's time is taken after its rows were read: a row written just before the syncer
read its batch is part of that send, never "a newer version written after it".

Before, the syncer took its clock, then read the batch. A put landing between the two (a
busy machine: the app's main thread writing while the syncer thread starts a round) went
out in the batch with a ``modified`` later than the send's time; when that send got no
answer (the remote down), the key was held back ``resend_after`` (15 s) behind its own
send, past any shutdown grace. CI saw it as a key missing from the remote after a stop.

The interleaving is forced by wrapping the local tier's batch query (the one stand-in here:
a real scheduler makes it only now and then); the remote and its outage are real
(SeaweedFS behind the fault proxy)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cargohold
from cargohold.remotes.s3 import S3Remote
from tests.conftest import proxied_s3_url
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS


def test_a_row_written_as_its_batch_is_read_does_not_wait_behind_its_own_send(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, seaweedfs_proxy: FaultProxy, tmp_path: Path
) -> None:
    down = Fault(status=503, times=10**6, match=lambda method, path: method == "PUT")
    seaweedfs_proxy.add(down)
    url = proxied_s3_url(
        seaweedfs_proxy, seaweedfs, seaweedfs_bucket, prefix=f"send-time-{uuid.uuid4().hex[:8]}"
    )
    hold = cargohold.open(
        url,
        data_dir=tmp_path,
        signal_handlers=False,
        resend_after=600,  # a key held back behind a send would miss any flush below
        retry_timeout=1,
        max_retries=1,
        drain_fraction=None,
    )
    with hold:
        local = hold.local
        read_batch = local.pending
        raced = threading.Event()

        def pending_after_a_put(*args: Any, **kwargs: Any) -> Any:
            if not raced.is_set():
                raced.set()
                # The app's put lands after the syncer took its clock for this round and
                # before it reads the rows: it goes out in this very batch.
                hold.put("late", b"written as the batch is read")
            return read_batch(*args, **kwargs)

        local.pending = pending_after_a_put  # type: ignore[method-assign]
        hold.put("first", b"the put that wakes the syncer")
        assert raced.wait(30)
        for _ in range(1200):  # until the batch with both keys went unanswered
            if hold.syncer.failing:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the syncer never sent a batch to the remote that is down")
        down.times = 0
        hold.flush(30)
    assert {info.key for info in S3Remote.from_url(url).list()} == {"first", "late"}
