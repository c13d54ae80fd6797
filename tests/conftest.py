"""Shared fixtures: real S3 servers for the whole run, stopped by PID at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from testsupport.faultproxy import FaultProxy
from testsupport.servers import MotoServer, S3Server, SeaweedFS


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    server = SeaweedFS().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def seaweedfs_bucket(seaweedfs: SeaweedFS) -> str:
    # One bucket per run: each SeaweedFS bucket takes volumes, and tests use unique prefixes.
    return seaweedfs.make_bucket("cargohold-tests")


@pytest.fixture(scope="session")
def moto_bucket(moto: MotoServer) -> str:
    return moto.make_bucket("cargohold-tests")


def s3_url(server: S3Server, bucket: str, prefix: str | None = None) -> str:
    """An s3:// URL for a fresh prefix in ``bucket``, with the server's test credentials."""
    prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
    return (
        f"s3://{bucket}/{prefix}?endpoint={server.endpoint}"
        f"&access_key_id={server.access_key}&secret_access_key={server.secret_key}"
    )


@pytest.fixture
def seaweedfs_proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    """A fault proxy of the test's own in front of the shared SeaweedFS."""
    with FaultProxy(seaweedfs.endpoint) as proxy:
        yield proxy


def proxied_s3_url(
    proxy: FaultProxy, server: S3Server, bucket: str, prefix: str | None = None
) -> str:
    """As :func:`s3_url`, with requests going through ``proxy``."""
    return s3_url(server, bucket, prefix).replace(server.endpoint, proxy.endpoint, 1)


def private_seaweedfs(bucket: str) -> Iterator[SeaweedFS]:
    """A SeaweedFS of a module's own with ``bucket`` made, for tests that stop or kill it
    (an outage) without disturbing the shared one. Use it as a module-scoped fixture."""
    server = SeaweedFS().start()
    try:
        server.make_bucket(bucket)
        yield server
    finally:
        server.cleanup()
