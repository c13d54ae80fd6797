"""The remotes every conformance case runs against. Adding a remote = one entry here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from cargohold.remotes import Remote, open_remote
from cargohold.remotes.memory import MemoryRemote
from cargohold.remotes.s3 import _Obstore
from tests.conftest import gateway_url, s3_url, start_gateway
from tests.hf.conftest import (  # noqa: F401 - hub is a fixture
    LFS_DATA_WARNING,
    UNLIMITED,
    bucket_url,
    hf_url,
    hub,
)

REMOTES = [
    "memory",
    "file",
    "s3-seaweedfs",
    "s3-moto",
    "s3-seaweedfs-botocore",
    "s3-moto-botocore",
    "hf",
    "hf-buckets",
    "hf-bucket-dropped",
    "hf-bucket-refused",
    "hf-bucket-dropped-botocore",
]


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
    if kind.endswith("-botocore"):  # S3 as a child forked after obstore ran talks it
        made = _make_remote(kind.removesuffix("-botocore"), request, tmp_path)
        list(made.list())  # obstore used in this process, as in a parent before fork()
        # The flag fork() sets in such a child (s3._after_fork_in_child), set here so that
        # every case runs on the botocore path; tests/conformance/test_s3_fork.py forks
        # for real. Not a mock: the requests go to the real server.
        request.getfixturevalue("monkeypatch").setattr(_Obstore, "inherited", True)
        assert made._boto() is not None  # type: ignore[attr-defined]
        return made
    if kind.startswith("hf-bucket-"):  # the Hub's S3 gateway, on its stand-in
        mode: Literal["drop", "refuse"] = "refuse" if kind == "hf-bucket-refused" else "drop"
        gateway = start_gateway(request, mode)
        server = request.getfixturevalue("seaweedfs")
        url = gateway_url(gateway, server, request.getfixturevalue("seaweedfs_bucket"))
        return open_remote(url)
    if kind in ("hf", "hf-buckets"):  # a dataset repo or a bucket in the Hub stand-in
        server = request.getfixturevalue("hub")
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        url = hf_url(server) if kind == "hf" else bucket_url(server)
        return open_remote(url, settings=UNLIMITED)
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
