"""The Space outputs example on the Hub stand-in: restart on an empty disk and the outputs
are back; delete one and it is gone from the dataset repo too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes import open_remote
from examples.space_outputs.app import OutputsApp
from tests.hf.conftest import LFS_DATA_WARNING, UNLIMITED, hf_url
from testsupport.hubstandin import HubStandIn

APP = Path(__file__).resolve().parents[2] / "examples" / "space_outputs" / "app.py"

pytestmark = pytest.mark.filterwarnings(LFS_DATA_WARNING)


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandIn]:
    """A Hub stand-in, with HF_ENDPOINT and HF_TOKEN pointing at it (tests/hf/conftest.py)."""
    with HubStandIn() as hub:
        for name, value in hub.env().items():
            monkeypatch.setenv(name, value)
        yield hub


def _keys(url: str) -> set[str]:
    with open_remote(url, settings=UNLIMITED) as remote:
        return {info.key for info in remote.list()}


def test_outputs_survive_a_restart_and_deletions_reach_the_repo(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    url = hf_url(hf_env)
    options = {"signal_handlers": False, "hf_commits_per_hour": 1e9}
    with cargohold.open(url, data_dir=tmp_path / "disk", **options) as hold:
        app = OutputsApp(hold, tmp_path / "space" / "outputs")
        made = [app.generate(prompt) for prompt in ("a red fox", "a blue whale", "a green owl")]
        images = {path.name: path.read_bytes() for path in made}
        hold.flush(60)  # scans the folder, then commits
    assert _keys(url) == {f"outputs/{name}" for name in images}
    shutil.rmtree(tmp_path / "disk")  # the Space restarts: its disk is gone
    shutil.rmtree(tmp_path / "space")

    with cargohold.open(url, data_dir=tmp_path / "new-disk", **options) as hold:
        app = OutputsApp(hold, tmp_path / "space" / "outputs")
        assert {p.name: p.read_bytes() for p in app.gallery()} == images
        app.delete(made[0].name)
        hold.flush(60)
    assert _keys(url) == {f"outputs/{p.name}" for p in made[1:]}


def test_the_command_line(hf_env: HubStandIn, tmp_path: Path) -> None:
    url = hf_url(hf_env)
    env = {
        **os.environ,
        "CARGOHOLD_REMOTE": url,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(APP.parents[2]),
    }

    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, str(APP), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    name = Path(run("generate", "a red fox").strip()).name
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "outputs")
    assert run("list").split() == [name]
    assert (tmp_path / "outputs" / name).read_bytes().startswith(b"\x89PNG")
