"""persist_dir: a folder restored on start, its changes and deletions pushed."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold
from cargohold.remotes import FileRemote


def _open(remote_url: str, data_dir: Path) -> Hold:
    return cargohold.open(remote_url, data_dir=data_dir, signal_handlers=False)


def test_outputs_survive_a_restart_on_an_empty_disk(tmp_path: Path) -> None:
    remote_url = (tmp_path / "remote").as_uri()
    first_disk = tmp_path / "disk1"
    outputs = first_disk / "outputs"
    with _open(remote_url, first_disk / "data") as hold:
        persisted = hold.persist_dir(outputs, interval=3600)
        (outputs / "take_1.mp4").write_bytes(b"video one" * 10_000)
        (outputs / "sub").mkdir()
        (outputs / "sub" / "notes.txt").write_text("hello")
        hold.flush(30)
        assert persisted.prefix == "outputs/"
    remote = FileRemote(tmp_path / "remote")
    assert remote.get("outputs/take_1.mp4") == b"video one" * 10_000
    assert remote.head("outputs/sub/notes.txt").metadata == {"md5": _md5(b"hello")}

    second_disk = tmp_path / "disk2"  # a new container: nothing local
    with _open(remote_url, second_disk / "data") as hold:
        persisted = hold.persist_dir(second_disk / "outputs", interval=3600)
        assert persisted.restored == 2
        assert (second_disk / "outputs" / "take_1.mp4").read_bytes() == b"video one" * 10_000
        assert (second_disk / "outputs" / "sub" / "notes.txt").read_text() == "hello"


def test_deletions_and_changes_propagate(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    folder = tmp_path / "work"
    with _open(remote.url, tmp_path / "data") as hold:
        persisted = hold.persist_dir(folder, prefix="state", interval=3600)
        (folder / "a.json").write_text('{"v": 1}')
        (folder / "b.json").write_text("{}")
        hold.flush(30)
        (folder / "a.json").write_text('{"v": 2}')
        (folder / "b.json").unlink()
        report = persisted.scan()
        assert (report.pushed, report.deleted) == (1, 1)
        hold.flush(30)
        assert remote.get("state/a.json") == b'{"v": 2}'
        assert [i.key for i in remote.list("state/")] == ["state/a.json"]


def test_a_touched_but_identical_file_is_not_pushed_again(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    with _open(f"memory://persist-{uuid.uuid4().hex}", tmp_path / "data") as hold:
        persisted = hold.persist_dir(folder, interval=3600)
        (folder / "x.bin").write_bytes(b"same")
        assert persisted.scan().pushed == 1
        os.utime(folder / "x.bin", ns=(1, 1))  # new mtime, same bytes
        report = persisted.scan()
        assert (report.pushed, report.unchanged) == (0, 1)


def test_restore_keeps_identical_local_files_and_replaces_stale_ones(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    remote.put("out/same.txt", b"same", metadata={"md5": _md5(b"same")})
    remote.put("out/stale.txt", b"from the remote")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "same.txt").write_bytes(b"same")
    (folder / "stale.txt").write_bytes(b"old local copy")
    (folder / "local-only.txt").write_bytes(b"new here")
    with _open(remote.url, tmp_path / "data") as hold:
        persisted = hold.persist_dir(folder, interval=3600)
        assert persisted.restored == 1
        assert (folder / "stale.txt").read_bytes() == b"from the remote"
        hold.flush(30)
    assert remote.get("out/local-only.txt") == b"new here", "files only here are pushed"


def test_names_that_cannot_be_keys_are_skipped_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    with _open(f"memory://persist-{uuid.uuid4().hex}", tmp_path / "data") as hold:
        persisted = hold.persist_dir(folder, interval=3600)
        (folder / "back\\slash.txt").write_text("x")
        (folder / "fine.txt").write_text("y")
        report = persisted.scan()
        assert report.pushed == 1
        assert "back\\slash.txt" in report.skipped
        assert "backslash" in report.skipped["back\\slash.txt"]


def test_the_final_changes_are_pushed_on_close(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    folder = tmp_path / "late"
    hold = _open(remote.url, tmp_path / "data")
    hold.persist_dir(folder, interval=3600)
    (folder / "last-second.txt").write_text("written just before shutdown")
    hold.close()
    assert remote.get("late/last-second.txt") == b"written just before shutdown"


def _md5(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_a_folder_this_user_cannot_create_is_permission_denied_with_its_fix(
    tmp_path: Path,
) -> None:
    # /sys refuses every write, even root's: a read-only folder on any machine.
    folder = Path(f"/sys/cargohold-outputs-{uuid.uuid4().hex[:8]}")
    with _open((tmp_path / "remote").as_uri(), tmp_path / "data") as hold:
        with pytest.raises(cargohold.PermissionDenied) as caught:
            hold.persist_dir(folder, interval=3600)
        assert isinstance(caught.value, PermissionError)
        assert str(folder) in str(caught.value)
        assert caught.value.hint is not None
        assert "persist_dir() a folder this user can create and write" in caught.value.hint
        hold.put("still/works", b"yes")  # the Hold is unharmed
        assert hold.get("still/works") == b"yes"
