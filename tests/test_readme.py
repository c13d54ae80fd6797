"""The README's examples run (docs that run, as diskcache does with its tutorial)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from testsupport.children import dying_with_parent

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if "import gradio" in BLOCKS[index]:
        # In a child: building a Gradio UI leaves asyncio event loops unclosed in that
        # process, which warnings-as-errors would pin on whichever test collects them.
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_TEMP_DIR": str(tmp_path / "gradio-tmp"),
        }
        command = dying_with_parent([sys.executable, "-c", BLOCKS[index]])
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        return
    exec(compile(BLOCKS[index], f"README.md example {index + 1}", "exec"), {})
