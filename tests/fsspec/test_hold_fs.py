"""hold:// keeps the Hold's promises: every write path stores (or, when it fails, stores
nothing), create-only is the remote's, ranges fetch only the range, and what it does not
support raises what fsspec expects (the table in the README's hold:// section)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from threading import Barrier, Lock, Thread

import fsspec
import pytest

import cargohold
from cargohold import Hold
from cargohold.errors import AlreadyExists, PreconditionFailed, RemoteError
from cargohold.fs import HoldFileSystem
from cargohold.remotes import ByteRange, MemoryRemote, ObjectStream


def filesystem(hold: Hold) -> HoldFileSystem:
    return HoldFileSystem(instance=hold, skip_instance_cache=True)


@pytest.fixture
def memory_hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"fsspec-{uuid.uuid4().hex}"
    with cargohold.open(f"memory://{name}", data_dir=tmp_path / "m", signal_handlers=False) as h:
        yield h
    MemoryRemote.forget(name)


# -- every write path stores ---------------------------------------------------------------


def test_with_block_writes_are_stored_and_reach_the_remote(hold: Hold) -> None:
    fs = filesystem(hold)
    with fs.open("hold://notes/a.txt", "wb") as f:
        f.write(b"hello ")
        f.write(b"world")
    with fs.open("notes/b.txt", "w") as text:
        text.write("text mode")
    assert hold.get("notes/a.txt") == b"hello world"
    assert hold.get("notes/b.txt") == b"text mode"
    hold.flush(30)
    assert hold.remote.get("notes/a.txt") == b"hello world"
    assert hold.remote.get("notes/b.txt") == b"text mode"


def test_a_file_larger_than_the_write_block_is_stored_whole(memory_hold: Hold) -> None:
    fs = filesystem(memory_hold)
    data = bytes(range(256)) * 40_000  # 10 MiB: past fsspec's 5 MiB block and the spool
    with fs.open("big.bin", "wb") as f:
        for start in range(0, len(data), 1_000_000):
            f.write(data[start : start + 1_000_000])
    assert memory_hold.get("big.bin") == data
    with fs.open("blocks.txt", "w", 1024) as text:  # block_size passed by position, as fsspec's
        text.write("x" * 5000)
    assert memory_hold.get("blocks.txt") == b"x" * 5000


def test_touch_put_put_file_pipe_and_simplecache_writes_are_stored(
    memory_hold: Hold, tmp_path: Path
) -> None:
    fs = filesystem(memory_hold)
    fs.touch("empty.txt")
    assert memory_hold.get("empty.txt") == b""
    local = tmp_path / "upload"
    (local / "sub").mkdir(parents=True)
    (local / "one.txt").write_bytes(b"1")
    (local / "sub" / "two.txt").write_bytes(b"2")
    fs.put(str(local), "up", recursive=True)
    assert memory_hold.get("up/one.txt") == b"1"
    assert memory_hold.get("up/sub/two.txt") == b"2"
    fs.put_file(str(local / "one.txt"), "single.txt")
    assert memory_hold.get("single.txt") == b"1"
    fs.pipe({"p/a": b"A", "p/b": b"B"})
    assert [memory_hold.get("p/a"), memory_hold.get("p/b")] == [b"A", b"B"]
    with fsspec.open(
        "simplecache::hold://cached/c.txt",
        "wb",
        hold={"instance": memory_hold, "skip_instance_cache": True},
        simplecache={"cache_storage": str(tmp_path / "cache")},
    ) as f:
        f.write(b"through simplecache")
    assert memory_hold.get("cached/c.txt") == b"through simplecache"


def test_a_with_block_that_raises_stores_nothing(memory_hold: Hold) -> None:
    fs = filesystem(memory_hold)
    memory_hold.put("kept.txt", b"before")
    for mode in ("wb", "w", "ab"):
        for key in ("kept.txt", f"new-{mode}.txt"):
            with pytest.raises(RuntimeError, match="stop"):
                _write_then_raise(fs, key, mode)
    assert memory_hold.get("kept.txt") == b"before"
    assert not fs.exists("new-wb.txt")
    assert not fs.exists("new-w.txt")
    assert not fs.exists("new-ab.txt")


def _write_then_raise(fs: HoldFileSystem, key: str, mode: str) -> None:
    with fs.open(key, mode) as f:
        f.write(b"half" if "b" in mode else "half")
        raise RuntimeError("stop")


def test_a_file_closed_without_with_is_stored_and_a_discarded_one_is_not(
    memory_hold: Hold,
) -> None:
    fs = filesystem(memory_hold)
    f = fs.open("closed.txt", "wb")
    f.write(b"explicit close")
    f.close()
    assert memory_hold.get("closed.txt") == b"explicit close"
    g = fs.open("discarded.txt", "wb")
    g.write(b"never")
    g.discard()
    g.close()
    assert not fs.exists("discarded.txt")


# -- create-only is the remote's -----------------------------------------------------------


def test_create_only_is_enforced_against_another_instance(remote_url: str, tmp_path: Path) -> None:
    with (
        cargohold.open(remote_url, data_dir=tmp_path / "a", signal_handlers=False) as a,
        cargohold.open(remote_url, data_dir=tmp_path / "b", signal_handlers=False) as b,
    ):
        fs_a, fs_b = filesystem(a), filesystem(b)
        late = fs_b.open("claim.txt", "xb")  # nothing there yet: the open succeeds
        late.write(b"from b")
        fs_a.pipe_file("claim.txt", b"from a", mode="create")
        with pytest.raises(FileExistsError):
            late.close()  # the remote refuses b's create: a got there first
        with pytest.raises(FileExistsError):
            fs_b.pipe_file("claim.txt", b"again", mode="create")
        with pytest.raises(FileExistsError):
            fs_b.open("claim.txt", "xb")
        source = tmp_path / "local.txt"
        source.write_bytes(b"file")
        with pytest.raises(FileExistsError):
            fs_b.put_file(str(source), "claim.txt", mode="create")
        assert b.get("claim.txt") == b"from a"
        assert a.remote.get("claim.txt") == b"from a"


def _race(writers: list[Callable[[], None]]) -> list[str]:
    """Run ``writers`` released together; what each ended with, sorted."""
    start = Barrier(len(writers))
    outcomes: list[str] = []

    def run(write: Callable[[], None]) -> None:
        start.wait()
        try:
            write()
            outcomes.append("stored")
        except FileExistsError:
            outcomes.append("exists")

    threads = [Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def test_xb_racing_between_two_instances_has_one_winner(remote_url: str, tmp_path: Path) -> None:
    with (
        cargohold.open(remote_url, data_dir=tmp_path / "a", signal_handlers=False) as a,
        cargohold.open(remote_url, data_dir=tmp_path / "b", signal_handlers=False) as b,
    ):
        fs_a, fs_b = filesystem(a), filesystem(b)
        for n in range(5):

            def write_xb(fs: HoldFileSystem, name: bytes, n: int = n) -> None:
                with fs.open(f"claims/{n}", "xb") as f:
                    f.write(name)

            racers = [lambda: write_xb(fs_a, b"a"), lambda: write_xb(fs_b, b"b")]
            assert _race(racers) == ["exists", "stored"]
            assert a.remote.get(f"claims/{n}") in (b"a", b"b")


def test_xb_creates_a_new_key_and_refuses_an_unsynced_local_one(memory_hold: Hold) -> None:
    fs = filesystem(memory_hold)
    with fs.open("fresh.txt", "xb") as f:
        f.write(b"created")
    assert memory_hold.remote.get("fresh.txt") == b"created"  # write-through
    memory_hold.put("pending.txt", b"local only")
    with pytest.raises(AlreadyExists):
        fs.open("pending.txt", "xb")
    with pytest.raises(FileExistsError):
        fs.pipe_file("pending.txt", b"x", mode="create")


# -- append ----------------------------------------------------------------------------------


def test_append_adds_to_the_current_bytes_and_creates_a_missing_key(memory_hold: Hold) -> None:
    fs = filesystem(memory_hold)
    with fs.open("log.txt", "ab") as f:
        f.write(b"one\n")
    with fs.open("log.txt", "a") as text:
        text.write("two\n")
    assert memory_hold.get("log.txt") == b"one\ntwo\n"


def test_append_keeps_metadata_and_never_drops_a_concurrent_write(memory_hold: Hold) -> None:
    fs = filesystem(memory_hold)
    memory_hold.put("log.txt", b"one\n", metadata={"owner": "ana"}, content_type="text/plain")
    f = fs.open("log.txt", "ab")
    f.write(b"mine\n")
    memory_hold.put("log.txt", b"theirs\n")  # another writer, between open and close
    with pytest.raises(PreconditionFailed):
        f.close()
    assert memory_hold.get("log.txt") == b"theirs\n"
    memory_hold.put("kept.txt", b"a", metadata={"owner": "ana"}, content_type="text/plain")
    with fs.open("kept.txt", "ab") as g:
        g.write(b"b")
    info = memory_hold.head("kept.txt")
    assert (memory_hold.get("kept.txt"), info.metadata, info.content_type) == (
        b"ab",
        {"owner": "ana"},
        "text/plain",
    )


def test_appends_from_two_instances_build_on_each_other(remote_url: str, tmp_path: Path) -> None:
    # Each instance keeps a copy of what it read (fresh for max_age): an append must start
    # from the remote's current version, or it fails with PreconditionFailed on every try
    # until that copy ages out.
    with (
        cargohold.open(remote_url, data_dir=tmp_path / "a", signal_handlers=False) as a,
        cargohold.open(remote_url, data_dir=tmp_path / "b", signal_handlers=False) as b,
    ):
        fs_a, fs_b = filesystem(a), filesystem(b)
        with fs_a.open("log.txt", "ab") as f:
            f.write(b"a1\n")
        with fs_b.open("log.txt", "ab") as f:
            f.write(b"b1\n")
        with fs_a.open("log.txt", "ab") as f:
            f.write(b"a2\n")
        with fs_b.open("log.txt", "ab") as f:
            f.write(b"b2\n")
        assert a.remote.get("log.txt") == b"a1\nb1\na2\nb2\n"


# -- transactions --------------------------------------------------------------------------


def test_a_transaction_stores_its_files_at_the_end_or_none_of_them(memory_hold: Hold) -> None:
    fs = filesystem(memory_hold)
    with fs.transaction:
        fs.pipe_file("t/a", b"A")
        with fs.open("t/b", "wb") as f:
            f.write(b"B")
        assert not fs.exists("t/a")
        assert not fs.exists("t/b")
    assert [memory_hold.get("t/a"), memory_hold.get("t/b")] == [b"A", b"B"]
    with pytest.raises(RuntimeError, match="abort"):
        _transaction_then_raise(fs)
    assert not fs.exists("u/a")
    assert not fs.exists("u")


def test_put_file_in_a_transaction_waits_for_its_end(memory_hold: Hold, tmp_path: Path) -> None:
    fs = filesystem(memory_hold)
    source = tmp_path / "local.txt"
    source.write_bytes(b"uploaded")
    with fs.transaction:
        fs.put_file(str(source), "t/up.txt")
        fs.put_file(str(source), "t/new.txt", mode="create")
        assert not fs.exists("t/up.txt")
    assert [memory_hold.get("t/up.txt"), memory_hold.get("t/new.txt")] == [b"uploaded"] * 2


def test_fsspec_open_stores_what_was_written_even_if_its_block_raises(memory_hold: Hold) -> None:
    """The limit docs/fsspec.md names: fsspec's OpenFile closes its file without passing
    on the exception, so only fs.open (or a transaction) can discard."""
    with pytest.raises(RuntimeError, match="stop"):
        _open_file_then_raise(memory_hold)
    assert memory_hold.get("via-openfile.txt") == b"partial"


def _open_file_then_raise(hold: Hold) -> None:
    opened = fsspec.open("hold://via-openfile.txt", "wb", instance=hold, skip_instance_cache=True)
    with opened as f:
        f.write(b"partial")
        raise RuntimeError("stop")


def _transaction_then_raise(fs: HoldFileSystem) -> None:
    with fs.transaction:
        fs.pipe_file("u/a", b"A")
        with fs.open("u/b", "wb") as f:
            f.write(b"B")
        raise RuntimeError("abort")


# -- copies keep metadata ------------------------------------------------------------------


def test_cp_file_and_mv_keep_metadata_and_content_type(hold: Hold) -> None:
    fs = filesystem(hold)
    hold.put("src.csv", b"a,b\n1,2\n", metadata={"owner": "ana"}, content_type="text/csv")
    fs.cp_file("src.csv", "copy.csv")
    fs.mv("src.csv", "moved/dst.csv")
    assert not fs.exists("src.csv")
    for key in ("copy.csv", "moved/dst.csv"):
        info = hold.head(key)
        assert (hold.get(key), info.metadata, info.content_type) == (
            b"a,b\n1,2\n",
            {"owner": "ana"},
            "text/csv",
        )
        assert fs.info(key)["metadata"] == {"owner": "ana"}
    with pytest.raises(FileNotFoundError):
        fs.cp_file("missing.csv", "x.csv")


# -- ranged reads fetch only the range -----------------------------------------------------


class CountingRemote(MemoryRemote):
    """A real memory remote wrapped to log each read it is asked for (a wrapper that
    records, not a mock: every call runs the real MemoryRemote)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reads: list[tuple[str, ByteRange | None]] = []
        self._lock = Lock()

    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        with self._lock:
            self.reads.append((key, range))
        return super()._stream(key, range)

    def _get(self, key: str, range: ByteRange | None) -> bytes:
        with self._lock:
            self.reads.append((key, range))
        return super()._get(key, range)

    def bytes_asked(self, key: str, size: int) -> int:
        return sum(
            (size if r is None else min(size, r[1] or size) - r[0])
            for k, r in self.reads
            if k == key
        )


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[tuple[Hold, CountingRemote]]:
    name = f"fsspec-count-{uuid.uuid4().hex}"
    remote = CountingRemote(name)
    with cargohold.open(remote, data_dir=tmp_path / "c", signal_handlers=False) as opened:
        yield opened, remote
    MemoryRemote.forget(name)


BIG = 12 * 1024 * 1024


def _remote_only(remote: CountingRemote, key: str) -> bytes:
    data = bytes(range(256)) * (BIG // 256)
    remote.put(key, data)  # straight into the remote: the local tier has no copy
    remote.reads.clear()
    return data


def test_cat_file_range_asks_the_remote_for_that_range_only(
    counting: tuple[Hold, CountingRemote],
) -> None:
    hold, remote = counting
    data = _remote_only(remote, "big.bin")
    fs = filesystem(hold)
    assert fs.cat_file("big.bin", start=1000, end=1010) == data[1000:1010]
    assert fs.cat_file("big.bin", start=-5) == data[-5:]
    assert remote.reads == [("big.bin", (1000, 1010)), ("big.bin", (BIG - 5, BIG))]
    # Python's slice rules, without asking for bytes outside the object.
    for start, end in ((None, -3), (-3, -1), (-BIG * 2, 2), (5, 2), (-1, -5), (BIG * 2, None)):
        assert fs.cat_file("big.bin", start=start, end=end) == data[start:end], (start, end)
    with fs.open("big.bin", "rb", block_size=0) as f:  # no read-ahead: still the bytes
        assert (f.read(3), f.seek(-2, 2), f.read()) == (data[:3], BIG - 2, data[-2:])
    assert hold.local.entry("big.bin") is None  # nothing downloaded


def test_open_and_read_block_fetch_a_block_not_the_object(
    counting: tuple[Hold, CountingRemote],
) -> None:
    hold, remote = counting
    data = _remote_only(remote, "big.bin")
    fs = filesystem(hold)
    with fs.open("big.bin", "rb", block_size=64 * 1024) as f:
        f.seek(5_000_000)
        assert f.read(100) == data[5_000_000:5_000_100]
    assert remote.bytes_asked("big.bin", BIG) <= 64 * 1024 + 100  # one read-ahead block
    remote.reads.clear()
    assert fs.read_block("big.bin", 3_000_000, 1000) == data[3_000_000:3_001_000]
    assert 1000 <= remote.bytes_asked("big.bin", BIG) < BIG // 2  # fsspec's 5 MiB block
    assert all(r is not None for _, r in remote.reads)
    assert hold.local.entry("big.bin") is None


# fsspec's MMapCache (blockcache::) leaves the file behind its mmap to the garbage collector.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*blocks/:pytest.PytestUnraisableExceptionWarning"
)
def test_blockcache_fetches_the_blocks_read(
    counting: tuple[Hold, CountingRemote], tmp_path: Path
) -> None:
    hold, remote = counting
    data = _remote_only(remote, "big.bin")
    with fsspec.open(
        "blockcache::hold://big.bin",
        "rb",
        hold={"instance": hold, "skip_instance_cache": True},
        blockcache={"cache_storage": str(tmp_path / "blocks")},
    ) as f:
        f.seek(7_000_000)
        assert f.read(10) == data[7_000_000:7_000_010]
    assert all(r is not None for _, r in remote.reads)
    assert 10 <= remote.bytes_asked("big.bin", BIG) < BIG // 2  # one 5 MiB block


def test_a_fresh_local_copy_serves_ranges_without_asking_the_remote(
    counting: tuple[Hold, CountingRemote],
) -> None:
    hold, remote = counting
    hold.put("local.bin", b"0123456789" * 1000)
    hold.flush(30)
    remote.reads.clear()
    fs = filesystem(hold)
    assert fs.cat_file("local.bin", start=10, end=14) == b"0123"
    with fs.open("local.bin", "rb") as f:
        f.seek(25)
        assert f.read(3) == b"567"
    assert remote.reads == []


def test_a_ranged_read_of_a_replaced_object_raises_rather_than_mix_versions(
    counting: tuple[Hold, CountingRemote],
) -> None:
    hold, remote = counting
    _remote_only(remote, "big.bin")
    source = hold.open("big.bin", read_through=False)
    with source:
        assert len(source.read(10)) == 10
        remote.put("big.bin", b"a new version")
        with pytest.raises(RemoteError, match="replaced"):
            source.read(10)


def test_ranged_reads_of_each_remote_are_one_version(hold: Hold) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, only in the remote
    hold.remote.put("ranged.bin", data)
    fs = filesystem(hold)
    assert fs.cat_file("ranged.bin", start=300_000, end=300_016) == data[300_000:300_016]
    with fs.open("ranged.bin", "rb", block_size=4096) as f:
        f.seek(-10, 2)
        assert f.read() == data[-10:]
    with hold.open("ranged.bin", read_through=False) as source:
        assert source.read(4) == data[:4]
        hold.remote.put("ranged.bin", b"replaced")
        with pytest.raises(RemoteError, match="replaced"):
            source.read(4)


def test_ranged_file_readline_uses_a_window(counting: tuple[Hold, CountingRemote]) -> None:
    hold, remote = counting
    lines = b"".join(b"line %d\n" % i for i in range(10_000))
    remote.put("lines.txt", lines)
    remote.reads.clear()
    with hold.open("lines.txt", read_through=False) as source:
        assert [source.readline() for _ in range(3)] == [b"line 0\n", b"line 1\n", b"line 2\n"]
    assert len(remote.reads) == 1


# -- what is not supported raises what fsspec expects --------------------------------------


def test_unsupported_operations_raise_what_the_table_says(memory_hold: Hold) -> None:
    fs = filesystem(memory_hold)
    memory_hold.put("dir/file.txt", b"x")
    for mode in ("r+b", "w+b", "rb+"):
        with pytest.raises(NotImplementedError, match="use 'rb', 'wb', 'xb' or 'ab'"):
            fs.open("dir/file.txt", mode)
    with pytest.raises(ValueError, match="'overwrite' or 'create'"):
        fs.pipe_file("dir/file.txt", b"y", mode="append")
    with pytest.raises(NotImplementedError):
        fs.touch("dir/file.txt", truncate=False)  # no timestamp to update on an object
    with pytest.raises(OSError, match="not empty"):
        fs.rmdir("dir")
    fs.rmdir("nothing-here")  # an empty folder does not exist: nothing to remove
    with pytest.raises(NotImplementedError):
        fs.created("dir/file.txt")
    with pytest.raises(NotImplementedError):
        fs.sign("dir/file.txt")
    with pytest.raises(IsADirectoryError):
        fs.modified("dir")
    assert fs.modified("dir/file.txt") == memory_hold.head("dir/file.txt").last_modified
    with pytest.raises(ValueError):  # the key rules still apply (InvalidKey is a ValueError)
        fs.pipe_file("../escape", b"x")
