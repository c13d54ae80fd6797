"""Benchmark: the Hold against its peers, every figure in one run.

1. put and get of 1 KiB, 100 KiB and 1 MiB values: Hold (write-back, S3 remote on
   SeaweedFS), diskcache.Cache, and a plain temp file + rename (the hand-made baseline).
   The Hold is measured twice: its write path alone (the syncer held until the timing
   ends, as when the remote is on another machine and its uploads cost this one little),
   and with the syncer uploading to SeaweedFS during the timing, on the same two cores.
2. put latency p50/p99: Hold.put against a direct S3 PUT (obstore) to the same SeaweedFS.
3. drain: 10,000 small pending writes flushed to S3, against raw obstore async (32 in
   flight) putting the same objects; restore: hydrate of the same 10,000 into an empty
   Hold, against raw obstore async getting them.

Targets: put >= 1.5x diskcache at 1 KiB and >= 0.9x a temp file + rename at 1 MiB (issue
14, restated when the put log was removed; issue 3 had 2x and 3x diskcache); get >=
diskcache at every size; put p99 >= 50x below a direct S3 PUT; drain and restore >= 0.9x
raw obstore.
Figures are medians of --repeat runs with the peers taking turns. Run: ./dev bench hold
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diskcache
import obstore
from obstore.store import S3Store

import cargohold
from testsupport.servers import SeaweedFS

KiB = 1024
SIZES = [("1 KiB", KiB, 3000), ("100 KiB", 100 * KiB, 600), ("1 MiB", 1024 * KiB, 150)]


def per_second(count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


class TempFiles:
    """What apps do by hand: write a temp file, rename it over the key's path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def set(self, key: str, value: bytes) -> None:
        path = self.root / key
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        tmp.write_bytes(value)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()


def bench_put_get(
    server: SeaweedFS, bucket: str, repeat: int, scratch: Path, *, syncing: bool
) -> list[str]:
    """Hold, diskcache and temp files take turns. With ``syncing``, the Hold's syncer
    uploads to SeaweedFS while it is timed; otherwise it is held until the timing ends."""
    rows = []
    for label, size, count in SIZES:
        value = os.urandom(size)
        names = ("hold", "diskcache", "tempfile")
        puts: dict[str, list[float]] = {n: [] for n in names}
        gets: dict[str, list[float]] = {n: [] for n in names}
        for rep in range(repeat):
            base = Path(tempfile.mkdtemp(dir=scratch))
            hold = cargohold.open(
                _url(server, bucket, f"pg-{uuid.uuid4().hex[:8]}"),
                data_dir=base / "hold",
                signal_handlers=False,
                local_max_bytes="8GiB",
                max_pending_bytes="4GiB",
                # The write path is timed with the syncer held: no backlog limit could hold.
                drain_fraction=None,
            )
            cache = diskcache.Cache(str(base / "diskcache"))
            (base / "files").mkdir()
            files = TempFiles(base / "files")
            peers: list[tuple[str, Callable[[str, bytes], object], Callable[[str], object]]] = [
                ("hold", hold.put, hold.get),
                ("diskcache", cache.set, cache.get),
                ("tempfile", files.set, files.get),
            ]
            order = peers[rep % 3 :] + peers[: rep % 3]
            keys = [f"k{i}" for i in range(count)]
            with contextlib.nullcontext() if syncing else hold.syncer.paused():
                for name, put, _ in order:
                    puts[name].append(
                        per_second(count, lambda put=put: [put(k, value) for k in keys])
                    )
                for name, _, get in order:
                    gets[name].append(per_second(count, lambda get=get: [get(k) for k in keys]))
            hold.close(timeout=300)
            cache.close()
            shutil.rmtree(base, ignore_errors=True)
        p = {n: statistics.median(v) for n, v in puts.items()}
        g = {n: statistics.median(v) for n, v in gets.items()}
        for op, r in (("put", p), ("get", g)):
            rows.append(
                f"| {op} {label} | {r['hold']:,.0f} | {r['diskcache']:,.0f} | {r['tempfile']:,.0f} "
                f"| {r['hold'] / r['diskcache']:.2f}x | {r['hold'] / r['tempfile']:.2f}x |"
            )
        print(rows[-2], rows[-1], sep="\n", flush=True)
    return rows


def bench_latency(server: SeaweedFS, bucket: str, scratch: Path) -> str:
    url = _url(server, bucket, f"lat-{uuid.uuid4().hex[:8]}")
    store = _store(server, bucket)
    value = os.urandom(10 * KiB)
    hold_ms: list[float] = []
    s3_ms: list[float] = []
    with cargohold.open(url, data_dir=scratch / "latency", signal_handlers=False) as hold:
        for i in range(1000):
            start = time.perf_counter()
            hold.put(f"l/{i}", value)
            hold_ms.append((time.perf_counter() - start) * 1000)
            if i % 2 == 0:  # direct PUTs interleaved, at half the count
                start = time.perf_counter()
                obstore.put(store, f"direct/{uuid.uuid4().hex}", value)
                s3_ms.append((time.perf_counter() - start) * 1000)
        hold.flush(120)
    h50, h99 = percentile(hold_ms, 50), percentile(hold_ms, 99)
    s50, s99 = percentile(s3_ms, 50), percentile(s3_ms, 99)
    row = (
        f"| put 10 KiB latency | Hold p50 {h50:.3f} ms, p99 {h99:.3f} ms | direct S3 PUT "
        f"p50 {s50:.2f} ms, p99 {s99:.2f} ms | p99 {s99 / h99:.0f}x lower |"
    )
    print(row, flush=True)
    return row


def bench_drain_restore(server: SeaweedFS, bucket: str, repeat: int, scratch: Path) -> list[str]:
    count = 10_000
    value = os.urandom(KiB)
    drain: dict[str, list[float]] = {"hold": [], "obstore": []}
    restore: dict[str, list[float]] = {"hold": [], "obstore": []}
    for rep in range(repeat):
        prefix = f"dr-{uuid.uuid4().hex[:8]}"
        url = _url(server, bucket, prefix)
        keys = [f"d/{i:05d}" for i in range(count)]
        store = _store(server, bucket, f"raw-{prefix}")

        def hold_drain() -> None:
            with cargohold.open(
                url, data_dir=scratch / f"drain-{rep}", signal_handlers=False, drain_fraction=None
            ) as hold:
                hold.syncer._stop.set()  # write all 10,000 first, then time the drain alone
                hold.syncer._thread.join()  # type: ignore[union-attr]
                for key in keys:
                    hold.put(key, value)
                hold.syncer._stop.clear()
                hold.syncer._thread = None
                start = time.perf_counter()
                hold.syncer.start()
                hold.flush(600)
                drain["hold"].append(count / (time.perf_counter() - start))

        def obstore_drain() -> None:
            drain["obstore"].append(
                per_second(count, lambda: asyncio.run(_raw_puts(store, keys, value)))
            )

        def hold_restore() -> None:
            with cargohold.open(
                url, data_dir=scratch / f"restore-{rep}", signal_handlers=False
            ) as hold:
                restore["hold"].append(per_second(count, lambda: hold.hydrate()))

        def obstore_restore() -> None:
            restore["obstore"].append(
                per_second(count, lambda: asyncio.run(_raw_gets(store, keys)))
            )

        for step in [hold_drain, obstore_drain] if rep % 2 == 0 else [obstore_drain, hold_drain]:
            step()
        for step in (
            [hold_restore, obstore_restore] if rep % 2 == 0 else [obstore_restore, hold_restore]
        ):
            step()
    d = {n: statistics.median(v) for n, v in drain.items()}
    r = {n: statistics.median(v) for n, v in restore.items()}
    rows = [
        f"| drain 10,000 x 1 KiB | {d['hold']:,.0f}/s | obstore {d['obstore']:,.0f}/s "
        f"| {d['hold'] / d['obstore']:.2f}x |",
        f"| restore 10,000 x 1 KiB | {r['hold']:,.0f}/s | obstore {r['obstore']:,.0f}/s "
        f"| {r['hold'] / r['obstore']:.2f}x |",
    ]
    print(*rows, sep="\n", flush=True)
    return rows


async def _raw_puts(store: S3Store, keys: list[str], value: bytes) -> None:
    gate = asyncio.Semaphore(32)

    async def one(key: str) -> None:
        async with gate:
            await obstore.put_async(store, key, value)

    await asyncio.gather(*(one(k) for k in keys))


async def _raw_gets(store: S3Store, keys: list[str]) -> None:
    gate = asyncio.Semaphore(32)

    async def one(key: str) -> None:
        async with gate:
            result = await obstore.get_async(store, key)
            await result.bytes_async()

    await asyncio.gather(*(one(k) for k in keys))


def _url(server: SeaweedFS, bucket: str, prefix: str) -> str:
    return (
        f"s3://{bucket}/{prefix}?endpoint={server.endpoint}"
        f"&access_key_id={server.access_key}&secret_access_key={server.secret_key}"
    )


def _store(server: SeaweedFS, bucket: str, prefix: str | None = None) -> S3Store:
    return S3Store(
        bucket,
        prefix=prefix,
        endpoint=server.endpoint,
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        region="us-east-1",
        client_options={"allow_http": True},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["putget", "latency", "drain"], default=None)
    args = parser.parse_args()
    rows: list[str] = []
    with SeaweedFS() as server, tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        bucket = server.make_bucket("bench-hold")
        header = [
            "| op | Hold/s | diskcache/s | temp file + rename/s | vs diskcache | vs temp file |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        if args.only in (None, "putget"):
            rows += ["Write path (the syncer held while timed):", "", *header]
            rows += bench_put_get(server, bucket, args.repeat, scratch, syncing=False)
            rows += [
                "",
                "With the syncer uploading to SeaweedFS on the same two cores:",
                "",
                *header,
            ]
            rows += bench_put_get(server, bucket, args.repeat, scratch, syncing=True)
        if args.only in (None, "latency"):
            rows.append("")
            rows.append(bench_latency(server, bucket, scratch))
        if args.only in (None, "drain"):
            rows.append("")
            rows += bench_drain_restore(server, bucket, args.repeat, scratch)
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
