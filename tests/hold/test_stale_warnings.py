"""A remote that cannot confirm cached copies: the Hold serves them unchecked and warns
once a minute per key, and what it remembers of those warnings stays bounded."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

import cargohold
from cargohold.hold import STALE_WARNED_MAX
from tests.conftest import s3_url
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

QUICK = {"connect_timeout": 1, "retry_timeout": 1, "max_retries": 0, "signal_handlers": False}


def test_warnings_for_many_keys_stay_bounded(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """HEADs answered 503 by a fault proxy in front of SeaweedFS (a fault the real server
    cannot be made to produce)."""
    url = s3_url(seaweedfs, seaweedfs_bucket, f"stale-{uuid.uuid4().hex[:8]}")
    count = STALE_WARNED_MAX + 60
    keys = [f"k/{i:04d}" for i in range(count)]
    with FaultProxy(seaweedfs.endpoint) as proxy:
        flaky = url.replace(seaweedfs.endpoint, proxy.endpoint)
        with cargohold.open(flaky, data_dir=tmp_path / "data", **QUICK) as hold:
            for key in keys:
                hold.put(key, key.encode())
            hold.flush(60)  # now clean copies, which a read checks after max_age
            proxy.add(Fault(status=503, times=10**9, match=lambda method, path: method == "HEAD"))
            with caplog.at_level(logging.WARNING, logger="cargohold"):
                for key in keys:
                    assert hold.get(key, max_age=0) == key.encode()
                warned = [r for r in caplog.records if "unchecked" in r.getMessage()]
                assert len(warned) == count  # one per key
                assert len(hold._stale_warned) <= STALE_WARNED_MAX
                caplog.clear()
                for key in keys[-10:]:  # the latest are remembered: no second warning
                    hold.get(key, max_age=0)
                assert not [r for r in caplog.records if "unchecked" in r.getMessage()]
            proxy.faults.clear()
