"""The remotes every conformance case runs against. Adding a remote = one entry here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cargohold.remotes import Remote, open_remote
from cargohold.remotes.memory import MemoryRemote
from tests.conftest import s3_url
from tests.hf.conftest import LFS_DATA_WARNING, UNLIMITED, hf_url, hub  # noqa: F401 - fixture

REMOTES = ["memory", "file", "s3-seaweedfs", "s3-moto", "hf"]


def _make_remote(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if kind == "memory":
        name = f"conformance-{uuid.uuid4().hex}"
        request.addfinalizer(lambda: MemoryRemote.forget(name))
        return open_remote(f"memory://{name}")
    if kind == "file":
        return open_remote((tmp_path / "remote").as_uri())
    if kind == "s3-seaweedfs":
        server = request.getfixturevalue("seaweedfs")
        return open_remote(s3_url(server, request.getfixturevalue("seaweedfs_bucket")))
    if kind == "s3-moto":
        server = request.getfixturevalue("moto")
        return open_remote(s3_url(server, request.getfixturevalue("moto_bucket")))
    if kind == "hf":  # a dataset repo in the Hub stand-in (tests/hf/conftest.py)
        server = request.getfixturevalue("hub")
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        return open_remote(hf_url(server), settings=UNLIMITED)
    raise AssertionError(kind)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("remote") == "hf":
            item.add_marker(pytest.mark.filterwarnings(LFS_DATA_WARNING))


@pytest.fixture(params=REMOTES)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    """A fresh, empty remote of each kind."""
    with _make_remote(request.param, request, tmp_path) as made:
        yield made
