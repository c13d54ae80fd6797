"""A Hold on each kind of remote the hold:// filesystem is held to: memory, file and S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold
from cargohold.remotes import MemoryRemote
from tests.conftest import s3_url

REMOTES = ["memory", "file", "s3"]


def make_remote_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty remote of ``kind`` (S3: a new prefix in the shared SeaweedFS bucket)."""
    if kind == "memory":
        name = f"fsspec-{uuid.uuid4().hex}"
        request.addfinalizer(lambda: MemoryRemote.forget(name))
        return f"memory://{name}"
    if kind == "file":
        return (tmp_path / "remote").as_uri()
    if kind == "s3":
        server = request.getfixturevalue("seaweedfs")
        return s3_url(server, request.getfixturevalue("seaweedfs_bucket"))
    raise AssertionError(kind)


@pytest.fixture(params=REMOTES)
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty remote of each kind."""
    return make_remote_url(request.param, request, tmp_path)


@pytest.fixture
def hold(remote_url: str, tmp_path: Path) -> Iterator[Hold]:
    """A Hold on a fresh remote of each kind."""
    with cargohold.open(remote_url, data_dir=tmp_path / "data", signal_handlers=False) as opened:
        yield opened
