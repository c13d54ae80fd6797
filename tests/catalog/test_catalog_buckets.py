"""A Hugging Face bucket (``hf://buckets/``, no conditional writes) with the catalog: the
memo's single-flight leases live in PostgreSQL, so a build still runs once across
instances. (Without the catalog the memo refuses to open: tests/hf/test_hf_buckets.py.)"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import cargohold
from tests.hf.conftest import bucket_url, hub  # noqa: F401 - hub is a fixture
from testsupport.hubstandin import HubStandIn


def test_two_instances_build_once_with_leases_in_the_catalog(
    hub: HubStandIn,  # noqa: F811 - the fixture
    catalog_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in hub.env().items():
        monkeypatch.setenv(name, value)
    url = bucket_url(hub)
    holds = [
        cargohold.open(url, data_dir=tmp_path / n, catalog=catalog_url, signal_handlers=False)
        for n in ("a", "b")
    ]
    builds: list[str] = []
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def build(inputs: dict[str, Any], workdir: Path) -> Path:
        builds.append(inputs["prompt"])
        out = workdir / "take_1.mp4"
        out.write_bytes(b"video of " + inputs["prompt"].encode())
        return out

    def ask(i: int) -> None:
        memo = holds[i].memo("video", version="v1")
        barrier.wait()
        results[i] = memo.get_or_create({"prompt": "a cat"}, build)

    try:
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert builds == ["a cat"], "the catalog's lease keeps the build to one instance"
        assert [r.path.read_bytes() for r in results] == [b"video of a cat"] * 2
        for hold in holds:
            hold.flush(60)
        assert not any(
            ".cargohold/leases" in path for path in hub.buckets.paths(url.split("buckets/")[1])
        )
    finally:
        for hold in holds:
            hold.close()
