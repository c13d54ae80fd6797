"""The Hub stand-in (testsupport/hubstandin.py) for every test of the Hugging Face remotes.

Tests point huggingface_hub and cargohold at the stand-in with HF_ENDPOINT (and never
reach huggingface.co), turn telemetry off, and turn Xet off: the stand-in serves the
Git LFS path the Hub keeps for legacy clients, not Xet's CAS protocol.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from cargohold import Settings
from testsupport.hubstandin import HubStandIn

#: huggingface_hub 2.4 uploads LFS files with ``http_backoff("PUT", url, data=fileobj)``,
#: which httpx2 deprecates ("Use 'content=<...>'"). The upload works; the warning is
#: upstream's to fix, so tests that upload LFS files ignore exactly this one.
LFS_DATA_WARNING = "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning"

#: A budget no test exhausts unless it means to.
UNLIMITED = Settings.load({}, hf_commits_per_hour=1e9)


@pytest.fixture(scope="session")
def hub() -> Iterator[HubStandIn]:
    with HubStandIn() as server:
        yield server


@pytest.fixture
def own_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    """A stand-in of the test's own (for tests that take it down), with HF_ENDPOINT,
    HF_TOKEN and friends pointing at it, and no commit budget (children inherit both)."""
    monkeypatch.setenv("CARGOHOLD_HF_COMMITS_PER_HOUR", "1e9")
    with HubStandIn() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.fixture
def hf_env(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> HubStandIn:
    """The stand-in, with HF_ENDPOINT, HF_TOKEN and friends pointing at it for this test
    (child processes inherit them)."""
    for name, value in hub.env().items():
        monkeypatch.setenv(name, value)
    return hub


def hf_url(hub: HubStandIn, prefix: str = "", *, private: bool = False) -> str:
    """An hf:// URL of a fresh dataset repo of user ``tester`` in the stand-in."""
    repo = hub.create_repo(f"tester/t-{uuid.uuid4().hex[:12]}", private=private)
    return f"hf://datasets/{repo}/{prefix}".rstrip("/")


def bucket_url(hub: HubStandIn, prefix: str = "", *, private: bool = False) -> str:
    """An hf://buckets/ URL of a fresh Storage Bucket of user ``tester`` in the stand-in."""
    bucket = hub.buckets.create_bucket(f"tester/b-{uuid.uuid4().hex[:12]}", private=private)
    return f"hf://buckets/{bucket}/{prefix}".rstrip("/")
