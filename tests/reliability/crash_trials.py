"""Crash trials: a child process writes through a Hold and is SIGKILLed at a random moment.

After each kill the data directory is opened again (as a restarted container on the same
disk would): every write the child saw acknowledged must read back, and after a flush it
must be on the remote. A write that was under way when the child died may or may not be
there, but nothing may be half there.

The test suite runs 50 trials (tests/hold/test_crash.py). For more:

    .venv/bin/python -m tests.reliability.crash_trials --trials 500
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from testsupport.children import dying_with_parent

CHILD = r"""
import hashlib, random, sys
import cargohold
url, data_dir, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
hold = cargohold.open(url, data_dir=data_dir, signal_handlers=False)
print("READY", flush=True)
i = 0
while True:
    i += 1
    key = f"crash/{rng.randrange(40)}"
    if rng.random() < 0.15:
        print(f"START delete {key}", flush=True)
        hold.delete(key)
        print(f"ACK delete {key}", flush=True)
        continue
    size = rng.choice([0, 10, 1000, 70_000, 300_000])
    value = hashlib.sha256(f"{seed}-{i}".encode()).digest() * (size // 32 + 1)
    value = value[:size]
    digest = hashlib.sha256(value).hexdigest()
    print(f"START put {key} {digest}", flush=True)
    hold.put(key, value, metadata={"n": str(i)})
    print(f"ACK put {key} {digest}", flush=True)
"""


@dataclass
class TrialResult:
    acknowledged: int
    in_flight: int
    checked: int


def _expected(lines: list[str]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """From the child's log: the last acknowledged state of each key (None: deleted),
    and the operation that was started but not acknowledged when it died."""
    acked: dict[str, str | None] = {}
    started: dict[str, str | None] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or parts[0] not in ("START", "ACK"):
            continue
        op, key = parts[1], parts[2]
        value = parts[3] if op == "put" else None
        if parts[0] == "START":
            started = {key: value}
        else:
            acked[key] = value
            started = {}
    return acked, started


def run_trial(url: str, seed: int, *, kill_after: float, workdir: Path) -> TrialResult:
    import cargohold

    data_dir = workdir / f"trial-{seed}"
    child = subprocess.Popen(
        dying_with_parent([sys.executable, "-c", CHILD, url, str(data_dir), str(seed)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    ready = child.stdout.readline().strip()
    if ready != "READY":
        child.kill()
        raise AssertionError(f"child did not start: {ready!r}")
    time.sleep(kill_after)  # the random moment of the crash
    child.send_signal(signal.SIGKILL)
    rest, _ = child.communicate(timeout=30)
    acked, in_flight = _expected(rest.splitlines())

    # resend_after: how long a change the dead child was sending waits before it is sent
    # again (its request may still land). Users get 15 s; 2 s keeps 50 trials quick and
    # is well above how late SeaweedFS finishes a dead client's request on this machine.
    with cargohold.open(url, data_dir=data_dir, signal_handlers=False, resend_after=2) as hold:
        for key, digest in acked.items():
            allowed = {digest}
            if key in in_flight:
                allowed.add(in_flight[key])
            _check(hold, key, allowed)
        hold.flush(timeout=120)
        for key, digest in acked.items():
            allowed = {digest} | ({in_flight[key]} if key in in_flight else set())
            history = [line for line in rest.splitlines() if f" {key} " in line + " "]
            _check_remote(hold.remote, key, allowed, history)
    shutil.rmtree(data_dir, ignore_errors=True)
    return TrialResult(len(acked), len(in_flight), len(acked))


def _check(hold: object, key: str, allowed: set[str | None]) -> None:
    from cargohold import Hold, NotFoundError

    assert isinstance(hold, Hold)
    try:
        got: str | None = hashlib.sha256(hold.get(key, max_age=float("inf"))).hexdigest()
    except NotFoundError:
        got = None
    assert got in allowed, f"{key}: read {got}, expected one of {allowed}"


def _check_remote(remote: object, key: str, allowed: set[str | None], history: list[str]) -> None:
    from cargohold import NotFoundError
    from cargohold.remotes import Remote

    assert isinstance(remote, Remote)
    try:
        got: str | None = hashlib.sha256(remote.get(key)).hexdigest()
    except NotFoundError:
        got = None
    assert got in allowed, (
        f"{key} on the remote: {got}, expected one of {allowed}; the child did: {history[-6:]}"
    )


def run_trials(
    url_for: Callable[[int], str], trials: int, *, seed: int = 0, workers: int = 4
) -> list[TrialResult]:
    """``url_for(i)`` gives the remote URL for trial ``i`` (a fresh prefix each time).

    Trials run ``workers`` at a time: each is independent (its own prefix and data
    directory), and most of a trial is waiting (for the child, or for ``resend_after``)."""
    rng = random.Random(seed)
    delays = [rng.uniform(0.0, 0.4) for _ in range(trials)]
    with (
        tempfile.TemporaryDirectory(prefix="cargohold-crash-") as tmp,
        ThreadPoolExecutor(workers) as pool,
    ):
        futures = [
            pool.submit(
                run_trial, url_for(i), seed * 100_000 + i, kill_after=delays[i], workdir=Path(tmp)
            )
            for i in range(trials)
        ]
        return [future.result() for future in futures]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    from testsupport.servers import SeaweedFS

    with SeaweedFS() as server:
        bucket = server.make_bucket("crash-trials")
        keys = f"&access_key_id={server.access_key}&secret_access_key={server.secret_key}"
        results = run_trials(
            lambda i: f"s3://{bucket}/t{args.seed}-{i}?endpoint={server.endpoint}{keys}",
            args.trials,
            seed=args.seed,
        )
    acked = sum(r.acknowledged for r in results)
    print(
        f"{len(results)} trials, seed {args.seed}: {acked} acknowledged writes checked, none lost"
    )


if __name__ == "__main__":
    main()
