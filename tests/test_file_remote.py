"""What only the file remote has to get right: its records, other tools' files, full and
read-only disks, and locking across processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cargohold import InvalidInput, NotFoundError, PermissionDenied, StorageFull
from cargohold.remotes import FileRemote, ObjectInfo, Put
from cargohold.remotes._base import PutRequest
from testsupport.children import dying_with_parent


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (needs root, as on these machines and their CI)."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *options)), "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_objects_are_plain_files(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path)
    remote.put("videos/a.mp4", b"movie")
    assert (tmp_path / "videos" / "a.mp4").read_bytes() == b"movie"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".cargohold", "videos"]


def test_files_from_other_tools_are_objects(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "report.pdf").write_bytes(b"%PDF-1.7")
    remote = FileRemote(tmp_path)
    head = remote.head("docs/report.pdf")
    assert (head.size, head.etag, head.metadata) == (8, md5(b"%PDF-1.7"), {})
    assert head.content_type == "application/pdf"
    assert [i.key for i in remote.list()] == ["docs/report.pdf"]
    assert remote.put("docs/report.pdf", b"new", if_match=md5(b"%PDF-1.7")).etag == md5(b"new")


def test_a_file_changed_behind_our_back_gets_a_true_etag(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path)
    remote.put("notes.txt", b"ours", metadata={"author": "app"})
    (tmp_path / "notes.txt").write_bytes(b"edited by hand")
    head = remote.head("notes.txt")
    assert head.etag == md5(b"edited by hand")
    assert head.metadata == {}, "metadata written for other bytes must not be claimed"
    assert remote.get("notes.txt") == b"edited by hand"


def test_a_crash_between_the_renames_keeps_the_new_metadata(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path)
    remote.put("doc.json", b"v1", metadata={"v": "1"})
    record_path = _record_path(tmp_path, "doc.json")
    record = json.loads(record_path.read_bytes())
    # What a writer leaves if it dies after renaming the bytes, before the final record.
    record["next"] = {
        "etag": md5(b"v2"),
        "metadata": {"v": "2"},
        "content_type": "application/json",
    }
    record_path.write_text(json.dumps(record))
    (tmp_path / "doc.json").write_bytes(b"v2")
    head = remote.head("doc.json")
    assert (head.etag, head.metadata) == (md5(b"v2"), {"v": "2"})
    # ... and a crash before the rename keeps the old object with its metadata.
    record = json.loads(record_path.read_bytes())
    record["next"] = {"etag": md5(b"v3"), "metadata": {"v": "3"}, "content_type": None}
    record_path.write_text(json.dumps(record))
    assert remote.head("doc.json").metadata == {"v": "2"}


def test_a_failed_upload_leaves_nothing(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path)
    remote.put("k", b"old")

    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("the upload source broke")
            return b"x" * 1024

    with pytest.raises(Exception, match="broke"):
        remote.put("k", Broken())  # type: ignore[arg-type]
    assert remote.get("k") == b"old"
    assert list((tmp_path / ".cargohold" / "tmp").iterdir()) == []


def test_full_disk_is_storage_full_and_keeps_the_old_object(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small") as root:
        remote = FileRemote(root)
        remote.put("keep", b"safe")
        with pytest.raises(StorageFull, match="disk is full") as err:
            remote.put("big", b"x" * (2 * 1024 * 1024))
        assert isinstance(err.value, OSError)
        with pytest.raises(StorageFull):
            remote.put("keep", b"y" * (2 * 1024 * 1024))
        assert remote.get("keep") == b"safe"
        with pytest.raises(NotFoundError):
            remote.head("big")
        assert list((root / ".cargohold" / "tmp").iterdir()) == []


def test_read_only_volume_is_permission_denied(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro") as root:
        with pytest.raises(PermissionDenied, match="read-only") as err:
            FileRemote(root).put("k", b"v")
        assert "can write" in str(err.value)


def test_unwritable_directory_is_permission_denied() -> None:
    # /sys refuses new files even to root.
    with pytest.raises(PermissionDenied, match="permission denied"):
        FileRemote("/sys/cargohold-test").put("k", b"v")


def test_reading_an_empty_remote_needs_no_writes(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "not-yet")
    assert list(remote.list()) == []
    remote.delete("nothing")
    with pytest.raises(NotFoundError):
        remote.get("nothing")
    assert not (tmp_path / "not-yet").exists()


def test_a_folder_is_not_an_object(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path)
    remote.put("a/b", b"x")
    with pytest.raises(NotFoundError):
        remote.get("a")
    remote.delete("a")  # a folder is not deleted by its name
    assert remote.get("a/b") == b"x"
    with pytest.raises(InvalidInput):
        remote.put("a", b"y")


def test_create_only_across_processes(tmp_path: Path) -> None:
    code = f"""
import sys
from cargohold.remotes import FileRemote
from cargohold import AlreadyExists
try:
    FileRemote({str(tmp_path)!r}).put("claim", sys.argv[1].encode(), mode="create")
    print("won")
except AlreadyExists:
    print("lost")
"""
    procs = [
        subprocess.Popen(
            dying_with_parent([sys.executable, "-c", code, f"p{i}"]),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(results) == ["lost"] * 7 + ["won"]
    winner = results.index("won")
    assert FileRemote(tmp_path).get("claim") == f"p{winner}".encode()


def test_batches_run_at_most_four_operations_at_once(tmp_path: Path) -> None:
    """More threads than that only contend for fsync and for the GIL the app needs (put
    latency while syncing); each object still lands, in order."""
    in_flight = 0
    most = 0
    guard = threading.Lock()

    class Counting(FileRemote):
        def _put(self, request: PutRequest) -> ObjectInfo:
            nonlocal in_flight, most
            with guard:
                in_flight += 1
                most = max(most, in_flight)
            try:
                time.sleep(0.01)  # long enough for every thread the pool has to start one
                return super()._put(request)
            finally:
                with guard:
                    in_flight -= 1

    remote = Counting(tmp_path)
    puts = [Put(f"k/{i}", f"value {i}".encode()) for i in range(40)]
    results = remote.put_many(puts, concurrency=32)
    assert [r.key for r in results] == [f"k/{i}" for i in range(40)]  # type: ignore[union-attr]
    assert most == 4
    assert remote.get("k/39") == b"value 39"
    with pytest.raises(InvalidInput, match="concurrency"):
        remote.put_many(puts, concurrency=0)


def _record_path(root: Path, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return root / ".cargohold" / "records" / digest[:2] / f"{digest}.json"


def test_a_key_named_like_another_keys_record_does_not_clash(tmp_path: Path) -> None:
    """Records were once kept at ``meta/<key>.meta``: ``m``'s record was the folder
    ``m.meta/q``'s would need, and that put failed ("File exists") on every retry."""
    remote = FileRemote(tmp_path)
    remote.put("m", b"one", metadata={"n": "1"})
    remote.put("m.meta/q", b"two", metadata={"n": "2"})
    assert (remote.head("m").metadata, remote.head("m.meta/q").metadata) == ({"n": "1"}, {"n": "2"})
    assert {info.key for info in remote.list()} == {"m", "m.meta/q"}


def test_a_segment_of_255_bytes_has_its_record(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path)
    key = "long/" + "s" * 255
    remote.put(key, b"x", metadata={"kept": "yes"})
    assert remote.head(key).metadata == {"kept": "yes"}
    remote.delete(key)
    assert [info.key for info in remote.list()] == []


def test_records_of_the_old_layout_are_still_read_and_moved_on_rewrite(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path)
    remote.put("docs/a.txt", b"v1", metadata={"v": "1"})
    # What an older version left: the record at meta/<key>.meta, none under records/.
    new = _record_path(tmp_path, "docs/a.txt")
    legacy = tmp_path / ".cargohold" / "meta" / "docs" / "a.txt.meta"
    legacy.parent.mkdir(parents=True)
    new.rename(legacy)
    assert remote.head("docs/a.txt").metadata == {"v": "1"}
    remote.put("docs/a.txt", b"v2", metadata={"v": "2"})
    assert not legacy.exists()
    assert not (tmp_path / ".cargohold" / "meta" / "docs").exists()
    assert remote.head("docs/a.txt").metadata == {"v": "2"}
    # ... and a delete removes an old record too.
    remote.put("b", b"x", metadata={"v": "b"})
    legacy_b = tmp_path / ".cargohold" / "meta" / "b.meta"
    _record_path(tmp_path, "b").rename(legacy_b)
    remote.delete("b")
    assert not legacy_b.exists()
