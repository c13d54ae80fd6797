"""Real server process models under write load, stopped by SIGTERM at a random moment as a
platform stops a container (issue 14, item 4).

For each model (uvicorn with one worker and with two, gunicorn with uvicorn workers with
and without ``--preload``, a Gradio app started with ``launch()``, a plain script writing
from its main thread, a ``multiprocessing.Pool`` with fork), each trial asserts:

- the process tree is gone within ``shutdown_grace`` plus a margin (else it is SIGKILLed
  and the trial counts as hung);
- the top process exits as the same app does without cargohold (``Model.exit_status``,
  checked by tests/processes/test_harness.py with no Hold):

  | model | exit after SIGTERM | why |
  | --- | --- | --- |
  | ``uvicorn app:app`` | -15 | drains, then re-raises the signal with the default action |
  | ``uvicorn --workers 2`` | 0 | the supervisor terminates and joins its workers, returns |
  | ``gunicorn -k uvicorn.workers.UvicornWorker -w 2`` | 0 | the arbiter stops gracefully |
  | the same with ``--preload`` | 0 | the same |
  | Gradio ``demo.launch()`` | -15 | launch() has no SIGTERM handler: the default action |
  | a script writing flat out | -15 | no handler of its own: the default action |
  | ``multiprocessing.Pool`` (fork) | 143 | its handler exits 143, ``with Pool`` terminates the workers |

- every write acknowledged to a client (HTTP 200, or ``put`` returned in a script) is on
  the remote with the bytes acknowledged, read with a fresh client: the old data directory
  is gone on a platform, so it is never opened again.

The normal suite runs two trials of each; ``./dev stress`` runs dozens, with graces of 0, 5
and 30 s. With a grace of 0 cargohold promises no flush at all (every write's loss window
lasts until it syncs), so those trials check only the exit and that nothing hangs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.processes.checks import report
from testsupport.servers import SeaweedFS
from testsupport.trials import MODELS, TrialResult, run_trial

GRACE = 3.0
MARGIN = 5.0  # what the servers take to stop on their own (well under 1 s with no Hold)
TRIALS = 2


@pytest.mark.parametrize("name", list(MODELS))
def test_sigterm_under_load_loses_no_acknowledged_write(
    name: str, seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    model = MODELS[name]
    results = [
        run_trial(model, seaweedfs, seaweedfs_bucket, tmp_path, grace=GRACE, margin=MARGIN)
        for _ in range(TRIALS)
    ]
    problems = report(results, model)
    assert not problems, problems


STRESS_TRIALS = int(os.environ.get("CARGOHOLD_STRESS_TRIALS", "12"))
STRESS_SECONDS = float(os.environ.get("CARGOHOLD_STRESS_SECONDS", "180"))
STRESS_MARGIN = 5.0


@pytest.mark.stress
@pytest.mark.timeout(STRESS_SECONDS + 120)
@pytest.mark.parametrize("grace", [0.0, 5.0, 30.0], ids=lambda g: f"grace{g:g}")
@pytest.mark.parametrize("name", list(MODELS))
def test_stress_sigterm_under_load(
    name: str, grace: float, seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """``CARGOHOLD_STRESS_TRIALS`` trials (default 12), stopping early once
    ``CARGOHOLD_STRESS_SECONDS`` (default 180) have gone by; at least one always runs."""
    model = MODELS[name]
    results: list[TrialResult] = []
    deadline = time.monotonic() + STRESS_SECONDS
    while len(results) < STRESS_TRIALS and (not results or time.monotonic() < deadline):
        result = run_trial(
            model, seaweedfs, seaweedfs_bucket, tmp_path, grace=grace, margin=STRESS_MARGIN
        )
        print(result.summary(), flush=True)
        results.append(result)
    problems = report(results, model, contents=grace > 0)
    assert not problems, problems
