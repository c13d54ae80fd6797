"""The trial harness itself: a failure of a process-model trial must come from cargohold,
never from the harness. With the ``direct`` store (each write sent to the remote before it
is acknowledged, no Hold) nothing may be missing, and each model exits as documented."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.processes.checks import report
from testsupport.proctree import group_members
from testsupport.servers import SeaweedFS
from testsupport.trials import MODELS, run_trial

# Two in the normal suite (a server with its load client; forked workers reporting by
# file); every model in the stress run.
QUICK = ["uvicorn", "multiprocessing-pool-fork"]


def _direct_trials(name: str, trials: int, server: SeaweedFS, bucket: str, tmp_path: Path) -> None:
    model = MODELS[name]
    results = [
        run_trial(model, server, bucket, tmp_path, grace=3.0, store="direct", min_acked=5)
        for _ in range(trials)
    ]
    for result in results:
        print(result.summary())
    problems = report(results, model)
    assert not problems, problems


@pytest.mark.parametrize("name", QUICK)
def test_without_a_hold_nothing_acknowledged_is_missing(
    name: str, seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    _direct_trials(name, 1, seaweedfs, seaweedfs_bucket, tmp_path)


@pytest.mark.stress
@pytest.mark.parametrize("name", list(MODELS))
def test_stress_without_a_hold_nothing_acknowledged_is_missing(
    name: str, seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    _direct_trials(name, 4, seaweedfs, seaweedfs_bucket, tmp_path)


STARTS_A_TREE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from testsupport.proctree import ProcessTree
    # A top process with a child of its own (as a server master and its worker).
    tree = ProcessTree(
        [sys.executable, "-c", "import subprocess, sys, time; "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
         "time.sleep(600)"],
        cwd=Path("."), env={"PATH": "/usr/bin:/bin"},
    ).start()
    print(tree.pid, flush=True)
    time.sleep(600)
    """
)


def test_a_tree_dies_with_the_test_that_started_it(tmp_path: Path) -> None:
    """A test process killed outright (a pytest timeout, a CI runner's SIGKILL) leaves
    nothing of a tree behind, grandchildren included."""
    test = subprocess.Popen(
        [sys.executable, "-c", STARTS_A_TREE],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    pgid = 0
    try:
        assert test.stdout is not None
        pgid = int(test.stdout.readline())
        deadline = time.monotonic() + 30
        while len(group_members(pgid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group_members(pgid)) == 2  # the top process and its child
        test.send_signal(signal.SIGKILL)
        test.wait(10)
        deadline = time.monotonic() + 10
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group_members(pgid) == []
    finally:
        if test.poll() is None:
            test.kill()
        test.communicate()
        if pgid and group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)
