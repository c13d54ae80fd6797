"""The read-only app directory pattern (VoiceForge): models download into a writable cache.

On many hosts the app's own directory is read-only and ``HOME`` is unwritable or unset, so
``huggingface_hub`` (and transformers, torch, sentence-transformers, ...) fail with
``Permission denied`` the first time they download a model into ``~/.cache``. Apps answer
with ``chmod 777`` in the Dockerfile or a hard-coded ``/tmp/cache``. Here one call,
``configure_ml_caches()``, made before those libraries are imported, points their cache
variables at directories that were proven writable: a persistent volume when the host has
one, else the user cache, else the temp directory.

    python examples/model_cache/app.py voiceforge/tts-small model.onnx
    python examples/model_cache/app.py --without-cargohold voiceforge/tts-small model.onnx

The second form skips the call, to show the failure it prevents.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    without = "--without-cargohold" in argv
    repo_id, filename = [arg for arg in argv if not arg.startswith("--")]
    if not without:
        from cargohold.paths import configure_ml_caches

        for var in configure_ml_caches():  # first thing: before huggingface_hub is imported
            if var.action != "kept":
                print(f"{var.name}={var.value} ({var.action}: {var.reason})", file=sys.stderr)

    from huggingface_hub import hf_hub_download

    print(hf_hub_download(repo_id, filename))


if __name__ == "__main__":
    main(sys.argv[1:])
