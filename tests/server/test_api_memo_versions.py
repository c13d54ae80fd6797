"""GET /api/memo/{namespace} without ?version= lists every version's entries, labelled
(it used to answer [] for entries stored under any version but "1")."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold
from cargohold.memo import list_entries
from cargohold.remotes import MemoryRemote
from cargohold.server import create_app
from tests.server.test_api import AUTH, TOKEN, Client


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"server-memo-{uuid.uuid4().hex}"
    with cargohold.open(
        f"memory://{name}", data_dir=tmp_path, signal_handlers=False, token=TOKEN
    ) as opened:
        for version, prompts in (("v1", ("cat", "dog")), ("v2", ("owl",))):
            memo = opened.memo("sora", version=version)
            for prompt in prompts:
                memo.get_or_create({"prompt": prompt}, lambda i, w: i["prompt"].encode())
        yield opened
    MemoryRemote.forget(name)


def test_without_a_version_every_version_is_listed_and_labelled(hold: Hold) -> None:
    client = Client(create_app(hold), headers=AUTH)
    entries = client.get("/api/memo/sora").json()
    assert [(e["version"], e["inputs"]["prompt"]) for e in entries] == [
        ("v2", "owl"),
        ("v1", "dog"),
        ("v1", "cat"),
    ]
    assert len(client.get("/api/memo/sora", params={"limit": 2}).json()) == 2
    one = client.get("/api/memo/sora", params={"version": "v1"}).json()
    assert sorted(e["inputs"]["prompt"] for e in one) == ["cat", "dog"]
    assert client.get("/api/memo/sora", params={"version": "1"}).json() == []


def test_the_python_api_behind_them(hold: Hold) -> None:
    everything = list_entries(hold, "sora")
    assert {e.version for e in everything} == {"v1", "v2"}
    assert [e.inputs["prompt"] for e in list_entries(hold, "sora", where={"prompt": "dog"})] == [
        "dog"
    ]
    assert [e.version for e in list_entries(hold, "sora", version="v2")] == ["v2"]
    assert list_entries(hold, "nothing-here") == []
