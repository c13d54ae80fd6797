"""The Gradio example in real processes, driven by gradio_client: examples cached once per
app version and kept in the remote (SeaweedFS) across a restart on an empty disk, under
``demo.launch()`` and under uvicorn; the storage service mounted and still private.

Builds are counted in a file the app appends to on each handler call (never by timing).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx

from tests.conftest import s3_url
from testsupport.proctree import ProcessTree
from testsupport.servers import SeaweedFS, free_port

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "gradio_app" / "app.py"
TOKEN = "gradio-example-token"
#: The line cargohold.gradio logs once Gradio's startup caching is done and pushed.
READY = "kept after startup"


def _env(tmp_path: Path, remote: str, port: int, **extra: str) -> dict[str, str]:
    disk = tmp_path / "disk"  # everything the host loses on a restart
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",  # Gradio must not call out
        "HF_HUB_OFFLINE": "1",
        "CARGOHOLD_REMOTE": remote,
        "CARGOHOLD_DATA_DIR": str(disk / "data"),
        "CARGOHOLD_TOKEN": TOKEN,
        "CARGOHOLD_LOG_LEVEL": "info",
        "GRADIO_EXAMPLES_CACHE": str(disk / "examples"),
        "GRADIO_TEMP_DIR": str(disk / "gradio-tmp"),
        "APP_CALLS_LOG": str(tmp_path / "calls.log"),
        "PORT": str(port),
        **extra,
    }


@contextmanager
def _running(command: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    """Start the app, wait until its startup caching is pushed, yield its URL; stop it by
    SIGTERM to its PID (as a platform does) and wait until it is gone."""
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out, ProcessTree(command, cwd=ROOT, env=env, stdout=out) as tree:
        deadline = time.monotonic() + 180
        while READY not in log.read_bytes()[offset:].decode(errors="replace"):
            if tree.returncode() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the app did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{env['PORT']}/"
        tree.signal_top(signal.SIGTERM)
        assert tree.wait_gone(60), "the app did not stop on SIGTERM"


def _launch(env: dict[str, str], log: Path) -> AbstractContextManager[str]:
    return _running([sys.executable, str(APP)], env, log)


def _uvicorn(env: dict[str, str], log: Path) -> AbstractContextManager[str]:
    command = [sys.executable, "-m", "uvicorn", "examples.gradio_app.app:app"]
    command += ["--host", "127.0.0.1", "--port", env["PORT"]]
    return _running(command, env, log)


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def _generate(url: str, prompt: str, downloads: Path) -> tuple[str, bytes]:
    """Call the app's handler through Gradio's own client (its queue and file routes)."""
    return _call(url, downloads, prompt, api_name="/generate")


def _example(url: str, index: int, downloads: Path) -> tuple[str, bytes]:
    """What a click on example ``index`` shows: Gradio's cached outputs (computed now if
    the example is not cached yet: lazy caching)."""
    return _call(url, downloads, index, api_name="/load_example")


def _call(url: str, downloads: Path, *args: object, api_name: str) -> tuple[str, bytes]:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=str(downloads))
    caption, image = client.predict(*args, api_name=api_name)
    return caption, Path(image).read_bytes()


def test_examples_are_not_recomputed_after_a_restart_on_an_empty_disk(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    remote = s3_url(seaweedfs, seaweedfs_bucket)
    env = _env(tmp_path, remote, free_port())
    log = tmp_path / "app.log"

    with _launch(env, log) as url:
        assert sorted(_calls(tmp_path)) == ["a blue whale", "a red fox"]  # cached at startup
        fox = _example(url, 0, tmp_path)
        assert fox[0] == "a sticker of a red fox"
        caption, owl = _generate(url, "a green owl", tmp_path)
        assert caption == "a sticker of a green owl"
        assert owl.startswith(b"\x89PNG")
        assert len(_calls(tmp_path)) == 3
        handed_out = {p: p.read_bytes() for p in (tmp_path / "disk" / "gradio-tmp").rglob("*.png")}
        assert owl in handed_out.values()

        # The service is mounted, and private: no token, no objects.
        redirect = httpx.get(url + "storage", headers={"x-forwarded-for": "203.0.113.9"})
        assert (redirect.status_code, redirect.headers["location"]) == (307, "storage/")
        listing = url + "storage/api/objects?prefix=gradio/examples/&limit=1000"
        assert httpx.get(listing, headers={"x-forwarded-for": "203.0.113.9"}).status_code == 401
        page = httpx.get(listing, headers={"authorization": f"Bearer {TOKEN}"}).json()
        assert any(o["key"].endswith("/log.csv") for o in page["objects"])

    shutil.rmtree(tmp_path / "disk")  # a redeploy: the disk is gone, the remote stays

    env["PORT"] = str(free_port())
    with _uvicorn(env, log) as url:  # the same app, served another way
        assert len(_calls(tmp_path)) == 3, "the examples were computed again"
        assert _example(url, 0, tmp_path) == fox  # the restored results are what is shown
        caption, owl_again = _generate(url, "a green owl", tmp_path)  # the handler runs; memo hits
        assert owl_again == owl
        auth = httpx.get(url + "storage/api/auth", headers={"authorization": f"Bearer {TOKEN}"})
        assert auth.json()["access"] == "write"
        for path, data in handed_out.items():  # outputs=True: links given out still open
            assert httpx.get(f"{url}gradio_api/file={path}").content == data
    assert len(_calls(tmp_path)) == 4


def test_a_new_app_version_computes_its_examples_again(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    remote = s3_url(seaweedfs, seaweedfs_bucket)
    env = _env(tmp_path, remote, free_port(), APP_VERSION="v1")
    log = tmp_path / "app.log"
    with _launch(env, log):
        assert len(_calls(tmp_path)) == 2

    env.update(APP_VERSION="v2", PORT=str(free_port()))  # same disk, new version
    with _launch(env, log):
        assert len(_calls(tmp_path)) == 4, "version v2 used v1's examples"

    shutil.rmtree(tmp_path / "disk")
    env.update(APP_VERSION="v1", PORT=str(free_port()))  # back to v1, on an empty disk
    with _launch(env, log):
        assert len(_calls(tmp_path)) == 4, "v1's examples were not restored"


def test_lazily_cached_examples_are_kept_too(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    remote = s3_url(seaweedfs, seaweedfs_bucket)
    env = _env(tmp_path, remote, free_port(), GRADIO_CACHE_MODE="lazy")
    log = tmp_path / "app.log"
    with _launch(env, log) as url:
        assert _calls(tmp_path) == []  # lazy: nothing computed at startup
        whale = _example(url, 1, tmp_path)  # the first click computes and caches it
        assert _calls(tmp_path) == ["a blue whale"]
        assert _example(url, 1, tmp_path) == whale
        assert _calls(tmp_path) == ["a blue whale"]
    # (pushed by the scan of the shutdown flush at the latest)

    shutil.rmtree(tmp_path / "disk")
    env["PORT"] = str(free_port())
    with _launch(env, log) as url:
        assert _example(url, 1, tmp_path) == whale
        assert _calls(tmp_path) == ["a blue whale"], "the cached example was computed again"
        _example(url, 0, tmp_path)  # never cached: computed now
        assert _calls(tmp_path) == ["a blue whale", "a red fox"]
