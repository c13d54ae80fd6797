"""The generation cache example: generate once, serve everywhere; the seed needs no remote."""

from __future__ import annotations

import shutil
from pathlib import Path

import cargohold
from cargohold.remotes import FileRemote
from examples.generation_cache import app
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS


def test_a_second_instance_serves_the_first_ones_generations(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    app.calls = 0
    with cargohold.open(url, data_dir=tmp_path / "first", signal_handlers=False) as hold:
        generate, _ = app.make_generate(hold)
        made = generate("a dog on a skateboard").read_bytes()
        assert generate("a dog on a skateboard").read_bytes() == made
        assert generate("a dog on a skateboard", seconds=8).read_bytes() != made
    assert app.calls == 2
    shutil.rmtree(tmp_path / "first")  # that instance's disk is gone

    with cargohold.open(url, data_dir=tmp_path / "second", signal_handlers=False) as hold:
        generate, memo = app.make_generate(hold)
        assert generate("a dog on a skateboard").read_bytes() == made
        assert generate("a dog on a skateboard", seconds=8).name == "take_1.mp4"
        assert {e.inputs["prompt"] for e in memo.entries()} == {"a dog on a skateboard"}
    assert app.calls == 2, "the second instance called the generator"


def test_the_committed_demos_need_no_remote(tmp_path: Path) -> None:
    app.calls = 0
    unreachable = FileRemote("/sys/cargohold-unreachable")
    settings = cargohold.Settings.load({}, signal_handlers=False)
    with cargohold.Hold(remote=unreachable, local_dir=tmp_path, settings=settings) as hold:
        generate, _ = app.make_generate(hold)
        for prompt in app.DEMO_PROMPTS:
            video = generate(prompt)
            assert video.read_bytes().startswith(b"\x00\x00\x00\x18ftyp")
            assert prompt.encode() in video.read_bytes()
        hold.close(timeout=0)
    assert app.calls == 0
