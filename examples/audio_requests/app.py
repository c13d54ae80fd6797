"""The serverless audio-transcription pattern: one workspace per request, a debug bundle
when it fails.

A handler receives an uploaded recording, trims its silence, and transcribes the result.
Apps built this way write ``/tmp/input-{ts}-{id}.wav``, clean up in ``finally`` (or forget
to), fill a RAM-backed ``/tmp`` with a large upload, and copy failing inputs to S3 by hand
to debug them. Here each request runs in ``hold.scratch(request_id)``:

- the upload is saved through the workspace, so one larger than the quota is refused as it
  arrives instead of filling the disk;
- the workspace is removed when the request ends, whatever happens;
- when processing fails, the upload, the partial output, the traceback and the request's
  record (headers included, tokens redacted) go to the remote under
  ``debug/<date>/<request id>/``, and the error says where;
- each request logs one structured record: sizes, duration, outcome.

    python examples/audio_requests/app.py recording.wav     # prints the transcript

Trimming uses the standard library's ``wave`` module; the "transcription" is a stand-in
that describes the audio (a real app calls Whisper or an API there).
"""

from __future__ import annotations

import array
import sys
import wave
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

import cargohold

QUOTA = "64MiB"  # the largest request this service accepts, upload and outputs together
SILENCE = 500  # 16-bit samples quieter than this are silence


def handle(
    hold: cargohold.Hold,
    upload: bytes | IO[bytes] | Iterable[bytes],
    *,
    request_id: str,
    headers: Mapping[str, str],
) -> dict[str, object]:
    """Process one uploaded WAV recording; returns the transcript and its duration."""
    with hold.scratch(request_id, quota=QUOTA) as work:
        work.record["headers"] = dict(headers)  # Authorization and tokens are redacted
        source = work.save("upload.wav", upload)
        trimmed = trim_silence(source, work.path("trimmed.wav"))
        work.output("trimmed.wav")
        seconds = duration(trimmed)
        work.record["seconds"] = seconds
        return {"request_id": request_id, "seconds": seconds, "transcript": transcribe(trimmed)}


def trim_silence(source: Path, target: Path) -> Path:
    """Write ``source`` without its leading and trailing silence (16-bit mono WAV)."""
    with wave.open(str(source), "rb") as wav:  # raises wave.Error for anything but WAV
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError("only 16-bit mono recordings are supported")
        rate = wav.getframerate()
        samples = array.array("h", wav.readframes(wav.getnframes()))
    loud = [i for i, sample in enumerate(samples) if abs(sample) >= SILENCE]
    kept = samples[loud[0] : loud[-1] + 1] if loud else array.array("h")
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(kept.tobytes())
    return target


def duration(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        return round(wav.getnframes() / wav.getframerate(), 3)


def transcribe(path: Path) -> str:
    """Stand-in for the speech-to-text call."""
    return f"({duration(path):.1f} s of speech)"


def main(argv: list[str]) -> None:
    with cargohold.open() as hold:
        upload = Path(argv[0]).read_bytes()
        print(handle(hold, upload, request_id=Path(argv[0]).stem, headers={}))


if __name__ == "__main__":
    main(sys.argv[1:])
