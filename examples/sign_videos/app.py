"""The SignLink pattern: per-word sign-language videos, fetched on demand, joined per request.

A dictionary of signs lives on an origin (a CDN, a Hugging Face dataset's resolve URLs):
one short clip per word, and one per letter for fingerspelling words it lacks. Apps built
this way download clips into ``/tmp`` on each restart and race each other doing it. Here
``hold.fetch`` downloads each clip once (one request to the origin, whatever the number of
threads, workers or instances asking) and keeps it in the Hold, so a restarted instance
copies it from the remote instead of the origin; the joined video of each request is built
in its own scratch workspace, removed when the request ends.

    python examples/sign_videos/app.py "thank you" --origin https://signs.example.org --out t.mp4

Joining here concatenates the clips' bytes: it stands in for
``ffmpeg -f concat -i clips.txt -c copy sentence.mp4``, which the app would run on the
workspace's ``clips.txt`` (written below in ffmpeg's concat format).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cargohold

WORD = re.compile(r"[a-z0-9']+")


def words(sentence: str) -> list[str]:
    """The words of a sentence as the dictionary names them (lower case, no punctuation)."""
    return WORD.findall(sentence.lower())


def clips_for(hold: cargohold.Hold, origin: str, word: str) -> list[Path]:
    """The clip of ``word``, or the letters that fingerspell it when the origin has none."""
    try:
        return [hold.fetch(f"{origin}/words/{word}.mp4")]
    except cargohold.NotFoundError:
        return [hold.fetch(f"{origin}/letters/{letter}.mp4") for letter in word if letter.isalnum()]


def render(
    hold: cargohold.Hold, sentence: str, origin: str, request_id: str | None = None
) -> bytes:
    """The video of ``sentence``: its words' clips (fetched once, then local), joined in a
    scratch workspace of this request."""
    clips = [clip for word in words(sentence) for clip in clips_for(hold, origin, word)]
    with hold.scratch(request_id) as work:
        work.record["sentence"] = sentence
        work.record["clips"] = len(clips)
        work.save("clips.txt", "".join(f"file '{clip}'\n" for clip in clips).encode())
        with work.open("sentence.mp4") as out:
            for clip in clips:
                out.write(clip.read_bytes())
        return work.output("sentence.mp4").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("sentence")
    parser.add_argument("--origin", required=True, help="base URL of the sign dictionary")
    parser.add_argument("--out", type=Path, default=Path("sentence.mp4"))
    args = parser.parse_args()
    with cargohold.open() as hold:
        args.out.write_bytes(render(hold, args.sentence, args.origin.rstrip("/")))
    print(args.out)


if __name__ == "__main__":
    main()
