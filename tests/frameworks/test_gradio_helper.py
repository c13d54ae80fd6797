"""cargohold.gradio in-process: servable files, the examples cache's version and repair,
launch() with the service mounted beside the caller's own app_kwargs."""

from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cargohold
import cargohold.gradio
from cargohold import ConfigError, InvalidInput, NotFoundError
from cargohold.gradio import VERSION_MARKER, _keep_examples, _repair
from testsupport.children import dying_with_parent
from testsupport.servers import free_port

SETTINGS = {"signal_handlers": False}


@pytest.fixture
def gradio_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "gradio-tmp"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


def test_servable_links_a_file_into_gradios_temp_folder(tmp_path: Path, gradio_temp: Path) -> None:
    with cargohold.open("memory://gr-servable", data_dir=tmp_path / "data", **SETTINGS) as hold:
        hold.put("videos/a.mp4", b"\x00" * 1000)
        source = hold.path("videos/a.mp4")
        served = Path(cargohold.gradio.servable(source))
        assert served.is_relative_to(gradio_temp)
        assert served.name == "a.mp4"
        assert served.read_bytes() == source.read_bytes()
        assert served.stat().st_ino == source.stat().st_ino  # a link: no copy on one disk
        assert cargohold.gradio.servable(source) == str(served)  # idempotent
        assert cargohold.gradio.servable(served) == str(served)  # already Gradio's
        hold.put("videos/a.mp4", b"\x01" * 1000)  # a new version: a new path
        again = Path(cargohold.gradio.servable(hold.path("videos/a.mp4")))
        assert again != served
        assert again.read_bytes() == b"\x01" * 1000
        assert served.read_bytes() == b"\x00" * 1000  # the old link is left as it was
    with pytest.raises(NotFoundError):
        cargohold.gradio.servable(tmp_path / "missing.mp4")
    with pytest.raises(InvalidInput):
        cargohold.gradio.servable(tmp_path)


def test_the_default_version_is_a_digest_of_a_file(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("print('v1')\n")
    first = cargohold.gradio.app_version(app)
    assert first.startswith("file-")
    assert first == cargohold.gradio.app_version(app)
    app.write_text("print('v2')\n")
    assert cargohold.gradio.app_version(app) != first
    with pytest.raises(ConfigError, match="version="):
        cargohold.gradio.app_version(tmp_path / "gone.py")


def _cache(folder: Path, rows: int, indices: int, files: int) -> None:
    """A gr.Examples cache folder as Gradio writes it: a header and a row per example in
    log.csv, a line per example in indices.csv, a file per row beside them."""
    folder.mkdir(parents=True)
    out = [["Caption", "Sticker", "timestamp"]]
    for i in range(rows):
        path = folder / "Sticker" / f"f{i}" / "sticker.png"
        if i < files:
            path.parent.mkdir(parents=True)
            path.write_bytes(b"\x89PNG")
        data = {"path": str(path), "url": None, "meta": {"_type": "gradio.FileData"}}
        out.append([f"caption {i}", json.dumps(data), "2026-01-01"])
    with (folder / "log.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(out)
    (folder / "indices.csv").write_text("".join(f"{i}\n" for i in range(indices)))


def _state(folder: Path) -> tuple[int, int]:
    if not (folder / "log.csv").exists():
        return (0, 0)
    with (folder / "log.csv").open(newline="") as fh:
        rows = len(list(csv.reader(fh))) - 1
    return rows, len((folder / "indices.csv").read_text().split())


@pytest.mark.parametrize(
    ("rows", "indices", "files", "kept", "changed"),
    [
        (3, 3, 3, (3, 3), False),  # whole: untouched
        (3, 2, 3, (2, 2), True),  # a row whose index was not written yet
        (2, 3, 2, (2, 2), True),  # an index whose row was not stored
        (3, 3, 1, (1, 1), True),  # rows whose files were not stored
        (2, 2, 0, (0, 0), True),  # nothing usable: Gradio computes it all again
    ],
)
def test_a_half_written_cache_is_cut_back_to_whole_examples(
    tmp_path: Path, rows: int, indices: int, files: int, kept: tuple[int, int], changed: bool
) -> None:
    folder = tmp_path / "14"
    _cache(folder, rows, indices, files)
    assert _repair(folder) is changed
    assert _state(folder) == kept


def test_another_versions_cache_is_emptied_and_this_ones_restored(tmp_path: Path) -> None:
    folder = tmp_path / "cached_examples"  # the disk survives the first redeploy, not the second

    def deploy(version: str, data_dir: str) -> cargohold.Hold:
        hold = cargohold.open("memory://gr-versions", data_dir=tmp_path / data_dir, **SETTINGS)
        _keep_examples(hold, folder, version)
        return hold

    _cache(folder / "14", 2, 2, 2)  # made before cargohold: adopted as this version's
    with deploy("v1", "d1") as hold:
        assert (folder / VERSION_MARKER).read_text() == "v1"
        assert _state(folder / "14") == (2, 2)
    with deploy("v2", "d2") as hold:  # a new version: v1's results are gone from the disk
        assert not (folder / "14").exists()
        assert hold.remote.head("gradio/examples/v1/14/log.csv").size > 0  # not from the remote
        assert not list(hold.remote.list("gradio/examples/v2/"))

    for child in sorted(folder.rglob("*"), reverse=True):  # an empty disk
        child.unlink() if child.is_file() else child.rmdir()
    with deploy("v1", "d3"):
        assert _state(folder / "14") == (2, 2)
        assert (folder / "14" / "Sticker" / "f1" / "sticker.png").read_bytes() == b"\x89PNG"


#: Run in a child: Gradio leaves event loops and sockets open in the process that launched
#: it, which this suite's warnings-as-errors would report against the next test.
_LAUNCH = """
import json, os, sys
import gradio as gr, httpx
from starlette.responses import PlainTextResponse
from starlette.routing import Route
import cargohold, cargohold.gradio

port, temp = int(sys.argv[1]), sys.argv[2]
hold = cargohold.open("memory://gr-launch", data_dir="data", token="t0ken", signal_handlers=False)
hold.put("public/readme.txt", b"hello")
with gr.Blocks() as demo:
    gr.Textbox()
cargohold.gradio.mount(demo, hold, outputs=True)  # no cached examples: no version needed

async def own(request):
    return PlainTextResponse("mine")

demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
            app_kwargs={"routes": [Route("/own", own)]})
base, key = f"http://127.0.0.1:{port}", "storage/api/objects/public/readme.txt"
seen = {
    "own": httpx.get(f"{base}/own").text,
    "anonymous": httpx.get(f"{base}/{key}").status_code,
    "token": httpx.get(f"{base}/{key}", headers={"authorization": "Bearer t0ken"}).text,
    "gradio": httpx.get(f"{base}/").status_code,
    "examples folder": os.path.exists(os.environ["GRADIO_EXAMPLES_CACHE"]),
}
demo.close()
with open(os.path.join(temp, "upload.txt"), "wb") as fh:
    fh.write(b"kept")
hold.flush()
seen["outputs"] = hold.remote.get("gradio/outputs/upload.txt").decode()
hold.close()
print(json.dumps(seen))
"""


def test_launch_serves_the_service_beside_the_callers_app_kwargs(tmp_path: Path) -> None:
    temp = tmp_path / "gradio-tmp"
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(temp),
        "GRADIO_EXAMPLES_CACHE": str(tmp_path / "examples"),
    }
    command = [sys.executable, "-c", _LAUNCH, str(free_port()), str(temp)]
    done = subprocess.run(
        dying_with_parent(command), cwd=tmp_path, env=env, capture_output=True, timeout=180
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert seen == {
        "own": "mine",  # the caller's own app_kwargs routes are kept
        "anonymous": 401,  # token mode: the mounted service is private
        "token": "hello",
        "gradio": 200,  # Gradio's page is still there
        "examples folder": False,  # nothing to cache: nothing kept (the folder may be read-only)
        "outputs": "kept",  # outputs=True: the temp folder goes to the remote
    }


def test_a_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if Gradio were not installed
    monkeypatch.delitem(sys.modules, "cargohold.gradio")
    with pytest.raises(ConfigError, match=r"cargohold\[gradio\]"):
        importlib.import_module("cargohold.gradio")


def test_one_folder_is_kept_for_one_version_per_hold(tmp_path: Path) -> None:
    folder = tmp_path / "cached_examples"
    with cargohold.open("memory://gr-twice", data_dir=tmp_path / "d", **SETTINGS) as hold:
        first = _keep_examples(hold, folder, "v1")
        assert _keep_examples(hold, folder, "v1") is first  # a second Blocks of the app
        with pytest.raises(ConfigError, match="same version="):
            _keep_examples(hold, folder, "v2")


@pytest.mark.parametrize(
    ("version", "segment"),
    [("v1", "v1"), ("file-0123abcd", "file-0123abcd"), ("1.2.3_rc", "1.2.3_rc")],
)
def test_plain_versions_name_their_folder(version: str, segment: str) -> None:
    assert cargohold.gradio._key_segment(version) == segment


@pytest.mark.parametrize("version", ["feature/x", "..", "a b", "é", "x" * 65])
def test_other_versions_are_digested_into_one_key_segment(version: str) -> None:
    segment = cargohold.gradio._key_segment(version)
    assert segment.startswith("v-")
    assert len(segment) == 18
