"""A Python process a test drives line by line: it prints READY once set up, then answers
each command it reads on stdin with one line."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["ask", "line_child"]


@contextlib.contextmanager
def line_child(
    script: str, *args: str, clean_exit: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """Run ``script`` with ``args``; yields once it printed READY. At the end, with
    ``clean_exit``, its stdin is closed and it must exit 0; it is killed by its PID if it
    is still running (a test that failed first, or one that did not ask for a clean exit)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        yield proc
        if clean_exit:
            proc.communicate(timeout=60)  # closes its stdin, so it exits
            assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def ask(proc: subprocess.Popen[str], command: str) -> str:
    """Send one command and return the line it answered."""
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()
