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

A second table puts the two Storage Bucket remotes beside the ``s3`` remote, each on its
stand-in: ``hf-s3://`` through testsupport/s3gateway.py in front of the same SeaweedFS,
``hf://buckets/`` on testsupport/hubstandin.py, whose bytes go through hf_xet into a local
CAS folder. Every key gets bytes of its own (Xet would deduplicate repeated ones). The
stand-ins are not the Hub: they run in this process, on the same two cores, so the table
gives ratios to the ``s3`` remote only, never the Hub's speed. ``--part`` picks a table.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
import obstore
from botocore.config import Config
from obstore.store import S3Store

from cargohold import Settings
from cargohold.remotes import ObjectInfo, Put, Remote, open_remote
from cargohold.remotes.s3 import S3Remote
from testsupport.hubstandin import HubStandIn
from testsupport.s3gateway import S3Gateway
from testsupport.servers import SeaweedFS

MiB = 1024 * 1024
WORKLOADS = [
    ("2000 x 10 KiB", 2000, 10 * 1024),
    ("200 x 1 MiB", 200, MiB),
    ("1 x 256 MiB", 1, 256 * MiB),
]
QUICK_WORKLOADS = [
    ("200 x 10 KiB", 200, 10 * 1024),
    ("20 x 1 MiB", 20, MiB),
    ("1 x 32 MiB", 1, 32 * MiB),
]
#: Smaller than the s3 table's: the Hub stand-in checks each upload by reading it back
#: through hf_xet, in this process.
HUB_WORKLOADS = [
    ("500 x 10 KiB", 500, 10 * 1024),
    ("50 x 1 MiB", 50, MiB),
    ("1 x 64 MiB", 1, 64 * MiB),
]
QUICK_HUB_WORKLOADS = [
    ("100 x 10 KiB", 100, 10 * 1024),
    ("10 x 1 MiB", 10, MiB),
    ("1 x 16 MiB", 1, 16 * MiB),
]
HUB_NOTE = (
    "hf-s3:// and hf://buckets/ run on stand-ins in this process, not on the Hub: "
    "read the ratios to the s3 remote, not the rates"
)


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
    parser.add_argument(
        "--part",
        choices=["all", "s3", "hub"],
        default="all",
        help="s3: the s3 remote against obstore and boto3; hub: the bucket remotes",
    )
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    with SeaweedFS() as server, tempfile.TemporaryDirectory() as scratch:
        if args.part in ("all", "s3"):
            s3_table(
                server, Path(scratch), QUICK_WORKLOADS if args.quick else WORKLOADS, args.repeat
            )
        if args.part in ("all", "hub"):
            workloads = QUICK_HUB_WORKLOADS if args.quick else HUB_WORKLOADS
            hub_table(server, Path(scratch), workloads, args.repeat)


def s3_table(
    server: SeaweedFS, scratch: Path, workloads: list[tuple[str, int, int]], repeat: int
) -> None:
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
            source = scratch / "source.bin"
            source.write_bytes(data)  # type: ignore[arg-type]
            data = source
        for op in ("put", "get"):
            seconds: dict[str, list[float]] = {peer.name: [] for peer in peers}
            for rep in range(repeat):
                for peer in peers[rep % len(peers) :] + peers[: rep % len(peers)]:
                    keys = [f"{peer.name}/{uuid.uuid4().hex}/{i}" for i in range(count)]
                    if op == "put":
                        seconds[peer.name].append(timed(lambda: peer.put_all(keys, data)))
                        continue
                    peer.put_all(keys, data)
                    if large:
                        folder = Path(tempfile.mkdtemp(dir=scratch))
                        seconds[peer.name].append(timed(lambda: peer.download_all(keys, folder)))
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
    print()


def hub_table(
    server: SeaweedFS, scratch: Path, workloads: list[tuple[str, int, int]], repeat: int
) -> None:
    """The bucket remotes on their stand-ins beside the s3 remote on SeaweedFS alone."""
    print(HUB_NOTE, flush=True)
    bucket = server.make_bucket("bench-buckets")
    keys = f"access_key_id={server.access_key}&secret_access_key={server.secret_key}"
    with S3Gateway(server.endpoint) as gateway, HubStandIn() as hub:
        gateway.own("bench", bucket)
        name = hub.buckets.create_bucket("tester/bench")  # the stand-in's token is tester's
        # huggingface_hub reads HF_TOKEN here; the endpoint goes in the URL. Xet stays on:
        # a bucket's bytes always go through it.
        os.environ.update({k: v for k, v in hub.env().items() if k != "HF_HUB_DISABLE_XET"})
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # one bar per batch otherwise
        settings = Settings.load({})
        urls = {
            "s3": f"s3://{bucket}/s3?endpoint={server.endpoint}&{keys}",
            "hf-bucket": f"hf-s3://bench/{bucket}/gw?endpoint="
            f"{gateway.namespace_endpoint('bench')}&{keys}",
            "hf-buckets": f"hf://buckets/{name}?endpoint={hub.endpoint}",
        }
        peers = {peer: open_remote(url, settings=settings) for peer, url in urls.items()}
        try:
            for remote in peers.values():  # connections, tokens and the Xet session made
                warm = [f"warm/{i}" for i in range(16)]
                _check(remote.put_many([Put(k, os.urandom(1024)) for k in warm]))
                remote.get_many(warm)
            rows = [
                row for workload in workloads for row in _hub_rows(peers, scratch, workload, repeat)
            ]
        finally:
            for remote in peers.values():
                remote.close()
        assert gateway.leaks == [], gateway.leaks
        assert gateway.refusals == [], gateway.refusals
    print()
    print(f"{HUB_NOTE}.")
    print()
    print(
        "| workload | op | s3 obj/s | hf-s3:// obj/s | hf://buckets/ obj/s "
        "| hf-s3:// vs s3 | hf://buckets/ vs s3 |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for label, op, rates in rows:
        s, g, b = rates["s3"], rates["hf-bucket"], rates["hf-buckets"]
        print(f"| {label} | {op} | {s:,.1f} | {g:,.1f} | {b:,.1f} | {g / s:.2f}x | {b / s:.2f}x |")


def _hub_rows(
    peers: dict[str, Remote], scratch: Path, workload: tuple[str, int, int], repeat: int
) -> list[tuple[str, str, dict[str, float]]]:
    """Put, then get (into files for a large object), each peer with bytes of its own."""
    label, count, size = workload
    large = size >= 16 * MiB
    names = list(peers)
    seconds: dict[str, dict[str, list[float]]] = {
        op: {n: [] for n in names} for op in ("put", "get")
    }
    for rep in range(repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            remote = peers[name]
            keys = [f"{uuid.uuid4().hex}/{i}" for i in range(count)]
            blob = os.urandom(count * size)  # fresh bytes: nothing for Xet to deduplicate
            data: list[bytes | Path] = [blob[i * size : (i + 1) * size] for i in range(count)]
            if large:
                source = scratch / f"source-{name}.bin"
                source.write_bytes(blob)
                data = [source]
            puts = [Put(k, d) for k, d in zip(keys, data, strict=True)]
            seconds["put"][name].append(timed(lambda: _check(remote.put_many(puts))))
            if large:
                folder = Path(tempfile.mkdtemp(dir=scratch))
                items = [(k, folder / str(i)) for i, k in enumerate(keys)]
                seconds["get"][name].append(timed(lambda: _check(remote.download_many(items))))
                assert (folder / "0").read_bytes() == blob
                shutil.rmtree(folder)
            else:
                got: list[object] = []
                seconds["get"][name].append(timed(lambda: got.extend(remote.get_many(keys))))
                assert got == data, f"{name} read back other bytes"
    rows = []
    for op, by_peer in seconds.items():
        rates = {name: count / statistics.median(s) for name, s in by_peer.items()}
        rows.append((label, op, rates))
        parts = ", ".join(
            f"{n} {r:,.1f} obj/s ({r * size / MiB:,.1f} MiB/s)" for n, r in rates.items()
        )
        print(f"{label:>14} {op}: {parts}", flush=True)
    return rows


def _check(results: Sequence[object]) -> None:
    assert all(isinstance(r, ObjectInfo) for r in results), results[:3]


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
