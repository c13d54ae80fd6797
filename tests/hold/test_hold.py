"""The Hold's API and its promises, on the memory and file remotes (fast, in-process), and on
a Hugging Face bucket in the Hub stand-in, which cannot enforce conditional writes: there the
cases about them assert the refusal."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold import (
    AlreadyExists,
    ConfigError,
    Hold,
    HoldClosed,
    InvalidInput,
    InvalidKey,
    NotFoundError,
    PreconditionFailed,
    Progress,
)
from cargohold.remotes import FileRemote, MemoryRemote, Remote
from tests.hf.conftest import bucket_url, hub  # noqa: F401 - hub is a fixture


@pytest.fixture(params=["memory", "file", "hf-buckets"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        name = f"hold-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        MemoryRemote.forget(name)
    elif request.param == "hf-buckets":  # a bucket in the Hub stand-in (no conditional puts)
        standin = request.getfixturevalue("hub")
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name, value in standin.env().items():
            monkeypatch.setenv(name, value)
        yield bucket_url(standin)
    else:
        yield (tmp_path / "remote").as_uri()


@pytest.fixture
def hold(remote_url: str, tmp_path: Path) -> Iterator[Hold]:
    with cargohold.open(remote_url, data_dir=tmp_path / "data", signal_handlers=False) as opened:
        yield opened


def test_put_get_head_delete(hold: Hold) -> None:
    info = hold.put("projects/p1.json", b'{"title": "demo"}', metadata={"Owner": "ana"})
    assert info.size == 17
    assert hold.get("projects/p1.json") == b'{"title": "demo"}'
    head = hold.head("projects/p1.json")
    assert (head.size, head.etag, head.metadata) == (17, info.etag, {"owner": "ana"})
    assert head.content_type == "application/json"
    hold.delete("projects/p1.json")
    with pytest.raises(NotFoundError):
        hold.get("projects/p1.json")
    with pytest.raises(FileNotFoundError):
        hold.head("projects/p1.json")
    hold.delete("projects/p1.json")  # idempotent


def test_writes_reach_the_remote_on_flush(hold: Hold) -> None:
    etag = hold.put("a.txt", b"alpha").etag
    hold.put("big/b.bin", b"b" * 300_000)
    hold.put("c.txt", b"gamma")
    hold.delete("c.txt")
    hold.flush(timeout=30)
    assert hold.remote.get("a.txt") == b"alpha"
    assert etag.startswith("L"), "until the remote has it, a write's etag is a local one"
    assert hold.head("a.txt").etag == hold.remote.head("a.txt").etag
    assert hold.remote.get("big/b.bin") == b"b" * 300_000
    with pytest.raises(NotFoundError):
        hold.remote.head("c.txt")
    status = hold.status()
    assert (status.pending_count, status.pending_bytes, status.loss_window) == (0, 0, 0.0)
    assert status.last_sync is not None
    assert status.last_error is None


def test_status_reports_the_loss_window(hold: Hold) -> None:
    gate = threading.Event()
    original = hold.remote._apply  # every remote's batches go through it (the syncer's apply)

    def held(requests: list, deletes: list, concurrency: int) -> tuple:  # type: ignore[type-arg]
        gate.wait(30)
        return original(requests, deletes, concurrency)

    hold.remote._apply = held  # type: ignore[method-assign]
    hold.put("slow", b"12345")
    time.sleep(0.05)  # let the loss window grow measurably; not a timing assertion
    status = hold.status()
    assert status.pending_count == 1
    assert status.pending_bytes == 5
    assert status.loss_window > 0
    assert status.oldest_pending is not None
    gate.set()
    hold.flush(30)
    assert hold.status().loss_window == 0.0


def test_sources_bytes_files_paths(hold: Hold, tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00\x01" * 100_000)
    hold.put("videos/from-path.mp4", source)
    with source.open("rb") as fh:
        hold.put("videos/from-file.mp4", fh)
    hold.put("small/from-stream", io.BytesIO(b"tiny"))
    hold.put("small/bytearray", bytearray(b"ba"))
    assert hold.get("videos/from-path.mp4") == source.read_bytes()
    assert hold.get("videos/from-file.mp4") == source.read_bytes()
    assert hold.get("small/from-stream") == b"tiny"
    assert hold.get("small/bytearray") == b"ba"


def test_a_moved_file_becomes_the_tiers_own(hold: Hold) -> None:
    """transfer="move": a large file in the data directory's disk is linked in (no copy)
    and gone from where it was; a small one, one with another name, or a conditional put
    are copied and removed. The source stays when the put is refused."""
    work = hold.local.tmp / "work"  # a build folder on the tier's disk, as memo's is
    work.mkdir()
    big = work / "take.mp4"
    big.write_bytes(b"\x01" * 200_000)
    inode = big.stat().st_ino
    hold.put("videos/moved.mp4", big, transfer="move")
    assert not big.exists()
    path = hold.path("videos/moved.mp4")
    assert path.stat().st_ino == inode  # the same file, not a copy
    assert path.read_bytes() == b"\x01" * 200_000
    small = work / "small.txt"
    small.write_bytes(b"tiny")
    hold.put("small/moved", small, transfer="move")
    assert not small.exists()
    assert hold.get("small/moved") == b"tiny"
    shared = work / "shared.bin"
    shared.write_bytes(b"\x02" * 100_000)
    (work / "other-name.bin").hardlink_to(shared)
    hold.put("shared/moved", shared, transfer="move")  # copied: the other name could change it
    assert not shared.exists()
    (work / "other-name.bin").write_bytes(b"changed")
    assert hold.get("shared/moved") == b"\x02" * 100_000
    created = work / "created.bin"
    created.write_bytes(b"\x03" * 100_000)
    if not hold.remote.conditional_writes:
        with pytest.raises(ConfigError, match="hf-s3://"):
            hold.put("created/once", created, mode="create", transfer="move")
        assert created.read_bytes() == b"\x03" * 100_000  # refused: the file is where it was
        return
    hold.put("created/once", created, mode="create", transfer="move")
    assert not created.exists()
    assert hold.remote.get("created/once") == b"\x03" * 100_000
    again = work / "again.bin"
    again.write_bytes(b"\x04" * 100_000)
    with pytest.raises(AlreadyExists):
        hold.put("created/once", again, mode="create", transfer="move")
    assert again.read_bytes() == b"\x04" * 100_000  # refused: the file is where it was
    with pytest.raises(InvalidInput, match=r"pass a pathlib\.Path"):
        hold.put("bytes/moved", b"data", transfer="move")
    with pytest.raises(InvalidInput, match="'copy' or 'move'"):
        hold.put("bytes/moved", again, transfer="rename")  # type: ignore[arg-type]
    assert again.exists()
    hold.flush()
    assert hold.remote.get("videos/moved.mp4") == b"\x01" * 200_000


def test_a_moved_old_file_is_not_an_orphan_before_its_row_commits(hold: Hold) -> None:
    """A hard link keeps the file's mtime: a build output written two hours before its put
    must not be taken for an orphan blob (older than the cutoff, no row yet) by a sweep
    that runs between the stage and the commit (another process's syncer may)."""
    work = hold.local.tmp / "old-work"
    work.mkdir()
    old = work / "take.mp4"
    old.write_bytes(b"\x07" * 200_000)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    staged = hold.local.stage("videos/old.mp4", old, take=True)
    hold.local.remove_orphans(older_than=3600)  # the sweep lands in the window
    hold.local.commit(staged, metadata={}, content_type="video/mp4")
    assert hold.get("videos/old.mp4") == b"\x07" * 200_000


def test_a_moved_file_with_fsync_on_is_the_tiers_own(remote_url: str, tmp_path: Path) -> None:
    with cargohold.open(
        remote_url, data_dir=tmp_path / "synced", signal_handlers=False, fsync=True
    ) as hold:
        work = hold.local.tmp / "work"
        work.mkdir()
        big = work / "take.mp4"
        big.write_bytes(b"\x05" * 200_000)
        inode = big.stat().st_ino
        hold.put("videos/fsynced.mp4", big, transfer="move", durable=True)
        assert not big.exists()
        assert hold.path("videos/fsynced.mp4").stat().st_ino == inode
        assert hold.remote.get("videos/fsynced.mp4") == b"\x05" * 200_000


def test_open_streams_and_stays_valid_across_a_rewrite(hold: Hold) -> None:
    hold.put("v.bin", b"first" * 50_000)
    with hold.open("v.bin") as fh:
        hold.put("v.bin", b"second")
        assert fh.read() == b"first" * 50_000
    with hold.open("v.bin") as fh:
        assert fh.read() == b"second"


def test_open_with_info_describes_the_version_it_reads(hold: Hold) -> None:
    first = hold.put("v.bin", b"first" * 50_000, content_type="video/mp4")
    fh, info = hold.open_with_info("v.bin")
    with fh:
        second = hold.put("v.bin", b"second", content_type="text/plain")
        assert (info.size, info.etag, info.content_type) == (250_000, first.etag, "video/mp4")
        assert fh.read() == b"first" * 50_000
    fh, info = hold.open_with_info("v.bin")
    with fh:
        assert (info.size, info.etag, fh.read()) == (6, second.etag, b"second")
    hold.flush(30)
    fh, info = hold.open_with_info("v.bin")
    with fh:  # synced: the remote's etag, still the same bytes
        assert info.etag == hold.head("v.bin").etag
        assert fh.read() == b"second"


def test_delete_if_match_deletes_only_the_named_version(hold: Hold) -> None:
    local = hold.put("d.json", b"v1")
    with pytest.raises(PreconditionFailed):
        hold.delete("d.json", if_match="not-the-etag")
    assert hold.get("d.json") == b"v1"
    hold.delete("d.json", if_match=local.etag)  # the etag the put gave, not yet synced
    with pytest.raises(NotFoundError):
        hold.get("d.json")
    with pytest.raises(PreconditionFailed):  # a missing key matches no etag
        hold.delete("d.json", if_match=local.etag)
    hold.put("d.json", b"v2")
    hold.flush(30)
    remote_etag = hold.head("d.json").etag
    hold.put("d.json", b"v3")
    with pytest.raises(PreconditionFailed):  # v2's etag, but v3 is current
        hold.delete("d.json", if_match=remote_etag)
    hold.delete("d.json", if_match=hold.head("d.json").etag)
    hold.flush(30)
    with pytest.raises(NotFoundError):
        hold.remote.head("d.json")


def test_has_etag_knows_a_write_by_its_local_and_its_remote_etag(hold: Hold) -> None:
    with hold.syncer.paused():
        local = hold.put("h.txt", b"v1").etag
        assert hold.has_etag("h.txt", local)
    hold.flush(30)
    remote = hold.head("h.txt").etag
    assert remote != local
    assert hold.has_etag("h.txt", remote)
    assert hold.has_etag("h.txt", local)  # the same write: still valid
    hold.put("h.txt", b"v2")
    assert not hold.has_etag("h.txt", local)
    assert not hold.has_etag("h.txt", remote)
    assert not hold.has_etag("missing.txt", remote)


def test_racing_conditional_deletes_and_puts_have_one_winner(hold: Hold) -> None:
    etag = hold.put("race.txt", b"v0", durable=True).etag
    outcomes: list[str] = []
    start = threading.Barrier(16)

    def delete() -> None:
        start.wait()
        try:
            hold.delete("race.txt", if_match=etag)
            outcomes.append("deleted")
        except PreconditionFailed:
            outcomes.append("refused")

    def put(n: int) -> None:
        start.wait()
        try:
            hold.put("race.txt", f"v{n}".encode(), if_match=etag)
            outcomes.append("written")
        except PreconditionFailed:
            outcomes.append("refused")
        except ConfigError:  # a remote without conditional writes refuses them all
            outcomes.append("unsupported")

    threads = [threading.Thread(target=delete) for _ in range(8)]
    threads += [threading.Thread(target=put, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 16
    if not hold.remote.conditional_writes:  # the deletes still race: one wins
        assert sorted(outcomes) == ["deleted"] + ["refused"] * 7 + ["unsupported"] * 8
        return
    assert sorted(outcomes).count("refused") == 15


def test_path_gives_a_file_named_like_the_key(hold: Hold) -> None:
    hold.put("takes/take_1.mp4", b"x" * 100_000)
    hold.put("notes/readme.txt", b"small")
    big = hold.path("takes/take_1.mp4")
    small = hold.path("notes/readme.txt")
    assert big.name == "take_1.mp4"
    assert small.name == "readme.txt"
    assert big.read_bytes() == b"x" * 100_000
    assert small.read_bytes() == b"small"
    assert hold.get("notes/readme.txt") == b"small"


def test_list_merges_pending_writes_and_deletions(hold: Hold) -> None:
    for key in ("p/a", "p/c", "p/e"):
        hold.put(key, key.encode())
    hold.flush(30)
    hold.put("p/b", b"new")
    hold.put("p/c", b"changed")
    hold.delete("p/e")
    hold.put("q/x", b"other prefix")
    listed = {info.key: info for info in hold.list("p/")}
    assert sorted(listed) == ["p/a", "p/b", "p/c"]
    assert listed["p/c"].size == len(b"changed")
    assert [i.key for i in hold.list("p/")] == ["p/a", "p/b", "p/c"]


def _refuses_conditional_writes(hold: Hold) -> bool:
    """On a remote without conditional writes: check that the Hold refuses them, writing
    nothing, and say so (True)."""
    if hold.remote.conditional_writes:
        return False
    with pytest.raises(ConfigError, match="hf-s3://"):
        hold.put("claims/job", b"worker-1", mode="create")
    with pytest.raises(ConfigError, match="hf-s3://"):
        hold.put("claims/job", b"worker-1", if_match="0" * 64)
    with pytest.raises(NotFoundError):
        hold.head("claims/job")
    return True


def test_conditional_writes_are_enforced_by_the_remote(hold: Hold) -> None:
    if _refuses_conditional_writes(hold):
        return
    first = hold.put("claims/job", b"worker-1", mode="create")
    with pytest.raises(AlreadyExists):
        hold.put("claims/job", b"worker-2", mode="create")
    assert hold.remote.get("claims/job") == b"worker-1", "create-only is write-through"
    second = hold.put("claims/job", b"worker-1 again", if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        hold.put("claims/job", b"stale", if_match=first.etag)
    assert hold.get("claims/job") == b"worker-1 again"
    assert hold.head("claims/job").etag == second.etag


def test_a_local_etag_works_for_if_match_until_the_key_changes(hold: Hold) -> None:
    if _refuses_conditional_writes(hold):
        return
    first = hold.put("counter", b"1")  # write-back: a local etag
    second = hold.put("counter", b"2", if_match=first.etag)
    assert not second.etag.startswith("L")
    assert hold.remote.get("counter") == b"2"
    third = hold.put("counter", b"3")
    with pytest.raises(PreconditionFailed, match="changed since"):
        hold.put("counter", b"stale", if_match=first.etag)
    hold.put("counter", b"4", if_match=third.etag)
    assert hold.get("counter") == b"4"


def test_conditional_write_sends_a_pending_local_write_first(hold: Hold) -> None:
    if _refuses_conditional_writes(hold):
        return
    hold.put("doc", b"local, not yet synced")
    with pytest.raises(AlreadyExists):
        hold.put("doc", b"create", mode="create")
    assert hold.remote.get("doc") == b"local, not yet synced"


def test_durable_put_returns_once_the_remote_has_it(hold: Hold) -> None:
    info = hold.put("important.json", b"{}", durable=True)
    assert hold.remote.get("important.json") == b"{}"
    assert hold.remote.head("important.json").etag == info.etag
    assert hold.status().pending_count == 0


def test_read_through_from_the_remote(hold: Hold) -> None:
    hold.remote.put("seeded/by-another-instance.txt", b"hello", metadata={"who": "b"})
    assert hold.get("seeded/by-another-instance.txt") == b"hello"
    assert hold.head("seeded/by-another-instance.txt").metadata == {"who": "b"}
    assert hold.local.entry("seeded/by-another-instance.txt") is not None, "kept after a read"
    hold.remote.put("seeded/big.bin", b"z" * 200_000)
    assert hold.path("seeded/big.bin").read_bytes() == b"z" * 200_000
    with pytest.raises(NotFoundError):
        hold.get("nowhere")


def test_stale_copies_are_revalidated_by_etag(remote_url: str, tmp_path: Path) -> None:
    with (
        cargohold.open(remote_url, data_dir=tmp_path / "a", signal_handlers=False) as a,
        cargohold.open(remote_url, data_dir=tmp_path / "b", signal_handlers=False) as b,
    ):
        a.put("shared.json", b"v1")
        a.flush(30)
        assert b.get("shared.json") == b"v1"
        a.put("shared.json", b"v2")
        a.flush(30)
        if type(b.remote).follow_changes is Remote.follow_changes:
            assert b.get("shared.json", max_age=3600) == b"v1", "fresh enough: served locally"
        else:  # a remote with a change feed: b may have heard of the write already
            assert b.get("shared.json", max_age=3600) in (b"v1", b"v2")
        assert b.get("shared.json", max_age=0) == b"v2", "too old: checked, then refreshed"
        assert b.head("shared.json", max_age=0).size == 2
        a.delete("shared.json")
        a.flush(30)
        with pytest.raises(NotFoundError):
            b.get("shared.json", max_age=0)


def test_hydrate_restores_everything_with_progress(remote_url: str, tmp_path: Path) -> None:
    with cargohold.open(remote_url, data_dir=tmp_path / "a", signal_handlers=False) as a:
        for i in range(150):
            a.put(f"h/{i:03d}", f"object {i}".encode())
        a.put("h/large.bin", b"L" * 500_000)
        a.put("other/x", b"not hydrated")
        a.flush(30)
    updates: list[Progress] = []
    with cargohold.open(remote_url, data_dir=tmp_path / "b", signal_handlers=False) as b:
        report = b.hydrate("h/", progress=updates.append)
        assert (report.objects, report.skipped, report.failed) == (151, 0, {})
        assert report.bytes == sum(len(f"object {i}") for i in range(150)) + 500_000
        assert updates[-1] == Progress(done=151, total=151, bytes=report.bytes)
        assert b.local.entry("other/x") is None
        assert b.hydrate("h/").skipped == 151, "a second hydrate finds nothing to do"
        # Everything is local now: reads work even with the remote gone.
        b.remote = MemoryRemote()
        assert b.get("h/042", max_age=float("inf")) == b"object 42"


def test_bad_input_is_refused_and_changes_nothing(hold: Hold) -> None:
    hold.put("keep", b"safe")
    for key in ("", "../escape", "/abs", "a//b", ".cargohold/x"):
        with pytest.raises(InvalidKey):
            hold.put(key, b"x")
    with pytest.raises(InvalidInput):
        hold.put("keep", "text, not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        hold.put("keep", b"x", metadata={"bad name": "x"})
    with pytest.raises(InvalidInput):
        hold.put("keep", b"x", mode="create", if_match="abc")
    assert hold.get("keep") == b"safe"
    assert hold.status().pending_count <= 1


def test_a_closed_hold_says_so(hold: Hold) -> None:
    hold.close()
    hold.close()  # twice is fine
    for call in (
        lambda: hold.put("k", b"v"),
        lambda: hold.get("k"),
        lambda: hold.delete("k"),
        lambda: list(hold.list()),
        lambda: hold.flush(),
    ):
        with pytest.raises(HoldClosed, match="closed"):
            call()


def test_the_journal_survives_a_restart(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    unreachable_until_reopened = FileRemote("/sys/cargohold-not-writable")
    hold = Hold(
        remote=unreachable_until_reopened,
        local_dir=tmp_path / "data",
        settings=cargohold.Settings.load({}, signal_handlers=False),
    )
    hold.put("journal/a", b"written while the remote refused")
    hold.close(timeout=0.5)
    assert hold.local.root.exists()
    # The same data directory, now with a working remote under the same URL.
    again = Hold(
        remote=_same_url(remote, unreachable_until_reopened.url),
        local_dir=tmp_path / "data",
        settings=cargohold.Settings.load({}, signal_handlers=False),
    )
    with again:
        assert again.status().pending_count == 1
        again.flush(30)
        assert remote.get("journal/a") == b"written while the remote refused"


def _same_url(remote: FileRemote, url: str) -> FileRemote:
    """A working remote that presents the URL the journal was written for."""

    class Renamed(FileRemote):
        @property
        def url(self) -> str:
            return url

    return Renamed(remote.root)


def test_opening_a_data_dir_with_another_remote(tmp_path: Path) -> None:
    settings = {"signal_handlers": False}
    with cargohold.open("memory://first-remote", data_dir=tmp_path, **settings) as hold:
        hold.syncer.remote = FileRemote("/sys/cargohold-not-writable")  # nothing can sync now
        hold.put("stuck", b"pending")
        hold.close(timeout=0.2)
    with pytest.raises(ConfigError, match="not yet synced to memory://first-remote"):
        cargohold.open("memory://second-remote", data_dir=tmp_path, **settings)


def test_embedded_default_warns_once_and_lives_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CARGOHOLD_REMOTE", raising=False)
    monkeypatch.setattr("cargohold.hold._embedded_warned", False)
    with caplog.at_level(logging.WARNING, logger="cargohold"):
        with cargohold.open(data_dir=tmp_path, signal_handlers=False) as hold:
            assert hold.embedded_default
            assert hold.remote.url == (tmp_path / "remote").as_uri()
            hold.put("k", b"v")
            hold.flush(30)
            assert (tmp_path / "remote" / "k").read_bytes() == b"v"
        with cargohold.open(data_dir=tmp_path, signal_handlers=False):
            pass
    warnings = [r for r in caplog.records if "embedded default" in r.getMessage()]
    assert len(warnings) == 1
    assert "same disk" in warnings[0].getMessage()


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_pending_bytes"):
        cargohold.open(
            "memory://x",
            data_dir=tmp_path,
            local_max_bytes="1MiB",
            max_pending_bytes="2MiB",
            signal_handlers=False,
        )
