"""Shared fixtures: real S3 servers for the whole run, stopped by PID at the end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Literal

import pytest

from testsupport.faultproxy import FaultProxy
from testsupport.s3gateway import S3Gateway
from testsupport.servers import MotoServer, S3Server, SeaweedFS

#: The namespace (Hub user or organisation) that owns the shared bucket on the gateway stand-in.
GATEWAY_NAMESPACE = "ana"


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


def start_gateway(request: pytest.FixtureRequest, metadata: Literal["drop", "refuse"]) -> S3Gateway:
    """The Hub's S3 gateway stand-in (testsupport/s3gateway.py) in front of the shared
    SeaweedFS, its bucket owned by GATEWAY_NAMESPACE, for this test only. The test fails
    at teardown if the stand-in's CDN was ever sent an Authorization header, or if the
    gateway refused a request: cargohold must never send what the gateway does not take
    (a test that provokes refusals on purpose checks and clears them)."""
    server: SeaweedFS = request.getfixturevalue("seaweedfs")
    gateway = S3Gateway(server.endpoint, metadata=metadata).__enter__()
    gateway.own(GATEWAY_NAMESPACE, request.getfixturevalue("seaweedfs_bucket"))

    def stop() -> None:
        gateway.close()
        assert gateway.leaks == [], f"the CDN was sent an Authorization header: {gateway.leaks}"
        assert gateway.refusals == [], f"the gateway refused: {gateway.refusals}"

    request.addfinalizer(stop)
    return gateway


@pytest.fixture
def hub_gateway(request: pytest.FixtureRequest) -> S3Gateway:
    """The gateway stand-in, dropping ``x-amz-meta-*`` headers (see :func:`start_gateway`)."""
    return start_gateway(request, "drop")


def gateway_url(
    gateway: S3Gateway, server: S3Server, bucket: str, prefix: str | None = None
) -> str:
    """An hf-s3:// URL for a fresh prefix in ``bucket`` through ``gateway``."""
    prefix = prefix or f"t-{uuid.uuid4().hex[:12]}"
    return (
        f"hf-s3://{GATEWAY_NAMESPACE}/{bucket}/{prefix}"
        f"?endpoint={gateway.namespace_endpoint(GATEWAY_NAMESPACE)}"
        f"&access_key_id={server.access_key}&secret_access_key={server.secret_key}"
    )


def private_seaweedfs(bucket: str) -> Iterator[SeaweedFS]:
    """A SeaweedFS of a module's own with ``bucket`` made, for tests that stop or kill it
    (an outage) without disturbing the shared one. Use it as a module-scoped fixture."""
    server = SeaweedFS().start()
    try:
        server.make_bucket(bucket)
        yield server
    finally:
        server.cleanup()
