"""The Hold on a Hugging Face bucket (``hf://buckets/``): the crash trials and an outage
mid-workload, as tests/hf/test_hf_hold.py runs them on a dataset repo, and the bucket's
change feed dropping another instance's stale copies."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes import open_remote
from tests.hf.conftest import UNLIMITED, bucket_url
from tests.reliability.crash_trials import run_trials
from testsupport.holds import assert_outage_lost_nothing, write_through_an_outage
from testsupport.hubstandin import HubStandIn


def test_crashes_lose_nothing_acknowledged(hf_env: HubStandIn) -> None:
    bucket = bucket_url(hf_env)
    # One trial at a time: the stand-in's Xet store is hf_xet's local CAS, a folder whose
    # dedup database one process at a time can open ("Database already open. Cannot
    # acquire lock" for a second one). The Hub's CAS is a server: no such limit there.
    # The stand-in reads that store too, so a child's batches never land while it lives:
    # what it acknowledged reaches the bucket when this process reopens its data directory.
    results = run_trials(lambda i: f"{bucket}/trial-{i}", 8, seed=1717, workers=1)
    assert len(results) == 8
    assert sum(r.acknowledged for r in results) > 8, "the children wrote too little to test"


def test_writes_continue_through_an_outage_and_nothing_is_lost(
    own_hub: HubStandIn, tmp_path: Path
) -> None:
    url = bucket_url(own_hub)
    hold = cargohold.open(url, data_dir=tmp_path, signal_handlers=False)
    # huggingface_hub retries every bucket request for about 25 s before the syncer hears
    # of the failure: the outage lasts until the Hold reports it.
    run = write_through_an_outage(hold, own_hub.kill, own_hub.start, at_most=90)
    try:
        with open_remote(url, settings=UNLIMITED) as check:
            assert_outage_lost_nothing(run, hold, check, flush=180)
    finally:
        hold.close()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # the feed is asynchronous
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_the_change_feed_drops_another_instances_stale_copy(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    url = bucket_url(hf_env, "app")
    bucket = url.split("buckets/", 1)[1].rsplit("/", 1)[0]
    a = cargohold.open(url, data_dir=tmp_path / "a", signal_handlers=False)
    b = cargohold.open(url, data_dir=tmp_path / "b", signal_handlers=False)
    try:
        _until(lambda: hf_env.buckets.following(bucket) == 2, "the Holds never followed")
        a.put("profile.json", b"v1", metadata={"v": "1"})
        a.flush(60)
        assert b.get("profile.json", max_age=3600) == b"v1"
        a.put("profile.json", b"v2")
        a.flush(60)
        _until(lambda: b.local.entry("profile.json") is None, "b never heard of the write")
        assert b.get("profile.json", max_age=3600) == b"v2", "not served stale until max_age"
        assert b.head("profile.json").metadata == {}
        a.delete("profile.json")
        a.flush(60)
        _until(lambda: b.local.entry("profile.json") is None, "b never heard of the delete")
        with pytest.raises(cargohold.NotFoundError):
            b.get("profile.json", max_age=3600)
    finally:
        a.close()
        b.close()
    _until(lambda: hf_env.buckets.following(bucket) == 0, "closed Holds still follow")


def test_without_the_feed_max_age_decides(own_hub: HubStandIn, tmp_path: Path) -> None:
    own_hub.buckets.feed = False  # a Hub that does not serve it: the followers give up
    url = bucket_url(own_hub)
    a = cargohold.open(url, data_dir=tmp_path / "a", signal_handlers=False)
    b = cargohold.open(url, data_dir=tmp_path / "b", signal_handlers=False)
    try:
        a.put("k", b"v1")
        a.flush(60)
        assert b.get("k", max_age=3600) == b"v1"
        a.put("k", b"v2")
        a.flush(60)
        assert b.get("k", max_age=3600) == b"v1", "a copy younger than max_age is served"
        assert b.get("k", max_age=0) == b"v2", "an older one is checked against the bucket"
    finally:
        a.close()
        b.close()
