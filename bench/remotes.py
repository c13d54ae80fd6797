"""Benchmark: the s3 remote against raw obstore and boto3, on one SeaweedFS, in one run.

Workloads (put, then get): 2,000 x 10 KiB, 200 x 1 MiB, 1 x 256 MiB. Small and medium
objects are read into memory; the 256 MiB one is put from a file and read into a file
(``download_many``), as an app moves large objects.

- cargohold: ``S3Remote.put_many`` / ``get_many`` with 32 requests in flight, as the syncer
             drives it.
- obstore:   raw ``obstore.put_async`` / ``get_async``, 32 in flight on one event loop.
- boto3:     ``put_object`` / ``get_object`` from 8 threads.

Each figure is the median of ``--repeat`` runs; the peers take turns within each repeat,
so drift on a noisy machine lands on all of them alike. Targets (issue 2): cargohold within 0.9x of
raw obstore, and at least 3x boto3 for small objects. Run: ``./dev bench remotes``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import obstore
from botocore.config import Config
from obstore.store import S3Store

from cargohold.remotes import ObjectInfo, Put
from cargohold.remotes.s3 import S3Remote
from testsupport.servers import SeaweedFS

MiB = 1024 * 1024
WORKLOADS = [
    ("2000 x 10 KiB", 2000, 10 * 1024),
    ("200 x 1 MiB", 200, MiB),
    ("1 x 256 MiB", 1, 256 * MiB),
]


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Peer:
    name = ""

    def put_all(self, keys: list[str], data: bytes | Path) -> None: ...
    def get_all(self, keys: list[str]) -> None: ...
    def download_all(self, keys: list[str], folder: Path) -> None: ...


class Cargohold(Peer):
    name = "cargohold"

    def __init__(self, server: SeaweedFS, bucket: str) -> None:
        self.remote = S3Remote(
            bucket,
            "",
            endpoint=server.endpoint,
            access_key_id="K",
            secret_access_key="S",
            environ={},
        )

    def put_all(self, keys: list[str], data: bytes | Path) -> None:
        results = self.remote.put_many([Put(k, data) for k in keys], concurrency=32)
        assert all(isinstance(r, ObjectInfo) for r in results), results[:3]

    def get_all(self, keys: list[str]) -> None:
        results = self.remote.get_many(keys, concurrency=32)
        assert all(isinstance(r, bytes) for r in results), results[:3]

    def download_all(self, keys: list[str], folder: Path) -> None:
        items = [(k, folder / f"{i}") for i, k in enumerate(keys)]
        results = self.remote.download_many(items, concurrency=32)
        assert all(isinstance(r, ObjectInfo) for r in results), results[:3]


class RawObstore(Peer):
    name = "obstore"

    def __init__(self, server: SeaweedFS, bucket: str) -> None:
        self.store = S3Store(
            bucket,
            endpoint=server.endpoint,
            access_key_id="K",
            secret_access_key="S",
            region="us-east-1",
            client_options={"allow_http": True},
        )

    async def _run(self, keys: list[str], op: Callable[[str], Any]) -> None:
        gate = asyncio.Semaphore(32)

        async def one(key: str) -> None:
            async with gate:
                await op(key)

        await asyncio.gather(*(one(k) for k in keys))

    def put_all(self, keys: list[str], data: bytes | Path) -> None:
        asyncio.run(self._run(keys, lambda k: obstore.put_async(self.store, k, data)))

    def get_all(self, keys: list[str]) -> None:
        async def get(key: str) -> None:
            result = await obstore.get_async(self.store, key)
            await result.bytes_async()

        asyncio.run(self._run(keys, get))

    def download_all(self, keys: list[str], folder: Path) -> None:
        async def download(key: str) -> None:
            result = await obstore.get_async(self.store, key)
            with (folder / key.replace("/", "_")).open("wb") as out:
                async for chunk in result.stream(min_chunk_size=1024 * 1024):
                    out.write(chunk)

        asyncio.run(self._run(keys, download))


class Boto3(Peer):
    name = "boto3"

    def __init__(self, server: SeaweedFS, bucket: str) -> None:
        self.bucket = bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id="K",
            aws_secret_access_key="S",
            region_name="us-east-1",
            config=Config(max_pool_connections=8, s3={"addressing_style": "path"}),
        )
        self.pool = ThreadPoolExecutor(8)

    def put_all(self, keys: list[str], data: bytes | Path) -> None:
        if isinstance(data, Path):
            list(self.pool.map(lambda k: self.client.upload_file(str(data), self.bucket, k), keys))
            return
        list(
            self.pool.map(
                lambda k: self.client.put_object(Bucket=self.bucket, Key=k, Body=data), keys
            )
        )

    def get_all(self, keys: list[str]) -> None:
        list(
            self.pool.map(
                lambda k: self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read(), keys
            )
        )

    def download_all(self, keys: list[str], folder: Path) -> None:
        list(
            self.pool.map(
                lambda k: self.client.download_file(
                    self.bucket, k, str(folder / k.replace("/", "_"))
                ),
                keys,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one repeat")
    args = parser.parse_args()
    workloads = WORKLOADS
    if args.quick:
        workloads = [
            ("200 x 10 KiB", 200, 10 * 1024),
            ("20 x 1 MiB", 20, MiB),
            ("1 x 32 MiB", 1, 32 * MiB),
        ]
        args.repeat = 1
    with SeaweedFS() as server, tempfile.TemporaryDirectory() as scratch:
        bucket = server.make_bucket("bench-remotes")
        peers: list[Peer] = [
            Cargohold(server, bucket),
            RawObstore(server, bucket),
            Boto3(server, bucket),
        ]
        warm = [f"warm/{i}" for i in range(64)]
        for peer in peers:
            peer.put_all(warm, b"w" * 1024)
            peer.get_all(warm)
        rows: list[tuple[str, str, int, dict[str, float]]] = []
        for label, count, size in workloads:
            large = size >= 64 * MiB
            data: bytes | Path = os.urandom(size)
            if large:
                source = Path(scratch) / "source.bin"
                source.write_bytes(data)  # type: ignore[arg-type]
                data = source
            for op in ("put", "get"):
                seconds: dict[str, list[float]] = {peer.name: [] for peer in peers}
                for rep in range(args.repeat):
                    for peer in peers[rep % len(peers) :] + peers[: rep % len(peers)]:
                        keys = [f"{peer.name}/{uuid.uuid4().hex}/{i}" for i in range(count)]
                        if op == "put":
                            seconds[peer.name].append(timed(lambda: peer.put_all(keys, data)))
                            continue
                        peer.put_all(keys, data)
                        if large:
                            folder = Path(tempfile.mkdtemp(dir=scratch))
                            seconds[peer.name].append(
                                timed(lambda: peer.download_all(keys, folder))
                            )
                            shutil.rmtree(folder)
                        else:
                            seconds[peer.name].append(timed(lambda: peer.get_all(keys)))
                rates = {name: count / statistics.median(s) for name, s in seconds.items()}
                rows.append((label, op, size, rates))
                print(_row(label, op, rates, size), flush=True)
    print()
    print(
        "| workload | op | cargohold obj/s | obstore obj/s | boto3 obj/s | cargohold MiB/s | vs obstore | vs boto3 |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, op, size, rates in rows:
        c, o, b = rates["cargohold"], rates["obstore"], rates["boto3"]
        print(
            f"| {label} | {op} | {c:,.1f} | {o:,.1f} | {b:,.1f} | {c * size / MiB:,.1f} | {c / o:.2f}x | {c / b:.2f}x |"
        )


def _row(label: str, op: str, rates: dict[str, float], size: int) -> str:
    parts = [
        f"{name} {rate:,.1f} obj/s ({rate * size / MiB:,.1f} MiB/s)" for name, rate in rates.items()
    ]
    ratio = rates["cargohold"] / rates["obstore"]
    return (
        f"{label:>14} {op}: "
        + ", ".join(parts)
        + f"; cargohold/obstore {ratio:.2f}x, cargohold/boto3 {rates['cargohold'] / rates['boto3']:.2f}x"
    )


if __name__ == "__main__":
    main()
