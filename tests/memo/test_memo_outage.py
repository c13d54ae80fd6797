"""A memo miss while the remote is down: built here, kept locally, synced when it is back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from tests.conftest import private_seaweedfs, s3_url
from testsupport.servers import SeaweedFS


@pytest.fixture(scope="module")
def own_seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS of this module's own, since its tests stop it."""
    yield from private_seaweedfs("memo-outage")


def test_a_miss_with_the_remote_down_is_built_and_synced_later(
    own_seaweedfs: SeaweedFS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = s3_url(own_seaweedfs, "memo-outage")
    quick = {"connect_timeout": 1, "retry_timeout": 2, "max_retries": 2}
    builds: list[str] = []

    def build(inputs: dict[str, object], workdir: Path) -> bytes:
        builds.append(str(inputs["prompt"]))
        return f"video of {inputs['prompt']}".encode()

    with cargohold.open(url, data_dir=tmp_path / "a", signal_handlers=False, **quick) as hold:
        memo = hold.memo("sora", version="v1")
        memo.get_or_create({"prompt": "before"}, build)  # the remote answers
        own_seaweedfs.kill()
        try:
            with caplog.at_level(logging.WARNING, logger="cargohold.memo"):
                entry = memo.get_or_create({"prompt": "cat"}, build)
            assert entry.value == b"video of cat"
            assert not entry.hit
            assert any("building it here" in r.getMessage() for r in caplog.records)
            again = memo.get_or_create({"prompt": "cat"}, build)  # a hit, from this instance
            assert again.hit
            assert builds == ["before", "cat"]
            assert hold.status().pending_count > 0  # kept in the local journal
        finally:
            own_seaweedfs.start()
        hold.flush(60)
        assert hold.status().pending_count == 0
    # Another instance, on an empty disk, finds the entry in the remote: no second build.
    with cargohold.open(url, data_dir=tmp_path / "b", signal_handlers=False) as other:
        found = other.memo("sora", version="v1").get_or_create({"prompt": "cat"}, build)
        assert found.hit
        assert found.value == b"video of cat"
    assert builds == ["before", "cat"]
