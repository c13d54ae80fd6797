"""SQLite replication on the Hugging Face remotes (the stand-in): a follower is not refused
on a bucket's native API (only a writer is, tests/hf/test_hf_buckets.py); on a dataset repo
the replicator's request budget is half the commit budget."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import cargohold
from cargohold.errors import NotFoundError
from cargohold.keys import internal_prefix
from cargohold.sqlite import restore
from tests.hf.conftest import LFS_DATA_WARNING, bucket_url, hf_url
from testsupport.hubstandin import HubStandIn


def test_a_follower_is_not_refused_on_a_bucket_and_writes_nothing(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    # A writer is refused there (tests/hf/test_hf_buckets.py): its fence needs conditional
    # writes. A follower only reads: it gets as far as finding nothing to follow.
    url = bucket_url(hf_env, "app")
    with cargohold.open(url, data_dir=tmp_path, signal_handlers=False) as hold:
        with pytest.raises(NotFoundError, match="no replicated database"):
            hold.sqlite("app.db", mode="follow")
        assert list(hold.remote.list(internal_prefix("sqlite/"))) == []


@pytest.mark.filterwarnings(LFS_DATA_WARNING)
def test_on_a_dataset_repo_the_budget_is_half_the_commit_budget(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    url = hf_url(hf_env)
    # 600 commits an hour: the replicator takes 300, five a minute, one every 12 s.
    with cargohold.open(
        url, data_dir=tmp_path / "a", signal_handlers=False, hf_commits_per_hour=600
    ) as hold:
        path = hold.sqlite("app.db")  # interval 1 s: the budget's 12 s is the longer
        assert hold.sqlite_status("app.db").loss_window_seconds == 12
        con = sqlite3.connect(path)
        with con:
            con.execute("CREATE TABLE t (n INTEGER)")
            con.execute("INSERT INTO t VALUES (1)")
        con.close()
    dest = tmp_path / "restored.db"
    with cargohold.open_remote(url) as remote:  # close() shipped it, whatever the budget
        restore(remote, "app.db", dest)
    check = sqlite3.connect(dest)
    assert check.execute("SELECT n FROM t").fetchall() == [(1,)]
    check.close()
