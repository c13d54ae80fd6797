"""The Hold on a Hugging Face bucket (``hf://buckets/``): the crash trials and an outage
mid-workload, as tests/hf/test_hf_hold.py runs them on a dataset repo."""

from __future__ import annotations

from pathlib import Path

import cargohold
from cargohold.remotes import open_remote
from tests.hf.conftest import UNLIMITED, bucket_url
from tests.reliability.crash_trials import run_trials
from testsupport.holds import assert_outage_lost_nothing, write_through_an_outage
from testsupport.hubstandin import HubStandIn


def test_crashes_lose_nothing_acknowledged(hf_env: HubStandIn) -> None:
    bucket = bucket_url(hf_env)
    results = run_trials(lambda i: f"{bucket}/trial-{i}", 8, seed=1717)
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
