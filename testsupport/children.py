"""Processes tests start: a Python process a test drives line by line (it prints READY
once set up, then answers each command it reads on stdin with one line), and
:func:`dying_with_parent`, which wraps the command of every process a test starts."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

__all__ = ["ask", "die_with_parent", "dying_with_parent", "line_child"]

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


# Run by a fresh interpreter (-S: no site, nothing imported but these): set the parent-death
# signal in the child itself, then exec the real command, which keeps it.
_WRAPPER = (
    "import ctypes, os, shutil, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(70)  # the parent died before the signal was set\n"
    "os.execv(shutil.which(sys.argv[2]) or sys.argv[2], sys.argv[2:])\n"
)


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel sends it SIGKILL when this process dies, like
    :func:`die_with_parent` but without ``preexec_fn``: with ``preexec_fn`` Python runs every
    ``os.register_at_fork`` hook in the child before exec (cargohold's, huggingface_hub's,
    ...), and one that takes a lock another thread of the test process held at the fork
    (huggingface_hub closing its HTTP session) hangs the child before it ever execs.
    The same thread rule applies: start processes from a thread that outlives them."""
    return [sys.executable, "-S", "-c", _WRAPPER, str(os.getpid()), *argv]


@contextlib.contextmanager
def line_child(
    script: str, *args: str, clean_exit: bool = False
) -> Iterator[subprocess.Popen[str]]:
    """Run ``script`` with ``args``; yields once it printed READY. At the end, with
    ``clean_exit``, its stdin is closed and it must exit 0; it is killed by its PID if it
    is still running (a test that failed first, or one that did not ask for a clean exit)."""
    proc = subprocess.Popen(
        dying_with_parent([sys.executable, "-c", script, *args]),
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
