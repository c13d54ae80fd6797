"""The Space outputs example on the Hub stand-in, on a Storage Bucket (``hf://buckets/``,
the remote its README documents) and on a dataset repo (the alternative): restart on an
empty disk and the outputs are back; delete one and it is gone from the remote too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes import open_remote
from examples.space_outputs.app import OutputsApp, main
from tests.hf.conftest import LFS_DATA_WARNING, UNLIMITED, bucket_url, hf_url
from testsupport.hubstandin import HubStandIn

APP = Path(__file__).resolve().parents[2] / "examples" / "space_outputs" / "app.py"

pytestmark = pytest.mark.filterwarnings(LFS_DATA_WARNING)

#: The two remotes the README names: a bucket first, a dataset repo as the alternative.
REMOTES: dict[str, Callable[[HubStandIn], str]] = {"bucket": bucket_url, "dataset": hf_url}


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


@pytest.mark.parametrize("remote", REMOTES)
def test_outputs_survive_a_restart_and_deletions_reach_the_remote(
    hf_env: HubStandIn, tmp_path: Path, remote: str
) -> None:
    url = REMOTES[remote](hf_env)
    options = {"signal_handlers": False, "hf_commits_per_hour": 1e9}
    with cargohold.open(url, data_dir=tmp_path / "disk", **options) as hold:
        app = OutputsApp(hold, tmp_path / "space" / "outputs")
        made = [app.generate(prompt) for prompt in ("a red fox", "a blue whale", "a green owl")]
        images = {path.name: path.read_bytes() for path in made}
        hold.flush(60)  # scans the folder, then uploads
    assert _keys(url) == {f"outputs/{name}" for name in images}
    shutil.rmtree(tmp_path / "disk")  # the Space restarts: its disk is gone
    shutil.rmtree(tmp_path / "space")

    with cargohold.open(url, data_dir=tmp_path / "new-disk", **options) as hold:
        app = OutputsApp(hold, tmp_path / "space" / "outputs")
        assert {p.name: p.read_bytes() for p in app.gallery()} == images
        app.delete(made[0].name)
        hold.flush(60)
    assert _keys(url) == {f"outputs/{p.name}" for p in made[1:]}


def _in_a_child(env: dict[str, str], cwd: Path) -> Callable[..., str]:
    """Runs the app's command line in a process of its own, as a Space does."""

    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, str(APP), *args],
            env={**os.environ, **env, "PYTHONPATH": str(APP.parents[2])},
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    return run


def _in_this_process(
    env: dict[str, str],
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., str]:
    """Runs the app's ``main()`` here. For the bucket: the stand-in checks each upload in
    hf_xet's local CAS, whose database opens in one process at a time, so an upload from a
    child is refused while the child holds it (the Hub's CAS is a server: no such limit)."""
    for name, value in {**env, "CARGOHOLD_SIGNAL_HANDLERS": "false"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)

    def run(*args: str) -> str:
        capsys.readouterr()
        main(list(args))
        return capsys.readouterr().out

    return run


@pytest.mark.parametrize("remote", REMOTES)
def test_the_command_line(
    hf_env: HubStandIn,
    tmp_path: Path,
    remote: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = REMOTES[remote](hf_env)
    env = {"CARGOHOLD_REMOTE": url, "CARGOHOLD_DATA_DIR": str(tmp_path / "data")}
    if remote == "bucket":
        run = _in_this_process(env, tmp_path, monkeypatch, capsys)
    else:
        run = _in_a_child(env, tmp_path)
    first = Path(run("generate", "a red fox").strip()).name
    second = Path(run("generate", "a blue whale").strip()).name
    shutil.rmtree(tmp_path / "data")  # a restart on an empty disk
    shutil.rmtree(tmp_path / "outputs")
    assert run("list").split() == sorted([first, second])
    assert (tmp_path / "outputs" / first).read_bytes().startswith(b"\x89PNG")
    run("delete", first)
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "outputs")
    assert run("list").split() == [second]
    assert _keys(url) == {f"outputs/{second}"}
