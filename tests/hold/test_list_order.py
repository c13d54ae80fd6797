"""Hold.list merges unsynced writes into the remote's listing once per key, whatever order
the remote lists in: byte order (memory, AWS, moto) or folder order (SeaweedFS, which
lists ``a/b`` before ``a-c``), and on a Hugging Face bucket (whose order the Hub does not
document; the stand-in pages in folder order and the remote sorts)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold
from cargohold.remotes import MemoryRemote
from tests.conftest import s3_url
from tests.hf.conftest import bucket_url, hub  # noqa: F401 - hub is a fixture
from testsupport.servers import SeaweedFS


@pytest.fixture(params=["memory", "file", "seaweedfs", "hf-buckets"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        name = f"order-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        MemoryRemote.forget(name)
    elif request.param == "file":
        yield (tmp_path / "remote").as_uri()
    elif request.param == "hf-buckets":
        standin = request.getfixturevalue("hub")
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name, value in standin.env().items():
            monkeypatch.setenv(name, value)
        yield bucket_url(standin)
    else:
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        yield s3_url(server, request.getfixturevalue("seaweedfs_bucket"))


@pytest.fixture
def hold(remote_url: str, tmp_path: Path) -> Iterator[Hold]:
    with cargohold.open(remote_url, data_dir=tmp_path / "data", signal_handlers=False) as opened:
        yield opened


SYNCED = ["a/b", "a/d", "a-c", "a.txt", "ab", "b/x", "z"]


def _listed(hold: Hold, prefix: str = "") -> list[tuple[str, int]]:
    return [(info.key, info.size) for info in hold.list(prefix)]


def test_a_rewritten_key_is_listed_once(hold: Hold) -> None:
    for key in SYNCED:
        hold.put(key, b"old")
    hold.flush(60)
    with hold.syncer.paused():  # the new writes stay pending while the test lists them
        hold.put("a-c", b"rewritten")  # pending, and after a folder in SeaweedFS's order
        hold.put("a/d", b"rewritten too")
        assert hold.status().pending_count == 2
        listed = _listed(hold)
    keys = [key for key, _ in listed]
    assert sorted(keys) == sorted(SYNCED), keys
    sizes = dict(listed)
    assert sizes["a-c"] == len(b"rewritten")
    assert sizes["a/d"] == len(b"rewritten too")
    assert sizes["a/b"] == len(b"old")


def test_new_and_deleted_keys_merge_once_in_any_order(hold: Hold) -> None:
    for key in SYNCED:
        hold.put(key, b"old")
    hold.flush(60)
    new = ["a-b", "a/c", "a/e", "a0", "aa", "b/w", "zz"]
    expected = sorted({*SYNCED, *new} - {"a.txt", "b/x"})
    with hold.syncer.paused():  # the new writes stay pending while the test lists them
        for key in new:
            hold.put(key, b"new")
        hold.put("a-c", b"rewritten")
        hold.delete("a.txt")
        hold.delete("b/x")
        keys = [key for key, _ in _listed(hold)]
        assert sorted(keys) == expected, keys
        assert len(keys) == len(set(keys)), keys
        under_a = [key for key, _ in _listed(hold, "a/")]
        assert sorted(under_a) == ["a/b", "a/c", "a/d", "a/e"]
    hold.flush(60)  # once synced, the remote's listing alone says the same
    assert sorted(key for key, _ in _listed(hold)) == expected
