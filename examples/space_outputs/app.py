"""A Gradio-style Space whose ``outputs/`` folder survives restarts, kept in a Storage Bucket.

A Space loses its disk on every restart, and the old ``/data`` persistent storage is gone.
Apps keep their generations by pushing ``outputs/`` to the Hub with huggingface_hub's
CommitScheduler, which never restores them, never deletes, ignores the shutdown and has no
answer to the Hub's commit quota. Here ``hold.persist_dir("outputs")``:

- restores the folder from the remote when the app starts, so a restart on an empty disk
  shows every earlier generation;
- pushes new and changed files in the background, in batches, and deletes from the remote
  what is deleted here;
- flushes on SIGTERM (a restart or a redeploy) within the Space's grace period.

The remote is a Storage Bucket through the Hub's bucket API (``hf://buckets/``: the Space's
``HF_TOKEN`` is enough). ``persist_dir`` needs no create-only or if-match writes, which that
API cannot enforce, so no catalog is needed. A dataset repo (``hf://datasets/...``, written
in commits batched under the commit budget) works the same way.

The "model" draws a small PNG from the prompt, so the demo needs no GPU and no API key::

    export CARGOHOLD_REMOTE=hf://buckets/YOU/space-outputs    # HF_TOKEN: a Space secret
    python examples/space_outputs/app.py generate "a red fox"  # writes outputs/a-red-fox-....png
    python examples/space_outputs/app.py list
    python examples/space_outputs/app.py delete a-red-fox-1a2b3c4d.png
    python examples/space_outputs/app.py serve                 # the web UI (pip install gradio)
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import cargohold


class OutputsApp:
    """The app's state is its ``outputs/`` folder; the Hold keeps it in the remote."""

    def __init__(self, hold: cargohold.Hold, folder: str | Path = "outputs") -> None:
        self.hold = hold
        self.folder = Path(folder)
        hold.persist_dir(self.folder, prefix="outputs")  # restored now, pushed from now on

    def generate(self, prompt: str) -> Path:
        """Make an image for ``prompt`` into ``outputs/``; returns its path."""
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "image"
        path = self.folder / f"{slug}-{digest[:8]}.png"
        tmp = path.with_name(path.name + ".tmp")  # *.tmp files are never pushed
        tmp.write_bytes(_png(digest))
        os.replace(tmp, path)  # the folder never holds half an image
        return path

    def gallery(self) -> list[Path]:
        return sorted(self.folder.glob("*.png"))

    def delete(self, name: str) -> None:
        """Remove an output; the next scan deletes it from the remote too."""
        (self.folder / Path(name).name).unlink(missing_ok=True)


def _png(digest: str, size: int = 64) -> bytes:
    """A ``size`` x ``size`` gradient in colours taken from ``digest`` (no imaging library)."""
    r, g, b = (int(digest[i : i + 2], 16) for i in (0, 2, 4))
    rows = b"".join(
        b"\x00" + b"".join(bytes((r * x // size, g * y // size, b)) for x in range(size))
        for y in range(size)
    )  # each row: filter type 0, then RGB pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def build_ui(app: OutputsApp) -> Any:
    """The Gradio UI: a prompt, a button and the gallery of every output so far."""
    try:
        import gradio as gr
    except ImportError:
        raise SystemExit("the web UI needs gradio: pip install gradio") from None

    def run(prompt: str) -> list[str]:
        app.generate(prompt)
        return [str(p) for p in app.gallery()]

    with gr.Blocks(title="Outputs that survive restarts") as demo:
        prompt = gr.Textbox(label="Prompt")
        gallery = gr.Gallery(value=[str(p) for p in app.gallery()], label="outputs/")
        gr.Button("Generate").click(run, inputs=prompt, outputs=gallery)
    return demo


def main(argv: list[str]) -> None:
    with cargohold.open() as hold:
        app = OutputsApp(hold)
        command = argv[0] if argv else "list"
        if command == "generate":
            print(app.generate(" ".join(argv[1:])))
        elif command == "delete":
            app.delete(argv[1])
        elif command == "serve":
            build_ui(app).launch()
        else:
            for path in app.gallery():
                print(path.name)


if __name__ == "__main__":
    main(sys.argv[1:])
