"""What the generation cache keeps per entry stays bounded: its locks, and the files it
links under ``memo-files/`` once the local tier has evicted them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold.memo import SWEEP_EVERY, collect_garbage
from cargohold.remotes import MemoryRemote
from tests.conftest import s3_url
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS

KiB = 1024


@pytest.fixture
def remote_url() -> Iterator[str]:
    name = f"memo-bounds-{uuid.uuid4().hex}"
    yield f"memory://{name}"
    MemoryRemote.forget(name)


def _file_result(size: int) -> Any:
    def build(inputs: dict[str, Any], workdir: Path) -> Path:
        path = workdir / f"take_{inputs['i']}.bin"
        path.write_bytes(str(inputs["i"]).encode().ljust(size, b"."))
        return path

    return build


def _outside_the_tier(root: Path) -> int:
    """Bytes under memo-files/ that no name of the local tier's shares (a link count of
    1: the tier evicted its file, and only this name keeps the bytes on disk)."""
    folder = root / "memo-files"
    total = 0
    for path in folder.rglob("*") if folder.exists() else ():
        info = path.lstat()
        if path.is_file() and info.st_nlink == 1:
            total += info.st_size
    return total


def test_many_entries_leave_no_locks(remote_url: str, tmp_path: Path) -> None:
    with cargohold.open(remote_url, data_dir=tmp_path, signal_handlers=False) as hold:
        memo = hold.memo("locks")
        errors: list[BaseException] = []

        def build_all() -> None:
            try:
                for i in range(200):
                    memo.get_or_create({"i": i}, lambda inputs, workdir: b"value")
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=build_all) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(memo._locks) == 0
        assert len(memo.entries()) == 200


def test_memo_files_do_not_keep_what_the_tier_evicted(remote_url: str, tmp_path: Path) -> None:
    size = 16 * KiB
    bound = 256 * KiB
    with cargohold.open(
        remote_url,
        data_dir=tmp_path,
        signal_handlers=False,
        local_max_bytes=bound,
        max_pending_bytes=bound // 2,
    ) as hold:
        # No grace: the sweep may take a handed-out path at once (test_memo_files.py
        # checks that the default grace keeps each path valid through this).
        memo = hold.memo("takes", path_grace=0)
        for i in range(150):  # 2.4 MiB of results through a 256 KiB tier
            entry = memo.get_or_create({"i": i}, _file_result(size))
            assert entry.path is not None
            assert entry.path.read_bytes().startswith(str(i).encode())
            # What only memo-files/ keeps is swept every SWEEP_EVERY new folders.
            assert _outside_the_tier(hold.local.root) <= (SWEEP_EVERY + 1) * size
        folders = len(list((hold.local.root / "memo-files").iterdir()))
        assert folders <= bound // size + SWEEP_EVERY + 1
        # The syncer's upkeep evicts in the background: held, so no eviction lands between
        # the sweep and the look (it would leave a file only memo-files/ keeps, until the
        # next sweep).
        with hold.syncer.paused():
            collect_garbage(hold)  # sweeps too
            assert _outside_the_tier(hold.local.root) == 0
        # An entry whose files were swept is linked again when asked for.
        first = memo.get({"i": 0})
        assert first is not None
        assert first.path is not None
        assert first.path.read_bytes() == b"0".ljust(size, b".")
        assert first.path.name == "take_0.bin"


def test_a_directory_result_is_swept_whole(remote_url: str, tmp_path: Path) -> None:
    size = 16 * KiB
    bound = 128 * KiB
    with cargohold.open(
        remote_url,
        data_dir=tmp_path,
        signal_handlers=False,
        local_max_bytes=bound,
        max_pending_bytes=bound // 2,
    ) as hold:
        memo = hold.memo("dirs", path_grace=0)

        def build(inputs: dict[str, Any], workdir: Path) -> Path:
            for name in ("a.bin", "sub/b.bin"):
                path = workdir / "out" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(f"{inputs['i']}/{name}".encode().ljust(size, b"."))
            return workdir / "out"

        for i in range(40):
            memo.get_or_create({"i": i}, build)
        collect_garbage(hold)
        assert _outside_the_tier(hold.local.root) == 0
        again = memo.get({"i": 0})
        assert again is not None
        assert again.path is not None
        assert (again.path / "sub" / "b.bin").read_bytes().startswith(b"0/sub/b.bin")
        assert (again.path / "a.bin").read_bytes().startswith(b"0/a.bin")


def test_an_evicted_result_is_served_from_its_folder_while_the_remote_is_down(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """The tier dropped a result's file; the remote, which would give it back, answers
    503 (a fault proxy in front of SeaweedFS): the bytes memo-files/ still keeps are
    served, and once the remote is back the folder is linked to the tier again."""
    url = s3_url(seaweedfs, seaweedfs_bucket, f"memo-evicted-{uuid.uuid4().hex[:8]}")
    size = 16 * KiB
    quick = {"connect_timeout": 1, "retry_timeout": 1, "max_retries": 0}
    with FaultProxy(seaweedfs.endpoint) as proxy:
        flaky = url.replace(seaweedfs.endpoint, proxy.endpoint)
        with cargohold.open(flaky, data_dir=tmp_path, signal_handlers=False, **quick) as hold:
            built = hold.memo("takes").get_or_create({"i": 7}, _file_result(size))
            assert built.path is not None
            blob_key = f"memo/blobs/{built.files[0].sha256[:2]}/{built.files[0].sha256}"
            blob = hold.local.entry(blob_key)
            assert blob is not None
            assert hold.local.forget(blob_key, blob.version)  # as an eviction would,
            hold.local.collect_garbage()  # which removes the file once no row names it
            assert built.path.lstat().st_nlink == 1  # only memo-files/ keeps the bytes
            proxy.add(Fault(status=503, times=10**9))
            during = hold.memo("takes").get({"i": 7})  # a new Memo: nothing in memory
            assert during is not None
            assert during.path is not None
            assert during.path.read_bytes() == b"7".ljust(size, b".")
            proxy.faults.clear()
            after = hold.memo("takes").get({"i": 7})
            assert after is not None
            assert after.path is not None
            assert after.path.read_bytes() == b"7".ljust(size, b".")
            assert after.path.lstat().st_nlink > 1  # the tier's file again
