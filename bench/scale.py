"""Benchmark: scale. Listings and metadata queries through the catalog against listing the
remote, and the local tier's put and get rates with 1,000 and with 1,000,000 keys held.

1. Catalog: 1,000,000 rows (as many memo records, with inputs) in PostgreSQL at
   127.0.0.1:5432. Time every page of 1,000 of a full listing (keyset pagination), and a
   metadata query (entries whose inputs match, newest 50 first).
2. Remote: list the same kind of keys from SeaweedFS a page of 1,000 at a time. Filling
   SeaweedFS with a million objects takes hours on two cores, so it holds --remote-keys
   (20,000 by default); a listing costs per page, so pages are what is compared.
3. Local tier: put and get 2,000 small objects into a Hold whose index already holds
   1,000 keys, then one that holds 1,000,000 (filled straight into its index, in one
   transaction, to save time; the timed puts and gets go through the Hold).

Targets (issue 8): local tier rates at 1,000,000 keys no worse than 0.8x those at 1,000;
a catalog page of 1,000 entries under 20 ms at p99. Run: ./dev bench scale
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import obstore
import psycopg
from obstore.store import S3Store

import cargohold
from cargohold.catalog import Catalog
from cargohold.remotes import MemoryRemote
from cargohold.remotes.s3 import S3Remote
from testsupport.servers import SeaweedFS

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def fill_catalog(url: str, remote_url: str, rows: int) -> None:
    """COPY ``rows`` memo-record rows for ``remote_url``."""
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY cargohold_objects (remote, key, size, etag, metadata, content_type, doc) FROM STDIN"
        ) as copy:
            now = time.time()
            for i in range(rows):
                digest = f"{i:064x}"
                key = f"memo/videos/v1/{digest[-2:]}/{digest}.json"
                doc = {
                    "inputs": {"prompt": f"prompt {i % 1000}", "n": i},
                    "fields": {},
                    "created": now - i,
                    "kind": "bytes",
                    "files": [],
                    "namespace": "videos",
                    "version": "v1",
                    "digest": digest,
                    "build_seconds": 1.0,
                    "format": 1,
                }
                copy.write_row(
                    (remote_url, key, 300, f"{i:032x}", "{}", "application/json", json.dumps(doc))
                )
        conn.commit()
        conn.execute("ANALYZE cargohold_objects")
        conn.commit()


def bench_catalog(rows: int) -> tuple[list[str], float]:
    name = f"cargohold_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        remote = MemoryRemote(f"scale-{uuid.uuid4().hex}")
        catalog = Catalog(url, remote)
        started = time.perf_counter()
        fill_catalog(url, remote.url, rows)
        print(
            f"filled the catalog with {rows:,} rows in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        page_ms: list[float] = []
        count = 0
        last = time.perf_counter()
        for _info in catalog.objects("memo/videos/v1/"):
            count += 1
            if count % 1000 == 0:
                now = time.perf_counter()
                page_ms.append((now - last) * 1000)
                last = now
        assert count == rows, count
        query_ms = []
        for i in range(50):
            start = time.perf_counter()
            docs = catalog.docs("memo/videos/v1/", where={"prompt": f"prompt {i * 7}"}, limit=50)
            query_ms.append((time.perf_counter() - start) * 1000)
            assert len(docs) == 50
        catalog.close()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return [
        f"| catalog, {rows:,} rows | page of 1,000 | {statistics.median(page_ms):.2f} | {pct(page_ms, 99):.2f} |",
        f"| catalog, {rows:,} rows | entries where prompt = ..., newest 50 | "
        f"{statistics.median(query_ms):.2f} | {pct(query_ms, 99):.2f} |",
    ], pct(page_ms, 99)


def bench_remote_listing(keys: int) -> list[str]:
    with SeaweedFS() as server:
        bucket = server.make_bucket("scale-list")
        store = S3Store(
            bucket,
            endpoint=server.endpoint,
            access_key_id="K",
            secret_access_key="S",
            region="us-east-1",
            client_options={"allow_http": True},
        )

        async def fill() -> None:
            gate = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                digest = f"{i:064x}"
                async with gate:
                    await obstore.put_async(
                        store, f"memo/videos/v1/{digest[-2:]}/{digest}.json", b"{}"
                    )

            await asyncio.gather(*(one(i) for i in range(keys)))

        started = time.perf_counter()
        asyncio.run(fill())
        print(
            f"filled SeaweedFS with {keys:,} objects in {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        remote = S3Remote(
            bucket, endpoint=server.endpoint, access_key_id="K", secret_access_key="S", environ={}
        )
        page_ms: list[float] = []
        count = 0
        last = time.perf_counter()
        for _ in remote.list("memo/videos/v1/"):
            count += 1
            if count % 1000 == 0:
                now = time.perf_counter()
                page_ms.append((now - last) * 1000)
                last = now
        assert count == keys
        # Without a catalog, a metadata query reads every record: time reading 1,000 of them.
        sample = [
            info.key for _, info in zip(range(1000), remote.list("memo/videos/v1/"), strict=False)
        ]
        start = time.perf_counter()
        remote.get_many(sample)
        read_ms = (time.perf_counter() - start) * 1000
    return [
        f"| SeaweedFS, {keys:,} objects | page of 1,000 | {statistics.median(page_ms):.2f} | {pct(page_ms, 99):.2f} |",
        f"| SeaweedFS, no catalog | a query reads every record: 1,000 records | {read_ms:.0f} | - |",
    ]


def local_rates(held: int, scratch: Path) -> tuple[float, float, float]:
    data_dir = scratch / f"local-{held}-{uuid.uuid4().hex[:8]}"
    hold = cargohold.open(
        f"memory://scale-local-{uuid.uuid4().hex}",
        data_dir=data_dir,
        signal_handlers=False,
        local_max_bytes="64GiB",
        max_pending_bytes="32GiB",
        drain_fraction=None,  # timed with the syncer held: no backlog limit could hold
    )
    with hold.syncer.paused():
        now = time.time()
        value = b"v" * 100
        with hold.local._index.transaction() as conn:
            conn.executemany(
                "INSERT INTO objects (key, version, size, inline, content_type, etag, modified, "
                "validated, accessed, dirty_since, deleted) "
                "VALUES (?, 1, 100, ?, 'application/octet-stream', 'e', ?, ?, ?, NULL, 0)",
                ((f"held/{i:08d}", value, now, now, now) for i in range(held)),
            )
        keys = [f"timed/{i:06d}" for i in range(2000)]
        start = time.perf_counter()
        for key in keys:
            hold.put(key, value)
        put_rate = len(keys) / (time.perf_counter() - start)
        # Cold: 2,000 keys drawn from all those held, each read once (with a million keys
        # held, most rows and index pages these touch were not read before).
        probe = random.Random(1).sample(range(held), min(2000, held))
        start = time.perf_counter()
        for i in probe:
            hold.get(f"held/{i:08d}", max_age=float("inf"))
        cold_rate = len(probe) / (time.perf_counter() - start)
        # Hot: a working set of 1,000 keys, read once untimed, then twice timed: what the
        # index itself costs when the pages an app keeps using are in memory.
        working = [f"held/{i:08d}" for i in random.Random(2).sample(range(held), 1000)]
        for key in working:
            hold.get(key, max_age=float("inf"))
        start = time.perf_counter()
        for key in working * 2:
            hold.get(key, max_age=float("inf"))
        hot_rate = 2 * len(working) / (time.perf_counter() - start)
    hold.close(flush=False)  # the timed writes need not reach the throwaway remote
    return put_rate, cold_rate, hot_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--remote-keys", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--local-only", action="store_true", help="only the local tier part")
    args = parser.parse_args()
    rows = ["| what | operation | p50 ms | p99 ms |", "| --- | --- | ---: | ---: |"]
    page_p99 = math.nan
    if not args.local_only:
        catalog_rows, page_p99 = bench_catalog(args.rows)
        rows += catalog_rows
        rows += bench_remote_listing(args.remote_keys)
        print("\n".join(rows), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        small = [local_rates(1000, Path(tmp)) for _ in range(args.repeat)]
        large = [local_rates(args.rows, Path(tmp)) for _ in range(args.repeat)]

    def med(runs: list[tuple[float, float, float]], i: int) -> float:
        return statistics.median(r[i] for r in runs)

    sp, sc, sh = med(small, 0), med(small, 1), med(small, 2)
    lp, lc, lh = med(large, 0), med(large, 1), med(large, 2)
    rows += [
        "",
        "| local tier | put/s | get/s, 1,000 hot keys | get/s, 2,000 cold keys |",
        "| --- | ---: | ---: | ---: |",
        f"| 1,000 keys held | {sp:,.0f} | {sh:,.0f} | {sc:,.0f} |",
        f"| {args.rows:,} keys held | {lp:,.0f} ({lp / sp:.2f}x) | {lh:,.0f} ({lh / sh:.2f}x) "
        f"| {lc:,.0f} ({lc / sc:.2f}x) |",
    ]
    worst = min(lp / sp, lh / sh)
    rows.append("")
    if not args.local_only:
        rows.append(
            f"target: catalog page of 1,000 under 20 ms at p99: {page_p99:.2f} ms, "
            + ("met" if page_p99 < 20 else "NOT MET")
        )
    rows += [
        f"target: local put and (hot) get rates at {args.rows:,} keys at least 0.8x those at "
        f"1,000: {worst:.2f}x, "
        + ("met" if worst >= 0.8 else "NOT MET")
        + f"; cold gets {lc / sc:.2f}x",
    ]
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
