"""A Gradio app on a Hold: examples cached once per app version, results from the
generation cache shown in components, and the storage service mounted at ``/storage/``.

A "sticker generator" (a slow, paid model in real life; here a coloured PNG drawn by
Pillow, which Gradio already depends on). ``cargohold.gradio.mount`` makes the
``cache_examples=True`` results durable: after a redeploy on an empty disk they come back
from the remote instead of being generated again. The handler's own results go through
the generation cache (``hold.memo``), and ``servable`` hands their files to ``gr.Image``;
with ``outputs=True`` the files Gradio handed out are kept too::

    export CARGOHOLD_REMOTE=s3://bucket/app CARGOHOLD_TOKEN=...   # or nothing: embedded default
    python examples/gradio_app/app.py                 # demo.launch() on $PORT (7860)
    uvicorn examples.gradio_app.app:app --port 7860   # the same app under uvicorn

``APP_VERSION`` names the version the examples cache belongs to (default: a digest of this
file). ``APP_CALLS_LOG``, when set, gets one line per handler call: the test counts them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import gradio as gr

import cargohold
import cargohold.gradio

EXAMPLES = [["a red fox"], ["a blue whale"]]


def _note_call(prompt: str) -> None:
    calls_log = os.environ.get("APP_CALLS_LOG")
    if calls_log:
        with open(calls_log, "a", encoding="utf-8") as fh:
            fh.write(prompt + "\n")


def draw_sticker(prompt: str, workdir: Path) -> Path:
    """Stand-in for the paid model: a 64x64 PNG in colours taken from the prompt."""
    from PIL import Image

    digest = hashlib.sha256(prompt.encode()).digest()
    sticker = workdir / "sticker.png"
    Image.new("RGB", (64, 64), tuple(digest[:3])).save(sticker)
    return sticker


def make_demo(hold: cargohold.Hold) -> gr.Blocks:
    memo = hold.memo("stickers", version="v1")

    def generate(prompt: str) -> tuple[str, str]:
        _note_call(prompt)
        entry = memo.get_or_create(
            {"prompt": prompt}, lambda inputs, workdir: draw_sticker(inputs["prompt"], workdir)
        )
        assert entry.path is not None
        return f"a sticker of {prompt}", cargohold.gradio.servable(entry.path)

    return gr.Interface(
        generate,
        inputs=gr.Textbox(label="Prompt"),
        outputs=[gr.Textbox(label="Caption"), gr.Image(label="Sticker", type="filepath")],
        examples=EXAMPLES,
        cache_examples=True,
        api_name="generate",
        flagging_mode="never",
    )


hold = cargohold.open()
demo = make_demo(hold)
# outputs=True: files handed to the browser (Gradio's temp folder) come back after a restart,
# so a link given out before a redeploy still opens after it.
app = cargohold.gradio.mount(demo, hold, version=os.environ.get("APP_VERSION"), outputs=True)

if __name__ == "__main__":
    demo.launch(server_name="127.0.0.1", server_port=int(os.environ.get("PORT", "7860")))
