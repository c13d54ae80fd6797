"""The Hold on a dataset repo: the crash trials, an outage mid-workload and a SIGTERM flush
(as tests/hold/ runs them on S3), with the Hub stand-in as the remote."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes import open_remote
from tests.hf.conftest import LFS_DATA_WARNING, UNLIMITED, hf_url
from tests.reliability.crash_trials import run_trials
from testsupport.children import dying_with_parent
from testsupport.holds import assert_outage_lost_nothing, write_through_an_outage
from testsupport.hubstandin import Fault, HubStandIn

pytestmark = pytest.mark.filterwarnings(LFS_DATA_WARNING)


@pytest.fixture
def unlimited_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """No commit budget in these tests (child processes inherit it)."""
    monkeypatch.setenv("CARGOHOLD_HF_COMMITS_PER_HOUR", "1e9")


def test_crashes_lose_nothing_acknowledged(hf_env: HubStandIn, unlimited_commits: None) -> None:
    # Fewer trials than on S3 (each starts a Python that imports huggingface_hub); each
    # trial gets a repo of its own.
    results = run_trials(lambda i: hf_url(hf_env, f"trial-{i}"), 12, seed=4321)
    assert len(results) == 12
    assert sum(r.acknowledged for r in results) > 12, "the children wrote too little to test"


def test_writes_continue_through_an_outage_and_nothing_is_lost(
    own_hub: HubStandIn, tmp_path: Path
) -> None:
    url = hf_url(own_hub)
    hold = cargohold.open(
        url,
        data_dir=tmp_path,
        signal_handlers=False,
        connect_timeout=1,
        retry_timeout=2,
        max_retries=2,
    )
    # huggingface_hub retries its own upload requests (preupload, LFS) for up to ~25 s
    # before the syncer hears of the failure: the outage lasts until the Hold reports it.
    run = write_through_an_outage(hold, own_hub.kill, own_hub.start)
    try:
        with open_remote(url, settings=UNLIMITED) as check:
            assert_outage_lost_nothing(run, hold, check, flush=120)
    finally:
        hold.close()


CHILD = textwrap.dedent(
    """
    import logging, sys, time
    import cargohold
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    url, data_dir = sys.argv[1], sys.argv[2]
    hold = cargohold.open(url, data_dir=data_dir, shutdown_grace=30)
    for i in range(20):
        hold.put(f"s/{i}", f"value {i}".encode() * 1000)
    print("PENDING", hold.status().pending_count, flush=True)
    while True:
        time.sleep(0.1)
    """
)


def test_sigterm_flushes_pending_commits(own_hub: HubStandIn, tmp_path: Path) -> None:
    url = hf_url(own_hub)
    repo = url.split("datasets/", 1)[1]
    # Slow commits, so writes are still pending when the signal arrives.
    own_hub.inject(Fault(None, times=10_000, delay=0.5, match=lambda m, p: f"{repo}/commit/" in p))
    proc = subprocess.Popen(
        dying_with_parent([sys.executable, "-c", CHILD, url, str(tmp_path)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["PENDING"], line
    assert int(line[1]) > 0, "the test needs writes still pending when SIGTERM arrives"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, stderr
    assert "flushed" in stderr
    with open_remote(url, settings=UNLIMITED) as check:
        assert {info.key for info in check.list()} == {f"s/{i}" for i in range(20)}


def test_a_delete_from_a_stale_instance_spares_a_newer_write(
    hf_env: HubStandIn, unlimited_commits: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The "zombie DELETE" (docs/design/hub-remotes.md, 4.2): instance A holds version 1 of
    # a key; instance B writes version 2; A, which never saw version 2, deletes the key.
    # A's deletion was decided on version 1 and must not remove version 2. Before the
    # conditional delete, A's commit deleted whatever was there: version 2 was lost.
    url = hf_url(hf_env)
    a = cargohold.open(url, data_dir=tmp_path / "a", signal_handlers=False)
    b = cargohold.open(url, data_dir=tmp_path / "b", signal_handlers=False)
    try:
        a.put("notes/today.md", b"version 1", durable=True)
        assert b.get("notes/today.md") == b"version 1"
        b.put("notes/today.md", b"version 2 from B", durable=True)
        with caplog.at_level(logging.INFO, logger="cargohold.sync"):
            a.delete("notes/today.md")
            a.flush(60)
        assert a.status().pending_count == 0, "the superseded deletion is done"
        with open_remote(url, settings=UNLIMITED) as check:
            assert check.get("notes/today.md") == b"version 2 from B"
        assert any("superseded" in r.getMessage() for r in caplog.records), caplog.text
        assert a.get("notes/today.md") == b"version 2 from B"  # A now reads the newer write
        # A deletion decided on the version that is there still deletes it.
        a.delete("notes/today.md")
        a.flush(60)
        with open_remote(url, settings=UNLIMITED) as check:
            assert [info.key for info in check.list()] == []
    finally:
        a.close()
        b.close()
