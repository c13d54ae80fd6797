"""Processes tests start: a Python process a test drives line by line (it prints READY
once set up, then answers each command it reads on stdin with one line), and
:func:`die_with_parent`, which every process a test starts passes as ``preexec_fn``."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["ask", "die_with_parent", "line_child"]

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the child


def die_with_parent() -> None:
    """``preexec_fn`` for anything a test starts: the kernel sends it SIGKILL when the test
    process dies, so a pytest killed outright (a CI timeout, a SIGKILL: its fixtures never
    finalized) leaves no server or worker behind. SIGKILL, not SIGTERM: these processes
    are throwaway, and a server can ignore or hang on SIGTERM (weed has, the filer may).

    The signal follows the *thread* that started the process: start them from the main
    thread (a process started from a thread that then ends is killed at once). The child
    runs only this call before exec: nothing imported, nothing allocated by Python."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


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
        preexec_fn=die_with_parent,
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
