"""The generation cache pattern: pay for each generation once, share it everywhere.

A "video generator" that is slow and costs money (here a fake that sleeps and writes an
mp4-like file) is called through ``memo.get_or_create``, whose build gets an empty work
folder of cargohold's own to write its takes into: the take is moved into the Hold and
the folder removed (a ``@hold.memoize`` function gets the same folder from
``cargohold.memo.workdir()``, and returns a ``Path``, never a str). The first request for
a prompt runs it;
every later request, from any user, process or instance sharing the remote, gets the stored
take. The demo prompts are committed with the app in ``seed/``, so the demo works with no
API key and no remote at all.

    python examples/generation_cache/app.py "a cat surfing"      # generates, or serves
    python examples/generation_cache/app.py --list               # what has been generated

Refresh the seed after generating the demo prompts with:

    cargohold memo export videos --version v1 --to examples/generation_cache/seed
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cargohold
import cargohold.memo

SEED = Path(__file__).with_name("seed")
DEMO_PROMPTS = ("a cat surfing a wave", "a paper boat in the rain")
calls = 0  # how many times the expensive generator really ran (for the test)


def fake_video(prompt: str, seconds: int, workdir: Path) -> Path:
    """Stand-in for a paid video API: slow, and writes an mp4-like file."""
    global calls
    calls += 1
    time.sleep(0.2)
    out = workdir / "take_1.mp4"
    header = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42"
    out.write_bytes(header + f"{prompt} ({seconds}s)".encode() * 512)
    return out


def make_generate(hold: cargohold.Hold):  # type: ignore[no-untyped-def]
    memo = hold.memo("videos", version="v1", seed_dir=SEED)

    def generate(
        prompt: str, seconds: int = 5, progress: cargohold.memo.MemoProgressCallback | None = None
    ) -> Path:
        # progress: what the user sees while another instance builds the same prompt. In a
        # Gradio handler taking progress=gr.Progress(), pass
        # lambda p: progress(p.fraction, desc=p.message).
        entry = memo.get_or_create(
            {"prompt": prompt, "seconds": seconds},
            lambda inputs, workdir: fake_video(inputs["prompt"], inputs["seconds"], workdir),
            progress=progress,
        )
        assert entry.path is not None
        return entry.path

    return generate, memo


def main(argv: list[str]) -> None:
    with cargohold.open() as hold:
        generate, memo = make_generate(hold)
        if argv and argv[0] == "--list":
            for entry in memo.entries():
                print(entry.created.isoformat(timespec="seconds"), entry.inputs["prompt"])
            return
        path = generate(
            " ".join(argv) or DEMO_PROMPTS[0],
            progress=lambda p: print(p.message, file=sys.stderr),
        )
        print(path, f"(generator calls this run: {calls})")


if __name__ == "__main__":
    main(sys.argv[1:])
