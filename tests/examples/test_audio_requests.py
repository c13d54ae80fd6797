"""The audio requests example: workspaces that vanish, bundles that explain failures."""

from __future__ import annotations

import array
import io
import json
import logging
import os
import subprocess
import sys
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest

import cargohold
from cargohold import StorageFull
from examples.audio_requests.app import handle

HEADERS = {"Authorization": "Bearer sk-live-abcdefghijklmnopqrstuvwx", "User-Agent": "app/1.0"}


def recording(seconds_of_speech: float, rate: int = 8000) -> bytes:
    """A 16-bit mono WAV: half a second of silence, speech-like noise, half a second of silence."""
    quiet = [0] * (rate // 2)
    loud = [(-1) ** n * (3000 + n % 700) for n in range(int(rate * seconds_of_speech))]
    samples = array.array("h", quiet + loud + quiet)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return out.getvalue()


def test_requests_succeed_fail_with_a_bundle_and_respect_the_quota(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    remote = (tmp_path / "remote").as_uri()
    caplog.set_level(logging.INFO, logger="cargohold.scratch")
    with cargohold.open(
        remote, data_dir=tmp_path / "data", temp_dir=tmp_path / "tmp", signal_handlers=False
    ) as hold:
        upload = recording(2.0)
        result = handle(hold, io.BytesIO(upload), request_id="ok-1", headers=HEADERS)
        assert result == {"request_id": "ok-1", "seconds": 2.0, "transcript": "(2.0 s of speech)"}

        corrupt = b"ID3\x03" + os.urandom(4000)  # an mp3 where a WAV was promised
        with pytest.raises(wave.Error) as err:
            handle(hold, [corrupt[:2000], corrupt[2000:]], request_id="bad-1", headers=HEADERS)
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        assert err.value.debug_bundle == f"debug/{day}/bad-1/"  # type: ignore[attr-defined]

        too_big = iter(lambda: b"\x00" * 1024 * 1024, b"")  # an endless upload
        with pytest.raises(StorageFull, match="quota of 67108864 bytes"):
            handle(hold, too_big, request_id="huge-1", headers=HEADERS)

        assert not any((tmp_path / "tmp" / "scratch").iterdir()), "no workspace is left"

    bundle = cargohold.open_remote(remote)
    prefix = f"debug/{day}/bad-1/"
    assert bundle.get(prefix + "files/upload.wav") == corrupt
    record = json.loads(bundle.get(prefix + "record.json"))
    assert record["fields"]["headers"] == {"Authorization": "[redacted]", "User-Agent": "app/1.0"}
    assert record["input_bytes"] == len(corrupt)
    assert "wave.Error" in bundle.get(prefix + "traceback.txt").decode()
    assert "sk-live" not in json.dumps(record)

    outcomes = {
        r.cargohold_request["request_id"]: r.cargohold_request
        for r in caplog.records
        if hasattr(r, "cargohold_request")
    }
    assert outcomes["ok-1"]["outcome"] == "ok"
    assert outcomes["ok-1"]["input_bytes"] == len(upload)
    assert outcomes["ok-1"]["output_bytes"] == 44 + 2 * 8000 * 2  # 2 s at 8 kHz, 16-bit
    assert outcomes["bad-1"]["outcome"] == "error"
    assert outcomes["huge-1"]["outcome"] == "error"
    assert "sk-live" not in caplog.text

    # The retention period: `cargohold gc` removes bundles older than it.
    env = {
        **os.environ,
        "CARGOHOLD_REMOTE": remote,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "gc-data"),
        "CARGOHOLD_DEBUG_RETENTION": "0s",
        "CARGOHOLD_TEMP_DIR": str(tmp_path / "tmp"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "cargohold", "gc", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["debug_bundles"] == 2  # bad-1's and huge-1's
    assert list(bundle.list("debug/")) == []
