"""The sign videos example: each clip downloaded once, joined per request in scratch."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.remotes import MemoryRemote
from examples.sign_videos.app import render
from testsupport.origin import Origin

WORDS = {"hello": b"<hello>", "thank": b"<thank>", "you": b"<you>"}


@pytest.fixture
def dictionary() -> Iterator[Origin]:
    with Origin() as origin:
        for word, clip in WORDS.items():
            origin.put(f"/signs/words/{word}.mp4", clip * 1000, content_type="video/mp4")
        for letter in "abcdefghijklmnopqrstuvwxyz":
            origin.put(f"/signs/letters/{letter}.mp4", f"[{letter}]".encode() * 100)
        yield origin


def test_clips_are_fetched_once_and_joined_in_scratch(dictionary: Origin, tmp_path: Path) -> None:
    base = dictionary.url("/signs")
    name = f"signs-{uuid.uuid4().hex}"
    try:
        run_two_instances(dictionary, base, f"memory://{name}", tmp_path)
    finally:
        MemoryRemote.forget(name)


def run_two_instances(dictionary: Origin, base: str, remote: str, tmp_path: Path) -> None:
    settings = {"signal_handlers": False, "temp_dir": tmp_path / "tmp"}
    with cargohold.open(remote, data_dir=tmp_path / "first", **settings) as hold:
        video = render(hold, "Hello! Thank you.", base, request_id="r1")
        assert video == WORDS["hello"] * 1000 + WORDS["thank"] * 1000 + WORDS["you"] * 1000
        videos: list[bytes] = []
        requests = [
            threading.Thread(target=lambda: videos.append(render(hold, "thank you hello", base)))
            for _ in range(10)
        ]
        for request in requests:
            request.start()
        for request in requests:
            request.join()
        assert len(set(videos)) == 1
        assert len(videos) == 10
        # A word the dictionary lacks is fingerspelled.
        assert render(hold, "bob", base) == b"[b]" * 100 + b"[o]" * 100 + b"[b]" * 100
        scratch = tmp_path / "tmp" / "scratch"
        assert not any(scratch.iterdir()), "every request's workspace is gone"
    for word in WORDS:
        assert dictionary.gets(f"/signs/words/{word}.mp4") == 1
    assert dictionary.gets("/signs/letters/b.mp4") == 1
    shutil.rmtree(tmp_path / "first")

    with cargohold.open(remote, data_dir=tmp_path / "second", **settings) as hold:
        assert render(hold, "hello you", base) == WORDS["hello"] * 1000 + WORDS["you"] * 1000
    assert dictionary.gets("/signs/words/hello.mp4") == 1, "the new instance used the remote"
