"""Benchmark: what a SIGTERM costs a writer, and what it loses, at rates around the drain rate.

1. drain rate: a writer process putting 2 KiB values flat out through a Hold (S3 remote on
   SeaweedFS); the rate at which objects reach the remote, counted by listing it. Shown
   beside it, the rate at which a backlog of the same writes drains with no writer
   (``--basis backlog`` takes that one as the basis of the rates below instead).
2. a writer process at 25%, 100% and 400% of that rate for --seconds (10 s), then SIGTERM
   with shutdown_grace --grace (5 s): time to exit, writes acknowledged (put returned),
   how many of them are on the remote afterwards (a fresh listing, sizes compared; the
   old data directory is never opened again), and the writer's achieved throughput, as
   a fraction of the rate asked for and of the drain rate (what backpressure cost it).
   Each rate runs with the drain limit as configured by default and with it off
   (CARGOHOLD_DRAIN_FRACTION=off), the workload otherwise the same.

Targets (issue 14): 100% of acknowledged writes on the remote at every rate, exit within
the grace, and the writer keeps at least 80% of the drain rate. A writer still running at
grace + 5 s is SIGKILLed (as the platform would) and shown as hung.
Run: ./dev bench shutdown
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testsupport.proctree import ProcessTree
from testsupport.servers import SeaweedFS

VALUE_SIZE = 2048
MARGIN = 5.0

# The writer: puts VALUE_SIZE bytes at `rate` per second (0: flat out), and once each put
# returned writes its key to acked.txt (line buffered). SIGTERM goes to it as to PID 1.
WRITER = r"""
import os, sys, time
import cargohold
url, data_dir, grace, rate, size = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
hold = cargohold.open(url, data_dir=data_dir, shutdown_grace=grace)
out = open("acked.txt", "a", buffering=1)
start = time.monotonic()
i = 0
while True:
    if rate:
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    key = f"w/{i}"
    hold.put(key, os.urandom(size))
    out.write(key + "\n")
    i += 1
"""


@dataclass
class Run:
    label: str
    limit: str  # "default" or "off"
    target: float  # writes/s asked for (0: flat out)
    achieved: float = 0.0  # acknowledged writes/s before the SIGTERM
    acked: int = 0
    on_remote: int = 0
    exit_after: float | None = None  # None: hung, SIGKILLed at grace + margin
    returncode: int | None = None


def _client(server: SeaweedFS) -> Any:
    return server.client()


def listed(server: SeaweedFS, bucket: str, prefix: str) -> dict[str, int]:
    """Object name (under ``prefix``) -> size, from a fresh listing."""
    found: dict[str, int] = {}
    paginator = _client(server).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            found[item["Key"].removeprefix(f"{prefix}/")] = int(item["Size"])
    return found


def acked_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def acked_keys(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("w/")]


def _url(server: SeaweedFS, bucket: str, prefix: str) -> str:
    return (
        f"s3://{bucket}/{prefix}?endpoint={server.endpoint}"
        f"&access_key_id={server.access_key}&secret_access_key={server.secret_key}"
    )


def _start(
    server: SeaweedFS, bucket: str, workdir: Path, rate: float, grace: float, limit: str
) -> tuple[ProcessTree, str, Path]:
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    run_dir = workdir / prefix
    run_dir.mkdir()
    env = dict(os.environ)
    env.pop("CARGOHOLD_DRAIN_FRACTION", None)
    if limit == "off":
        env["CARGOHOLD_DRAIN_FRACTION"] = "off"
    command = [
        sys.executable,
        "-c",
        WRITER,
        _url(server, bucket, prefix),
        str(run_dir / "data"),
        str(grace),
        str(rate),
        str(VALUE_SIZE),
    ]
    log = (run_dir / "writer.log").open("ab")
    tree = ProcessTree(command, cwd=run_dir, env=env, stdout=log).start()
    log.close()
    return tree, prefix, run_dir / "acked.txt"


def _wait_started(tree: ProcessTree, acked: Path, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while acked_count(acked) == 0:
        if tree.returncode() is not None or time.monotonic() > deadline:
            tree.kill()
            raise RuntimeError(f"the writer wrote nothing (exit {tree.returncode()})")
        time.sleep(0.01)
    return time.monotonic()


def measure_drain_rate(server: SeaweedFS, bucket: str, workdir: Path, seconds: float) -> float:
    """Objects/s reaching the remote while a writer puts flat out (the first third of
    the time is left out: the syncer's start)."""
    tree, prefix, acked = _start(server, bucket, workdir, 0.0, 5.0, "default")
    try:
        _wait_started(tree, acked)
        time.sleep(seconds / 3)
        first_at, first = time.monotonic(), len(listed(server, bucket, prefix))
        time.sleep(seconds * 2 / 3)
        last_at, last = time.monotonic(), len(listed(server, bucket, prefix))
    finally:
        tree.kill()
    return (last - first) / (last_at - first_at)


def measure_backlog_drain(server: SeaweedFS, bucket: str, workdir: Path, count: int) -> float:
    """Objects/s of a flush of ``count`` pending writes, nothing else running."""
    import cargohold

    prefix = f"backlog-{uuid.uuid4().hex[:10]}"
    # The backlog is built with the syncer paused, so the drain limit (which would make these
    # puts wait for a syncer that is not sending) is off for this measure.
    hold = cargohold.open(
        _url(server, bucket, prefix),
        data_dir=workdir / prefix,
        signal_handlers=False,
        drain_fraction=None,
    )
    try:
        with hold.syncer.paused():
            for i in range(count):
                hold.put(f"w/{i}", os.urandom(VALUE_SIZE))
        started = time.perf_counter()
        hold.flush(600)
        return count / (time.perf_counter() - started)
    finally:
        hold.close()


def run_rate(
    server: SeaweedFS,
    bucket: str,
    workdir: Path,
    *,
    label: str,
    rate: float,
    limit: str,
    seconds: float,
    grace: float,
) -> Run:
    run = Run(label=label, limit=limit, target=rate)
    tree, prefix, acked = _start(server, bucket, workdir, rate, grace, limit)
    try:
        started = _wait_started(tree, acked)
        time.sleep(seconds)
        written = acked_count(acked)
        run.achieved = written / (time.monotonic() - started)
        signalled = time.monotonic()
        tree.signal_top(signal.SIGTERM)
        if tree.wait_gone(grace + MARGIN):
            run.exit_after = time.monotonic() - signalled
        run.returncode = tree.returncode()
    finally:
        tree.kill()
    if run.returncode is None:
        run.returncode = tree.returncode()
    keys = acked_keys(acked)
    run.acked = len(keys)
    remote = listed(server, bucket, prefix)
    run.on_remote = sum(1 for key in keys if remote.get(key) == VALUE_SIZE)
    return run


HEADER = [
    "| rate | drain limit | asked/s | achieved/s | of asked | of drain rate | acked "
    "| on the remote | exit after | exit status |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def row(run: Run, drain: float) -> str:
    exit_after = "hung" if run.exit_after is None else f"{run.exit_after:.1f} s"
    share = run.on_remote / run.acked if run.acked else 0.0
    return (
        f"| {run.label} | {run.limit} | {run.target:,.0f} | {run.achieved:,.0f} "
        f"| {run.achieved / run.target:.0%} | {run.achieved / drain:.0%} | {run.acked:,} "
        f"| {run.on_remote:,} ({share:.1%}) | {exit_after} | {run.returncode} |"
    )


def table(runs: list[Run], drain: float, grace: float) -> list[str]:
    return [
        f"Drain rate {drain:,.0f} objects/s ({VALUE_SIZE} B values, S3 on SeaweedFS). "
        f"SIGTERM after the writing, shutdown_grace {grace:g} s.",
        "",
        *HEADER,
        *(row(run, drain) for run in runs),
        "",
        "Targets: 100% of acked on the remote at every rate; exit within the grace; "
        "achieved >= 80% of the drain rate where the rate asked for is at least that.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="writing time per rate")
    parser.add_argument("--grace", type=float, default=5.0, help="shutdown_grace")
    parser.add_argument("--drain-seconds", type=float, default=9.0)
    parser.add_argument(
        "--basis",
        choices=["flat-out", "backlog"],
        default="flat-out",
        help="which drain rate the writer's rates are fractions of",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-shutdown-"))
    runs: list[Run] = []
    try:
        with SeaweedFS() as server:
            bucket = server.make_bucket("bench-shutdown")
            flat_out = measure_drain_rate(server, bucket, workdir, args.drain_seconds)
            backlog = measure_backlog_drain(server, bucket, workdir, 3000)
            drain = flat_out if args.basis == "flat-out" else backlog
            basis = (
                f"drain rate with a writer flat out: {flat_out:,.0f} objects/s; "
                f"a backlog of 3,000 with no writer: {backlog:,.0f} objects/s "
                f"(the rates below are of the {args.basis} one)"
            )
            print(basis, "", *HEADER, sep="\n", flush=True)
            if drain <= 0:
                raise SystemExit("nothing reached the remote: no drain rate to measure against")
            for label, factor in (("25%", 0.25), ("100%", 1.0), ("400%", 4.0)):
                for limit in ("default", "off"):
                    run = run_rate(
                        server,
                        bucket,
                        workdir,
                        label=label,
                        rate=drain * factor,
                        limit=limit,
                        seconds=args.seconds,
                        grace=args.grace,
                    )
                    runs.append(run)
                    print(row(run, drain), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(basis)
    print("\n".join(table(runs, drain, args.grace)))


if __name__ == "__main__":
    main()
