"""The download cache against a real HTTP origin on loopback (testsupport/origin.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold import (
    Hold,
    IntegrityError,
    InvalidInput,
    NotFoundError,
    PermissionDenied,
    RemoteUnavailable,
)
from cargohold.fetch import FetchProgress, remove_stale_partials
from cargohold.keys import internal_prefix
from cargohold.remotes import FileRemote, MemoryRemote
from testsupport.children import dying_with_parent
from testsupport.origin import Origin

MiB = 1024 * 1024
OpenHold = Callable[..., Hold]


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin() as served:
        yield served


@pytest.fixture
def remote_name() -> Iterator[str]:
    name = f"fetch-{uuid.uuid4().hex}"
    yield name
    MemoryRemote.forget(name)


@pytest.fixture
def open_hold(tmp_path: Path, remote_name: str) -> Iterator[OpenHold]:
    """Opens Holds on one shared memory remote, each on its own data directory."""
    opened: list[Hold] = []

    def make(instance: str = "a", **settings: Any) -> Hold:
        settings.setdefault("signal_handlers", False)
        remote = settings.pop("remote", f"memory://{remote_name}")
        hold = cargohold.open(remote, data_dir=tmp_path / instance, **settings)
        opened.append(hold)
        return hold

    yield make
    for hold in opened:
        hold.close(timeout=5)


def fetch_keys(hold: Hold) -> list[str]:
    return [info.key for info in hold.remote.list("fetch/")]


def test_downloads_once_then_serves_a_local_file_named_like_the_url(
    origin: Origin, open_hold: OpenHold
) -> None:
    data = os.urandom(300_000)
    url = origin.put("/words/hello.mp4", data, content_type="video/mp4")
    hold = open_hold()
    path = hold.fetch(url)
    assert path.name == "hello.mp4"
    assert path.read_bytes() == data
    assert hold.fetch(url) == path
    assert origin.gets("/words/hello.mp4") == 1
    # Stored in the Hold under a documented prefix, with what revalidation needs.
    digest = hashlib.sha256(url.encode()).hexdigest()
    info = hold.head(f"fetch/{digest}/hello.mp4")
    assert info.size == len(data)
    assert info.content_type == "video/mp4"
    assert info.metadata is not None
    assert info.metadata["url"] == url
    assert info.metadata["sha256"] == hashlib.sha256(data).hexdigest()
    assert info.metadata["etag"].startswith('"')
    assert "GMT" in info.metadata["last-modified"]
    record = json.loads(hold.get(f"fetch/{digest}.json"))
    assert record["sha256"] == info.metadata["sha256"]
    assert record["size"] == len(data)


def test_fifty_concurrent_fetches_make_one_origin_get(origin: Origin, open_hold: OpenHold) -> None:
    data = os.urandom(2 * MiB)
    url = origin.put("/models/model.bin", data)
    origin.slow("/models/model.bin", 0.5)  # so that the fifty really overlap
    hold = open_hold()
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(hold.fetch(url).read_bytes()))
        for _ in range(50)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [data] * 50
    assert origin.gets("/models/model.bin") == 1


def test_fifty_fetches_from_five_instances_make_one_origin_get(
    origin: Origin, open_hold: OpenHold
) -> None:
    data = os.urandom(MiB)
    url = origin.put("/shards/00001.parquet", data)
    origin.slow("/shards/00001.parquet", 0.5)
    holds = [open_hold(f"instance-{n}") for n in range(5)]
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda h=hold: results.append(h.fetch(url).read_bytes()))
        for hold in holds
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [data] * 50
    assert origin.gets("/shards/00001.parquet") == 1
    assert not list(holds[0].remote.list(internal_prefix("leases/"))), "leases released"


WORKER = textwrap.dedent(
    """
    import sys, threading
    import cargohold
    remote, data_dir, url = sys.argv[1:4]
    hold = cargohold.open(remote, data_dir=data_dir, signal_handlers=False)
    print("READY", flush=True)
    sys.stdin.readline()
    sizes = []
    threads = [threading.Thread(target=lambda: sizes.append(len(hold.fetch(url).read_bytes())))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("SIZES", *sizes, flush=True)
    hold.close()
    """
)


def test_processes_and_instances_share_one_download(origin: Origin, tmp_path: Path) -> None:
    data = os.urandom(MiB)
    url = origin.put("/videos/sign.mp4", data)
    origin.slow("/videos/sign.mp4", 1.0)
    remote = (tmp_path / "remote").as_uri()
    # Two processes on one data directory (the file lock), two more on their own (the lease).
    dirs = [tmp_path / "shared", tmp_path / "shared", tmp_path / "own-1", tmp_path / "own-2"]
    workers = [
        subprocess.Popen(
            dying_with_parent([sys.executable, "-c", WORKER, remote, str(d), url]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for d in dirs
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "READY"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            assert worker.returncode == 0
            assert out.split("SIZES", 1)[1].split() == [str(len(data))] * 5
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate(timeout=10)
    assert origin.gets("/videos/sign.mp4") == 1


def test_a_restarted_instance_copies_from_the_remote_not_the_origin(
    origin: Origin, open_hold: OpenHold, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    url = origin.put("/words/thanks.mp4", data)
    first = open_hold("first")
    first.fetch(url)
    first.close()
    shutil.rmtree(tmp_path / "first")  # the instance's disk is gone with it
    again = open_hold("second")
    assert again.fetch(url).read_bytes() == data
    assert origin.gets("/words/thanks.mp4") == 1


def test_sha256_is_verified_and_a_mismatch_caches_nothing(
    origin: Origin, open_hold: OpenHold, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    url = origin.put("/m/weights.bin", data)
    hold = open_hold()
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityError, match="nothing was cached"):
        hold.fetch(url, sha256=wrong)
    assert fetch_keys(hold) == []
    assert not any((tmp_path / "a" / "local" / "fetch-partial").iterdir())
    right = hashlib.sha256(data).hexdigest()
    assert hold.fetch(url, sha256=right.upper()).read_bytes() == data
    # Pinned content never changes: no revalidation, whatever max_age says.
    before = origin.gets("/m/weights.bin")
    hold.fetch(url, sha256=right, max_age=0)
    assert origin.gets("/m/weights.bin") == before


def test_an_interrupted_download_resumes_with_range(origin: Origin, open_hold: OpenHold) -> None:
    data = os.urandom(3 * MiB)
    url = origin.put("/big/episode.mp4", data)
    origin.fail_mid_stream("/big/episode.mp4", after=MiB + 123)
    hold = open_hold()
    assert hold.fetch(url).read_bytes() == data
    first, second = origin.requests_for("/big/episode.mp4")
    assert (first.status, first.headers.get("Range")) == (200, None)
    assert (second.status, second.headers["Range"]) == (206, f"bytes={MiB + 123}-")
    assert second.headers["If-Range"] == first_etag(origin, "/big/episode.mp4")


def first_etag(origin: Origin, path: str) -> str:
    return origin.files[path].etag


def test_a_download_cut_off_in_an_earlier_call_resumes_in_the_next(
    origin: Origin, open_hold: OpenHold
) -> None:
    data = os.urandom(2 * MiB)
    url = origin.put("/big/dataset.tar", data)
    origin.fail_mid_stream("/big/dataset.tar", after=700_000)
    hold = open_hold(max_retries=0)
    with pytest.raises(RemoteUnavailable, match="did not answer"):
        hold.fetch(url)
    assert fetch_keys(hold) == []  # nothing half-downloaded is stored
    assert hold.fetch(url).read_bytes() == data
    ranges = [r.headers.get("Range") for r in origin.requests_for("/big/dataset.tar")]
    assert ranges == [None, "bytes=700000-"]


def test_an_origin_without_ranges_is_downloaded_again_from_the_start(
    origin: Origin, open_hold: OpenHold
) -> None:
    data = os.urandom(2 * MiB)
    url = origin.put("/plain/file.bin", data, ranges=False)
    origin.fail_mid_stream("/plain/file.bin", after=MiB)
    hold = open_hold()
    assert hold.fetch(url).read_bytes() == data
    assert [r.status for r in origin.requests_for("/plain/file.bin")] == [200, 200]


def test_a_partial_file_the_origin_refuses_to_range_starts_over(
    origin: Origin, open_hold: OpenHold, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    url = origin.put("/odd/file.bin", data)
    hold = open_hold()
    # A partial file longer than the file is now (left by a crash, say): 416, then a fresh GET.
    digest = hashlib.sha256(url.encode()).hexdigest()
    partial = tmp_path / "a" / "local" / "fetch-partial"
    partial.mkdir()
    (partial / f"{digest}.part").write_bytes(b"x" * 200_000)
    meta = {"url": url, "validator": origin.files["/odd/file.bin"].etag}
    (partial / f"{digest}.part.json").write_text(json.dumps(meta))
    assert hold.fetch(url).read_bytes() == data
    assert [r.status for r in origin.requests_for("/odd/file.bin")] == [416, 200]


def test_revalidates_after_max_age_with_one_conditional_request(
    origin: Origin, open_hold: OpenHold
) -> None:
    data = os.urandom(150_000)
    url = origin.put("/words/yes.mp4", data)
    hold = open_hold()
    path = hold.fetch(url)
    assert hold.fetch(url, max_age=0) == path
    check = origin.requests_for("/words/yes.mp4")[-1]
    assert check.status == 304
    assert check.headers["If-None-Match"] == origin.files["/words/yes.mp4"].etag
    assert "GMT" in check.headers["If-Modified-Since"]
    # The 304 counts as a check: within max_age of it, no request at all.
    hold.fetch(url, max_age=3600)
    assert origin.gets("/words/yes.mp4") == 2
    # A changed file is downloaded again.
    origin.put("/words/yes.mp4", b"new take")
    assert hold.fetch(url, max_age=0).read_bytes() == b"new take"
    assert origin.requests_for("/words/yes.mp4")[-1].status == 200


def test_the_stale_copy_is_served_while_the_origin_is_down(
    origin: Origin, open_hold: OpenHold, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(80_000)
    url = origin.put("/words/no.mp4", data)
    other = origin.put("/words/maybe.mp4", b"never fetched")
    hold = open_hold(retry_timeout=1, max_retries=1)
    path = hold.fetch(url)
    origin.down()
    try:
        with caplog.at_level(logging.WARNING, logger="cargohold.fetch"):
            assert hold.fetch(url, max_age=0).read_bytes() == data
        assert any("origin cannot be reached" in r.getMessage() for r in caplog.records)
        with pytest.raises(RemoteUnavailable, match="did not answer") as err:
            hold.fetch(other)
        assert isinstance(err.value, ConnectionError)
    finally:
        origin.up()
    origin.error("/words/no.mp4", 503)  # a failing origin counts as down too
    assert hold.fetch(url, max_age=0) == path


def test_origin_errors_and_bad_arguments(origin: Origin, open_hold: OpenHold) -> None:
    hold = open_hold()
    with pytest.raises(NotFoundError, match="404"):
        hold.fetch(origin.url("/missing.mp4"))
    origin.put("/private/model.bin", b"secret weights")
    origin.error("/private/model.bin", 401)
    with pytest.raises(PermissionDenied, match="Authorization"):
        hold.fetch(origin.url("/private/model.bin"))
    path = hold.fetch(origin.url("/private/model.bin"), headers={"Authorization": "Bearer hf_x"})
    assert path.read_bytes() == b"secret weights"
    assert origin.requests_for("/private/model.bin")[-1].headers["Authorization"] == "Bearer hf_x"
    with pytest.raises(InvalidInput, match="http:// or https://"):
        hold.fetch("ftp://example.org/a.mp4")
    with pytest.raises(InvalidInput, match="64 hex digits"):
        hold.fetch(origin.url("/private/model.bin"), sha256="abc")
    with pytest.raises(InvalidInput, match="max_age"):
        hold.fetch(origin.url("/private/model.bin"), max_age=-1)


def test_secrets_in_the_url_are_not_stored(origin: Origin, open_hold: OpenHold) -> None:
    origin.put("/signed/clip.mp4", b"clip")
    url = origin.url("/signed/clip.mp4") + "?token=s3cr3t&lang=en"
    hold = open_hold()
    path = hold.fetch(url)
    assert path.name == "clip.mp4"
    stored = b"".join(hold.remote.get(k) for k in fetch_keys(hold) if k.endswith(".json"))
    assert b"s3cr3t" not in stored
    assert b"lang=en" in stored
    metadata = [hold.remote.head(k).metadata or {} for k in fetch_keys(hold)]
    assert all("s3cr3t" not in m.get("url", "") for m in metadata)


def blob_key(url: str) -> str:
    return f"fetch/{hashlib.sha256(url.encode()).hexdigest()}/{url.rsplit('/', 1)[-1]}"


def test_downloads_count_against_the_local_byte_bound(origin: Origin, open_hold: OpenHold) -> None:
    bounds = {"local_max_bytes": 3 * MiB, "max_pending_bytes": MiB}
    hold = open_hold(**bounds)
    files = {f"/shard-{n}.bin": os.urandom(MiB) for n in range(5)}
    urls = {path: origin.put(path, data) for path, data in files.items()}
    for path, url in urls.items():
        assert hold.fetch(url).read_bytes() == files[path]
        assert hold.status().local_bytes <= 3 * MiB + 4096
    hold.close()
    again = open_hold(**bounds)  # the same data directory, nothing remembered in memory
    evicted = [path for path, url in urls.items() if again.local.entry(blob_key(url)) is None]
    assert evicted, "the bound evicted some downloads"
    # The evicted ones come back from the remote, not the origin.
    for path, url in urls.items():
        assert again.fetch(url).read_bytes() == files[path]
        assert origin.gets(path) == 1
    assert len([k for k in fetch_keys(again) if not k.endswith(".json")]) == 5


def test_with_fetch_to_remote_off_downloads_stay_local(origin: Origin, open_hold: OpenHold) -> None:
    bounds = {"local_max_bytes": 2 * MiB, "max_pending_bytes": MiB}
    hold = open_hold(fetch_to_remote=False, **bounds)
    data = {f"/local-{n}.bin": os.urandom(MiB) for n in range(3)}
    urls = {path: origin.put(path, blob) for path, blob in data.items()}
    for path, url in urls.items():
        assert hold.fetch(url).read_bytes() == data[path]
        assert hold.status().local_bytes <= 2 * MiB + 4096
    hold.flush()
    assert fetch_keys(hold) == []
    assert hold.status().pending_count == 0
    hold.close()
    again = open_hold(fetch_to_remote=False, **bounds)
    assert again.local.entry(blob_key(urls["/local-0.bin"])) is None
    # Evicted, so downloaded again: there is no other copy.
    assert again.fetch(urls["/local-0.bin"]).read_bytes() == data["/local-0.bin"]
    assert origin.gets("/local-0.bin") == 2


def test_an_unusable_remote_falls_back_to_downloading_alone(
    origin: Origin, open_hold: OpenHold, caplog: pytest.LogCaptureFixture
) -> None:
    url = origin.put("/words/ok.mp4", b"ok video")
    unusable = FileRemote("/sys/cargohold-unwritable-remote")
    hold = open_hold(remote=unusable)
    with caplog.at_level(logging.WARNING, logger="cargohold.fetch"):
        assert hold.fetch(url).read_bytes() == b"ok video"
    assert any("for this instance alone" in r.getMessage() for r in caplog.records)
    hold.close(timeout=0)


def test_progress_is_reported(origin: Origin, open_hold: OpenHold) -> None:
    data = os.urandom(3 * MiB + 5)
    url = origin.put("/big/progress.bin", data)
    seen: list[FetchProgress] = []
    open_hold().fetch(url, progress=seen.append)
    assert seen
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert (seen[-1].done, seen[-1].total) == (len(data), len(data))
    assert all(p.url == url for p in seen)


def test_abandoned_partial_downloads_are_removed(origin: Origin, open_hold: OpenHold) -> None:
    url = origin.put("/big/abandoned.bin", os.urandom(MiB))
    origin.fail_mid_stream("/big/abandoned.bin", after=300_000)
    hold = open_hold(max_retries=0)
    with pytest.raises(RemoteUnavailable):
        hold.fetch(url)
    assert remove_stale_partials(hold) == 0  # a day has not passed
    assert remove_stale_partials(hold, older_than=0) == 1
    hold.fetch(url)
    assert [r.headers.get("Range") for r in origin.requests_for("/big/abandoned.bin")] == [
        None,
        None,
    ]


def test_a_copy_removed_in_the_last_second_is_not_handed_out(
    origin: Origin, open_hold: OpenHold
) -> None:
    """A repeated fetch is answered from memory for a second; a copy evicted and collected
    meanwhile is noticed (its open file has no links left) and fetched again."""
    hold = open_hold()
    url = origin.put("/sign/hello.mp4", b"hello" * 20_000)
    first = hold.fetch(url)
    assert hold.fetch(url) == first  # answered from memory
    hold.flush(30)
    hold.local.evict(0)  # everything synced may go
    hold.local.collect_garbage()
    again = hold.fetch(url)  # within the second
    assert again.exists()
    assert again.read_bytes() == b"hello" * 20_000
    assert origin.gets("/sign/hello.mp4") == 1  # from the remote's copy


def test_copies_answered_from_memory_keep_a_bounded_number_of_files_open(
    origin: Origin, open_hold: OpenHold
) -> None:
    from cargohold.fetch import HOT_MAX

    hold = open_hold()
    before = len(list(Path("/proc/self/fd").iterdir()))
    for n in range(HOT_MAX + 40):
        hold.fetch(origin.put(f"/many/{n}.txt", b"x"))
    assert len(list(Path("/proc/self/fd").iterdir())) - before <= HOT_MAX + 8
    hold.close()  # and closing the Hold closes them all
    assert len(list(Path("/proc/self/fd").iterdir())) - before <= 8
