"""Benchmark: the download cache against what apps do without it.

Against a real HTTP origin on loopback (testsupport/origin.py, started here):

1. A cached fetch (``hold.fetch(url)`` then reading the file) against a plain
   ``open(path).read()`` of the same file, at 64 KiB, 1 MiB and 16 MiB. Two figures for
   cargohold: a fetch answered from memory (the same URL asked for again within a second, as
   a server does for a popular asset), and one answered by the local tier's index (the first
   fetch of a URL in a process). Medians of --repeat runs, the peers taking turns.
2. Fifty concurrent cold fetches of one URL (a 4 MiB file the origin sends slowly, as a CDN
   miss would): from one Hold (50 threads) and from five Holds on their own data directories
   sharing one remote (10 threads each, as five instances would), against fifty threads that
   each download it with httpx into a temp file (what apps do without a cache). Counted:
   requests that reached the origin.

Targets (issue 5): a cached fetch within 1.1x of a plain read; fifty cold fetches, one origin
request. Run: ./dev bench fetch
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

import cargohold
from cargohold import fetch as fetch_module
from testsupport.origin import Origin

KiB, MiB = 1024, 1024 * 1024
SIZES = {"64 KiB": 64 * KiB, "1 MiB": MiB, "16 MiB": 16 * MiB}


def per_call(fn: Callable[[], object], seconds: float = 0.5) -> float:
    """Median microseconds per call, over batches filling about ``seconds``."""
    fn()
    batch, timings = 1, []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(timings) < 5:
        t = time.perf_counter()
        for _ in range(batch):
            fn()
        timings.append((time.perf_counter() - t) / batch)
        if timings[-1] * batch < 0.01:
            batch *= 2
    return statistics.median(timings) * 1e6


def cached_reads(origin: Origin, scratch: Path, repeat: int) -> list[str]:
    rows = [
        "| file | plain read µs | cached fetch + read µs | ratio | first fetch in a process + read µs | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    with cargohold.open(
        (scratch / "remote").as_uri(), data_dir=scratch / "cached", signal_handlers=False
    ) as hold:
        for label, size in SIZES.items():
            url = origin.put(f"/cached/{size}.bin", os.urandom(size))
            path = hold.fetch(url)

            def plain(path: Path = path) -> None:
                with open(path, "rb") as fh:
                    fh.read()

            def cached(url: str = url) -> None:
                with open(hold.fetch(url), "rb") as fh:
                    fh.read()

            def first(url: str = url) -> None:
                # Forget what this process found (its open copies and parsed URLs): the
                # index answers, as for the first fetch of the URL in a process.
                state = fetch_module._state(hold)
                state.forget_hot()
                state.targets.clear()
                with open(hold.fetch(url), "rb") as fh:
                    fh.read()

            runs: dict[str, list[float]] = {"plain": [], "cached": [], "first": []}
            peers = {"plain": plain, "cached": cached, "first": first}
            for rep in range(repeat):
                names = list(peers)
                for name in names[rep % 3 :] + names[: rep % 3]:
                    runs[name].append(per_call(peers[name]))
            p, c, f = (statistics.median(runs[n]) for n in ("plain", "cached", "first"))
            rows.append(
                f"| {label} | {p:,.1f} | {c:,.1f} | {c / p:.2f}x | {f:,.1f} | {f / p:.2f}x |"
            )
            print(rows[-1], flush=True)
    return rows


def cold_fetches(origin: Origin, scratch: Path) -> list[str]:
    rows = [
        "| 50 concurrent cold fetches of one 4 MiB URL | origin requests | seconds |",
        "| --- | ---: | ---: |",
    ]
    data = os.urandom(4 * MiB)

    def race(label: str, holds: list[cargohold.Hold] | None) -> None:
        path = f"/cold/{uuid.uuid4().hex}.bin"
        url = origin.put(path, data)
        origin.slow(path, 1.0)
        results: list[int] = []

        def naive() -> None:
            with tempfile.NamedTemporaryFile(dir=scratch) as out:
                with httpx.stream("GET", url) as response:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                results.append(out.tell())

        if holds is None:
            threads = [threading.Thread(target=naive) for _ in range(50)]
        else:
            per = 50 // len(holds)
            threads = [
                threading.Thread(target=lambda h=h: results.append(len(h.fetch(url).read_bytes())))
                for h in holds
                for _ in range(per)
            ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        assert results == [len(data)] * 50, "every fetch got the whole file"
        rows.append(f"| {label} | {origin.gets(path)} | {seconds:.2f} |")
        print(rows[-1], flush=True)

    remote = (scratch / "shared-remote").as_uri()
    race("each thread downloads it (httpx into a temp file)", None)
    with cargohold.open(remote, data_dir=scratch / "one", signal_handlers=False) as hold:
        race("cargohold: one Hold, 50 threads", [hold])
    holds = [
        cargohold.open(remote, data_dir=scratch / f"instance-{n}", signal_handlers=False)
        for n in range(5)
    ]
    try:
        race("cargohold: five Holds sharing a remote, 10 threads each", holds)
    finally:
        for hold in holds:
            hold.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with Origin() as origin, tempfile.TemporaryDirectory() as tmp:
        first = cached_reads(origin, Path(tmp), args.repeat)
        second = cold_fetches(origin, Path(tmp))
    print()
    print("\n".join(first))
    print()
    print("\n".join(second))


if __name__ == "__main__":
    main()
