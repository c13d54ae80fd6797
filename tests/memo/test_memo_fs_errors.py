"""Filesystem errors the generation cache can meet come out as cargohold errors with
their fix: PermissionDenied for a place this user cannot write, StorageFull for a full
disk (a real ENOSPC from /dev/full), never a bare OSError."""

from __future__ import annotations

import errno
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold import CargoholdError, Hold, PermissionDenied, StorageFull
from cargohold.errors import from_os_error
from cargohold.remotes import MemoryRemote


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"memo-fs-{uuid.uuid4().hex}"
    with cargohold.open(f"memory://{name}", data_dir=tmp_path / "data", signal_handlers=False) as h:
        yield h
    MemoryRemote.forget(name)


def test_export_into_a_folder_this_user_cannot_write(hold: Hold) -> None:
    memo = hold.memo("tts", version="v1")
    memo.get_or_create({"text": "hi"}, lambda i, w: b"audio")
    target = Path(f"/sys/cargohold-seed-{uuid.uuid4().hex[:8]}")  # refuses even root
    with pytest.raises(PermissionDenied) as caught:
        memo.export(target)
    assert str(target) in str(caught.value)
    assert caught.value.hint == "export into a folder this user can write, on a disk with room"


def test_a_seed_entry_that_cannot_be_read_names_the_file_and_the_fix(
    hold: Hold, tmp_path: Path
) -> None:
    seed = tmp_path / "seed"
    memo = hold.memo("tts", version="v1", seed_dir=seed)
    broken = seed / "tts" / "v1" / memo.digest({"text": "hi"}) / "entry.json"
    broken.mkdir(parents=True)  # a folder where the record should be: EISDIR
    with pytest.raises(CargoholdError) as caught:
        memo.get({"text": "hi"})
    assert str(broken) in str(caught.value)
    assert caught.value.hint is not None
    assert "CARGOHOLD_MEMO_SEED_DIR" in caught.value.hint


def test_a_full_disk_is_storage_full_with_the_callers_fix() -> None:
    with pytest.raises(OSError) as caught, open("/dev/full", "wb", buffering=0) as full:
        full.write(b"x")
    assert caught.value.errno == errno.ENOSPC
    error = from_os_error(caught.value, "write the entry", fix="free space in the data directory")
    assert isinstance(error, StorageFull)
    assert isinstance(error, OSError)
    assert str(error).startswith("cannot write the entry: the disk is full")
    assert error.hint == "free space in the data directory"
