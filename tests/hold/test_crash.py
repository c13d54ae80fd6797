"""SIGKILL at random moments loses no acknowledged write (tests/reliability/crash_trials.py)."""

from __future__ import annotations

from tests.conftest import s3_url
from tests.reliability.crash_trials import run_trials
from testsupport.servers import SeaweedFS


def test_50_crashes_lose_nothing_acknowledged(seaweedfs: SeaweedFS, seaweedfs_bucket: str) -> None:
    results = run_trials(lambda i: s3_url(seaweedfs, seaweedfs_bucket), 50, seed=1234)
    assert len(results) == 50
    assert sum(r.acknowledged for r in results) > 50, "the children wrote too little to test"
