"""Benchmark: memoized-call hits, cargohold's generation cache against diskcache and joblib.

For a function returning a small int and one returning 1 MiB of bytes: fill each cache with
200 entries, then time hits (calls/s, and p50/p99 per call). cargohold runs on the embedded
kind of remote (a file remote on the same disk), so every peer is local; hits never touch the
remote anyway. Medians of --repeat runs, peers taking turns.

Targets (issue 4): at least diskcache's hits/s at both sizes, and at least 3x joblib's.
For the 1 MiB result the run also times the floor every hit pays: a plain
``open(path, "rb").read()`` of 200 files of 1 MiB, taken in the same order.
Run: ./dev bench memo
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diskcache
import joblib

import cargohold

ENTRIES = 200
HITS = 2000
MiB = 1024 * 1024
PAYLOAD = os.urandom(MiB)


def small(n: int) -> int:
    return n * 7


def large(n: int) -> bytes:
    return PAYLOAD[:-8] + n.to_bytes(8, "big")


def measure(fn: Callable[[int], object], hits: int) -> tuple[float, float, float]:
    for n in range(ENTRIES):  # fill
        fn(n)
    latencies = []
    start = time.perf_counter()
    for i in range(hits):
        t = time.perf_counter()
        fn(i % ENTRIES)
        latencies.append(time.perf_counter() - t)
    rate = hits / (time.perf_counter() - start)
    latencies.sort()
    return rate, latencies[len(latencies) // 2] * 1e6, latencies[int(len(latencies) * 0.99)] * 1e6


def plain_reads(scratch: Path) -> Callable[[int], object]:
    """Reading the n-th of ENTRIES files of 1 MiB: what a hit of a 1 MiB result costs at
    least, wherever the bytes come from (unless they are kept in memory)."""
    folder = scratch / "plain"
    folder.mkdir()
    paths = [folder / str(n) for n in range(ENTRIES)]

    def read(n: int) -> bytes:
        if not paths[n].exists():  # the fill: the first call of each n writes the file
            paths[n].write_bytes(large(n))
        with open(paths[n], "rb") as fh:
            return fh.read()

    return read


def peers(scratch: Path, kind: str) -> dict[str, Callable[[int], object]]:
    target = small if kind == "int" else large
    hold = cargohold.open(
        (scratch / "remote").as_uri(), data_dir=scratch / "hold", signal_handlers=False
    )
    cache = diskcache.Cache(str(scratch / "diskcache"))
    memory = joblib.Memory(str(scratch / "joblib"), verbose=0)
    return {
        "cargohold": hold.memoize(namespace=f"bench-{kind}")(target),
        "diskcache": cache.memoize(name=f"bench-{kind}")(target),
        "joblib": memory.cache(target),
        **({"plain read": plain_reads(scratch)} if kind == "1 MiB" else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = [
        "| result | cargohold hits/s | diskcache hits/s | joblib hits/s | vs diskcache | vs joblib "
        "| cargohold p50 / p99 µs | diskcache p50 / p99 µs | joblib p50 / p99 µs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    floor = ""
    for kind, hits in (("int", HITS), ("1 MiB", HITS // 4)):
        results: dict[str, list[tuple[float, float, float]]] = {}
        for rep in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                fns = peers(Path(tmp), kind)
                names = list(fns)
                for name in names[rep % len(names) :] + names[: rep % len(names)]:
                    results.setdefault(name, []).append(measure(fns[name], hits))
        med = {
            name: tuple(statistics.median(r[i] for r in runs) for i in range(3))
            for name, runs in results.items()
        }
        c, d, j = med["cargohold"], med["diskcache"], med["joblib"]
        rows.append(
            f"| {kind} | {c[0]:,.0f} | {d[0]:,.0f} | {j[0]:,.0f} | {c[0] / d[0]:.2f}x "
            f"| {c[0] / j[0]:.1f}x | {c[1]:.0f} / {c[2]:.0f} | {d[1]:.0f} / {d[2]:.0f} "
            f"| {j[1]:.0f} / {j[2]:.0f} |"
        )
        print(rows[-1], flush=True)
        if "plain read" in med:
            r = med["plain read"]
            floor = (
                f"1 MiB floor: a plain read of a 1 MiB file {r[0]:,.0f}/s (p50 {r[1]:.0f} µs), "
                f"{r[0] / j[0]:.1f}x joblib's hits; 3x joblib would be {3 * j[0]:,.0f} hits/s"
            )
            print(floor, flush=True)
    print()
    print("\n".join(rows))
    if floor:
        print(f"\n{floor}")


if __name__ == "__main__":
    main()
