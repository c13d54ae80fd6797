"""One conformance suite, every remote: memory, file, S3 on SeaweedFS and S3 on moto.

Each case states a promise of the remote protocol (cargohold.remotes._base) and checks it
against every remote in tests/conformance/conftest.py. A remote that declares it cannot
enforce conditional writes (``Remote.conditional_writes`` False: a Hugging Face bucket's
native API) is held to refusing them instead: never a silent last-writer-wins.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cargohold import (
    AlreadyExists,
    ConfigError,
    ConflictError,
    InvalidInput,
    InvalidKey,
    InvalidMetadata,
    NotFoundError,
    PreconditionFailed,
)
from cargohold.keys import internal_key, internal_prefix
from cargohold.remotes import Delete, FileRemote, ObjectInfo, Put, Remote, open_remote
from tests.hf.conftest import UNLIMITED


def _race(n: int, attempt: Callable[[int], object]) -> list[object]:
    """Start ``n`` threads at one barrier; return what each returned or raised."""
    barrier = threading.Barrier(n)

    def run(i: int) -> object:
        barrier.wait()
        try:
            return attempt(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _handles(remote: Remote, n: int) -> list[Remote]:
    """``n`` handles on the same remote; separate objects where that means separate locks."""
    if isinstance(remote, FileRemote):
        return [FileRemote(remote.root) for _ in range(n)]
    return [remote] * n


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 1024 * 1024])
def test_round_trip_bytes(remote: Remote, size: int) -> None:
    data = os.urandom(size)
    info = remote.put("blobs/data.bin", data)
    assert info.key == "blobs/data.bin"
    assert info.size == size
    assert info.etag
    assert remote.get("blobs/data.bin") == data
    head = remote.head("blobs/data.bin")
    assert (head.size, head.etag) == (size, info.etag)
    assert b"".join(remote.stream("blobs/data.bin")) == data


def test_put_accepts_file_objects_and_paths(remote: Remote, tmp_path: Path) -> None:
    path = tmp_path / "source.bin"
    path.write_bytes(b"from a path")
    remote.put("a", path)
    assert remote.get("a") == b"from a path"
    with path.open("rb") as fh:
        fh.seek(5)
        remote.put("b", fh)  # read from the current position
    assert remote.get("b") == b"a path"
    remote.put("c", io.BytesIO(b"from a file object"))
    assert remote.get("c") == b"from a file object"
    remote.put("d", bytearray(b"from a bytearray"))
    assert remote.get("d") == b"from a bytearray"


@pytest.mark.slow
def test_large_object_streams_both_ways(remote: Remote, tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    source = tmp_path / "large.bin"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for i in range(size // (1024 * 1024)):
            block = hashlib.sha256(str(i).encode()).digest() * 32768  # 1 MiB, varied
            digest.update(block)
            out.write(block)
    with source.open("rb") as fh:
        info = remote.put("large/video.mp4", fh)
    assert info.size == size
    assert remote.head("large/video.mp4").size == size
    got = hashlib.sha256()
    biggest = 0
    with remote.stream("large/video.mp4") as stream:
        assert stream.info.size == size
        for chunk in stream:
            biggest = max(biggest, len(chunk))
            got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()
    assert biggest <= 16 * 1024 * 1024, "a stream must hand out bounded chunks"


def test_overwrite_replaces_and_changes_etag(remote: Remote) -> None:
    first = remote.put("doc.json", b'{"v": 1}')
    second = remote.put("doc.json", b'{"v": 2}')
    assert first.etag != second.etag
    assert remote.get("doc.json") == b'{"v": 2}'
    assert remote.head("doc.json").etag == second.etag


def test_same_bytes_same_etag(remote: Remote) -> None:
    assert remote.put("x", b"same").etag == remote.put("y", b"same").etag


# -- ranges ---------------------------------------------------------------------------


def test_ranges_behave_like_slices(remote: Remote) -> None:
    data = bytes(range(256)) * 4
    remote.put("r.bin", data)
    cases = [(0, 10), (10, None), (1000, 2000), (5, 5), (1024, None), (2000, None), (0, None)]
    for start, stop in cases:
        assert remote.get("r.bin", range=(start, stop)) == data[start:stop], (start, stop)
        assert b"".join(remote.stream("r.bin", range=(start, stop))) == data[start:stop]


def test_range_of_missing_key_is_not_found(remote: Remote) -> None:
    with pytest.raises(NotFoundError):
        remote.get("missing", range=(0, 10))
    with pytest.raises(NotFoundError):
        remote.get("missing", range=(3, 3))


@pytest.mark.parametrize("bad", [(-1, 5), (5, 2), (1,), "0-5", (0.5, 2)])
def test_bad_ranges_are_rejected(remote: Remote, bad: object) -> None:
    remote.put("r", b"abc")
    with pytest.raises(InvalidInput, match="range"):
        remote.get("r", range=bad)  # type: ignore[arg-type]


# -- metadata and content types ---------------------------------------------------------


def test_metadata_round_trips(remote: Remote) -> None:
    metadata = {
        "Prompt": "a cat, in the style of Hokusai — 北斎 %20 100%",
        "seconds": "5",
        "model_version": "v2",
    }
    remote.put("m.json", b"{}", metadata=metadata)
    head = remote.head("m.json")
    assert head.metadata == {
        "prompt": metadata["Prompt"],
        "seconds": "5",
        "model_version": "v2",
    }
    with remote.stream("m.json") as stream:
        assert stream.info.metadata == head.metadata


def test_metadata_belongs_to_one_put_even_of_the_same_bytes(remote: Remote) -> None:
    # Where metadata lives beside the object (stores_metadata False), a record naming the
    # same etag must not outlive the put it came with.
    remote.put("same", b"bytes", metadata={"k": "v"})
    remote.put("same", b"bytes")
    assert remote.head("same").metadata == {}
    remote.put("again", b"bytes", metadata={"k": "v"})
    remote.delete("again")
    remote.put("again", b"bytes")
    with remote.stream("again") as stream:
        assert stream.info.metadata == {}
    assert remote.put("same", b"bytes", metadata={"k": "w"}).metadata == {"k": "w"}
    assert remote.head("same").metadata == {"k": "w"}


def test_content_types_given_and_guessed(remote: Remote) -> None:
    remote.put("v/a.mp4", b"\x00")
    remote.put("v/page.html", b"<p>", content_type="text/html; charset=utf-8")
    remote.put("v/noext", b"?")
    assert remote.head("v/a.mp4").content_type == "video/mp4"
    assert remote.head("v/page.html").content_type == "text/html; charset=utf-8"
    assert remote.head("v/noext").content_type == "application/octet-stream"


@pytest.mark.parametrize(
    "metadata",
    [
        {"bad name": "x"},
        {"": "x"},
        {"naïve": "x"},
        {"a": "b", "A": "c"},
        {"big": "x" * 3000},
        {"ctl": "line\nbreak"},
        {"n": 5},
    ],
)
def test_metadata_a_remote_cannot_store_is_refused(
    remote: Remote, metadata: dict[str, str]
) -> None:
    with pytest.raises(InvalidMetadata):
        remote.put("m", b"x", metadata=metadata)
    with pytest.raises(NotFoundError):
        remote.head("m")  # nothing half-stored


def test_bad_content_type_is_refused(remote: Remote) -> None:
    with pytest.raises(InvalidInput, match="content_type"):
        remote.put("m", b"x", content_type="not a type\r\nX-Evil: 1")


# -- keys -----------------------------------------------------------------------------


def test_unicode_keys_and_nfc(remote: Remote) -> None:
    composed = "vidéos/日本語/ünïcödé 1.mp4"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    remote.put(decomposed, b"one name")
    assert remote.get(composed) == b"one name"
    assert [info.key for info in remote.list("vidéos/")] == [composed]


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "a/./b", "../up", "a\\b", "nul\x00", ".cargohold/x"]
)
def test_invalid_keys_are_rejected_everywhere(remote: Remote, key: str) -> None:
    with pytest.raises(InvalidKey):
        remote.put(key, b"x")
    with pytest.raises(InvalidKey):
        remote.get(key)
    with pytest.raises(InvalidKey):
        remote.delete(key)


def test_reserved_keys_work_for_cargohold_and_stay_out_of_listings(remote: Remote) -> None:
    lease = internal_key("leases/build-1")
    remote.put(lease, b"holder")
    remote.put("user/file", b"data")
    assert remote.get(lease) == b"holder"
    assert [info.key for info in remote.list("")] == ["user/file"]
    assert [info.key for info in remote.list(internal_prefix("leases/"))] == [lease]
    remote.delete(lease)
    with pytest.raises(NotFoundError):
        remote.head(lease)


def test_a_key_that_is_also_a_folder(remote: Remote) -> None:
    remote.put("a", b"object a")
    if remote.key_can_be_folder:
        remote.put("a/b", b"object a/b")
        assert remote.get("a") == b"object a"
        assert remote.get("a/b") == b"object a/b"
    else:
        with pytest.raises(InvalidKey, match="folder"):
            remote.put("a/b", b"object a/b")
        remote.put("c/d", b"x")
        with pytest.raises(InvalidKey, match="folder"):
            remote.put("c", b"x")
        remote.delete("c/d")
        remote.put("c", b"the name is free once its folder is empty")
    assert remote.get("a") == b"object a"


# -- listing --------------------------------------------------------------------------


def test_listing_2500_keys_with_prefixes(remote: Remote) -> None:
    keys = [f"p/{i % 10}/{i:05d}.json" for i in range(2500)] + ["p/1x", "p/10x", "q/1"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: remote.put(k, k.encode()), keys))
    everything = [info.key for info in remote.list()]
    assert everything == sorted(keys, key=lambda k: k.encode())
    assert len([i for i in remote.list("p/")]) == 2502
    in_one = [info.key for info in remote.list("p/1")]
    assert in_one == sorted([k for k in keys if k.startswith("p/1")], key=lambda k: k.encode())
    assert len(in_one) == 252  # 250 under p/1/, plus "p/1x" and "p/10x"
    assert [info.key for info in remote.list("p/1/")] == sorted(
        k for k in keys if k.startswith("p/1/")
    )
    assert list(remote.list("nothing/")) == []
    first = next(remote.list("q/"))
    assert isinstance(first, ObjectInfo)
    assert (first.key, first.size) == ("q/1", 3)


def test_listing_is_sorted_and_complete(remote: Remote) -> None:
    keys = [
        "a-c",
        "a/b",
        "a/b/c" if remote.key_can_be_folder else "a/d",
        "a0",
        "ab",
        "é",
        "z",
        "日",
    ]
    for key in keys:
        remote.put(key, b"")
    listed = [info.key for info in remote.list()]
    byte_order = sorted(keys, key=lambda k: k.encode())
    folder_order = sorted(keys, key=lambda k: [s.encode() for s in k.split("/")])
    # S3 on AWS, moto and memory sort by bytes; SeaweedFS walks folders ('a/b' before 'a-c').
    assert listed in (byte_order, folder_order)


# -- deletes --------------------------------------------------------------------------


def test_delete_is_idempotent(remote: Remote) -> None:
    remote.delete("never/existed")
    remote.put("gone", b"x")
    remote.delete("gone")
    remote.delete("gone")
    with pytest.raises(NotFoundError):
        remote.get("gone")
    with pytest.raises(FileNotFoundError):  # the builtin a caller already catches
        remote.head("gone")
    assert list(remote.list()) == []


def _other_instance(remote: Remote) -> Remote:
    """A second handle on ``remote``'s store, as another instance of the app opens it:
    its own object, connections, locks and (on hf://) its own idea of the branch head."""
    if isinstance(remote, FileRemote):
        return FileRemote(remote.root)
    return open_remote(remote.url, settings=UNLIMITED)


def test_a_conditional_delete_spares_a_newer_write(remote: Remote) -> None:
    if not remote.conditional_deletes:
        etag = remote.put("doc", b"v1").etag
        with pytest.raises(InvalidInput, match="conditional delete"):
            remote.delete("doc", if_match=etag)
        with pytest.raises(InvalidInput, match="conditional delete"):
            remote.apply([], [Delete("doc", etag)])
        assert remote.get("doc") == b"v1", "a refused conditional delete deletes nothing"
        return
    with _other_instance(remote) as other:
        v1 = remote.put("doc", b"v1").etag
        other.put("doc", b"v2")  # instance B writes after instance A saw v1
        with pytest.raises(PreconditionFailed):
            remote.delete("doc", if_match=v1)  # instance A's delete, decided on v1
        assert other.get("doc") == b"v2"
        assert remote.get("doc") == b"v2"
        # The same in a batch, as the syncer sends it: the result is the error.
        assert remote.put("keep", b"x").etag
        _, results = remote.apply([], [Delete("doc", v1), "keep"])
        assert isinstance(results[0], PreconditionFailed)
        assert results[1] is None
        assert remote.get("doc") == b"v2"
        v2 = other.head("doc").etag
        remote.delete("doc", if_match=v2)  # the version that is there: deleted
        with pytest.raises(NotFoundError):
            other.head("doc")
        with pytest.raises(PreconditionFailed):  # a missing key has no etag to match
            remote.delete("doc", if_match=v2)


def test_conditional_delete_refuses_a_bad_etag(remote: Remote) -> None:
    remote.put("doc", b"v1")
    for bad in ("", 5):
        with pytest.raises(InvalidInput, match="if_match"):
            remote.delete("doc", if_match=bad)  # type: ignore[arg-type]
    assert remote.get("doc") == b"v1"


# -- conditional puts -----------------------------------------------------------------


def _refused(remote: Remote, key: str, **condition: str) -> None:
    """A remote without conditional writes refuses the put, naming the fix, and writes
    nothing."""
    before = remote.get(key) if any(i.key == key for i in remote.list(key)) else None
    with pytest.raises(ConfigError, match="hf-s3://") as refused:
        remote.put(key, b"written anyway?", **condition)  # type: ignore[arg-type]
    assert refused.value.key == key
    if before is None:
        with pytest.raises(NotFoundError):
            remote.head(key)
    else:
        assert remote.get(key) == before


def test_create_only(remote: Remote) -> None:
    if not remote.conditional_writes:
        _refused(remote, "once", mode="create")
        remote.put("once", b"first")
        _refused(remote, "once", mode="create")
        return
    remote.put("once", b"first", mode="create")
    with pytest.raises(AlreadyExists):
        remote.put("once", b"second", mode="create")
    with pytest.raises(FileExistsError):
        remote.put("once", b"third", mode="create")
    assert remote.get("once") == b"first"


def test_if_match(remote: Remote) -> None:
    info = remote.put("doc", b"v1")
    if not remote.conditional_writes:
        _refused(remote, "doc", if_match=info.etag)
        return
    updated = remote.put("doc", b"v2", if_match=info.etag)
    with pytest.raises(PreconditionFailed):
        remote.put("doc", b"v3", if_match=info.etag)
    assert remote.get("doc") == b"v2"
    assert remote.head("doc").etag == updated.etag


def test_if_match_on_a_missing_key_fails(remote: Remote) -> None:
    if not remote.conditional_writes:
        _refused(remote, "missing", if_match="0123456789abcdef0123456789abcdef")
        return
    with pytest.raises(PreconditionFailed):
        remote.put("missing", b"x", if_match="0123456789abcdef0123456789abcdef")
    with pytest.raises(NotFoundError):
        remote.head("missing")


def test_create_and_if_match_cannot_be_combined(remote: Remote) -> None:
    with pytest.raises(InvalidInput, match="combined"):
        remote.put("k", b"x", mode="create", if_match="abc")
    with pytest.raises(InvalidInput, match="mode"):
        remote.put("k", b"x", mode="append")  # type: ignore[arg-type]


def test_16_threads_racing_create_only_one_wins(remote: Remote) -> None:
    handles = _handles(remote, 16)
    results = _race(
        16, lambda i: handles[i].put("race/create", f"writer {i}".encode(), mode="create")
    )
    if not remote.conditional_writes:  # every racer refused: none may win silently
        assert all(isinstance(r, ConfigError) for r in results), results
        assert list(remote.list("race/")) == []
        return
    winners = [i for i, r in enumerate(results) if isinstance(r, ObjectInfo)]
    losers = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(winners) == 1, results
    assert len(losers) == 15, results
    assert remote.get("race/create") == f"writer {winners[0]}".encode()


def test_16_threads_racing_if_match_one_wins(remote: Remote) -> None:
    base = remote.put("race/cas", b"base")
    handles = _handles(remote, 16)
    results = _race(
        16, lambda i: handles[i].put("race/cas", f"writer {i}".encode(), if_match=base.etag)
    )
    if not remote.conditional_writes:  # every racer refused: none may win silently
        assert all(isinstance(r, ConfigError) for r in results), results
        assert remote.get("race/cas") == b"base"
        return
    winners = [i for i, r in enumerate(results) if isinstance(r, ObjectInfo)]
    losers = [r for r in results if isinstance(r, ConflictError)]
    assert len(winners) == 1, results
    assert len(losers) == 15, results
    assert remote.get("race/cas") == f"writer {winners[0]}".encode()


# -- bad input ------------------------------------------------------------------------


def test_put_refuses_text_and_other_types(remote: Remote, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"encode"):
        remote.put("t", "some text")  # type: ignore[arg-type]
    text_file = tmp_path / "t.txt"
    text_file.write_text("x")
    with text_file.open() as fh, pytest.raises(InvalidInput, match="binary"):
        remote.put("t", fh)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not a file"):
        remote.put("t", tmp_path / "missing.bin")
    with pytest.raises(InvalidInput):
        remote.put("t", 42)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        remote.head("t")


# -- batches --------------------------------------------------------------------------


def test_batches_report_each_result_in_order(remote: Remote, tmp_path: Path) -> None:
    remote.put("exists", b"old")
    conditional = Put("exists", b"x", mode="create")
    if not remote.conditional_writes:
        # Refused before anything is sent; the batch then runs without the condition.
        with pytest.raises(ConfigError, match="hf-s3://"):
            remote.put_many([Put("b/1", b"one"), conditional])
        with pytest.raises(NotFoundError):
            remote.head("b/1")
        conditional = Put("exists", b"old")
    results = remote.put_many(
        [
            Put("b/1", b"one", metadata={"n": "1"}),
            conditional,
            Put("b/2", b"two", content_type="text/plain"),
        ]
    )
    assert isinstance(results[0], ObjectInfo)
    assert isinstance(results[1], AlreadyExists if remote.conditional_writes else ObjectInfo)
    assert isinstance(results[2], ObjectInfo)
    assert remote.get("exists") == b"old"
    assert remote.head("b/1").metadata == {"n": "1"}
    assert remote.get_many(["b/2", "missing", "b/1"])[0::2] == [b"two", b"one"]
    assert isinstance(remote.get_many(["missing"])[0], NotFoundError)
    downloads = remote.download_many([("b/1", tmp_path / "one"), ("nope", tmp_path / "nope")])
    assert isinstance(downloads[0], ObjectInfo)
    assert downloads[0].etag == remote.head("b/1").etag
    assert downloads[0].metadata == {"n": "1"}
    assert (tmp_path / "one").read_bytes() == b"one"
    assert isinstance(downloads[1], NotFoundError)
    assert remote.delete_many(["b/1", "b/2", "never"]) == [None, None, None]
    assert [i.key for i in remote.list("b/")] == []


def test_batches_refuse_bad_input_before_sending_anything(remote: Remote) -> None:
    with pytest.raises(InvalidKey):
        remote.put_many([Put("good", b"x"), Put("../bad", b"x")])
    with pytest.raises(NotFoundError):
        remote.head("good")
    with pytest.raises(InvalidInput, match="concurrency"):
        remote.get_many(["a"], concurrency=0)


def test_many_puts_in_flight(remote: Remote) -> None:
    keys = [f"many/{i:04d}" for i in range(500)]
    results = remote.put_many([Put(k, k.encode()) for k in keys], concurrency=32)
    assert all(isinstance(r, ObjectInfo) for r in results)
    assert remote.get_many(keys, concurrency=32) == [k.encode() for k in keys]


def test_fetch_many_returns_bytes_with_their_info(remote: Remote) -> None:
    remote.put("f/a.json", b"{}", metadata={"k": "v"})
    [first, missing] = remote.fetch_many(["f/a.json", "f/none"])
    assert isinstance(first, tuple)
    info, data = first
    assert data == b"{}"
    assert (info.metadata, info.content_type, info.size) == ({"k": "v"}, "application/json", 2)
    assert isinstance(missing, NotFoundError)
