"""The model cache example, run as the app would be: a read-only working directory and home,
the real huggingface_hub, and a loopback stand-in for the Hub's download endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testsupport.origin import Origin

APP = Path(__file__).resolve().parents[2] / "examples" / "model_cache" / "app.py"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODEL = b"ONNX" + bytes(range(256)) * 64


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(APP), *args, "voiceforge/tts-small", "model.onnx"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/sys",  # the app's directory: read-only, even for root
        timeout=120,
    )


def test_configure_ml_caches_makes_the_model_download_land_somewhere_writable(
    tmp_path: Path,
) -> None:
    with Origin() as hub:
        hub.put(
            "/voiceforge/tts-small/resolve/main/model.onnx",
            MODEL,
            headers={"X-Repo-Commit": COMMIT},
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "HUGGINGFACE_", "XDG_", "CARGOHOLD_"))
        }
        env.update(
            {
                "HOME": "/sys/cargohold-home",  # unwritable
                "HF_ENDPOINT": hub.url(""),
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "TMPDIR": str(tmp_path / "tmp"),
                "CARGOHOLD_CACHE_DIR": str(tmp_path / "volume"),  # the writable place there is
            }
        )
        (tmp_path / "tmp").mkdir()

        naive = run(env, "--without-cargohold")
        assert naive.returncode != 0
        assert "/sys/cargohold-home" in naive.stderr

        first = run(env)
        assert first.returncode == 0, first.stderr
        model = Path(first.stdout.strip())
        assert model.read_bytes() == MODEL
        assert model.is_relative_to(tmp_path / "volume" / "huggingface" / "hub")
        assert "HF_HOME=" in first.stderr
