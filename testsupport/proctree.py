"""A process tree a test starts, watches and always stops: its own session and process
group, stopped by that group's id, and killed with the test if the test process dies.

A server such as uvicorn or gunicorn forks workers that are not the test's children, so
their death signal (``PR_SET_PDEATHSIG``) cannot be set from here. :class:`ProcessTree`
therefore starts a small guard process beside the tree: the guard dies with the test
(the kernel tells it) and SIGKILLs the whole group as it goes. The top process itself
also gets SIGKILL when the test dies.

Membership is read from ``/proc`` (each process's group id and state), so a zombie that
no one has reaped yet does not count as alive: a server's orphaned worker is reparented
to init, which may reap it late.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from testsupport.children import dying_with_parent

__all__ = ["ProcessTree", "die_with_parent_sigkill", "group_members"]

_PR_SET_PDEATHSIG = 1

#: The guard: it learns of the test's death by SIGTERM (its own death signal) and then
#: SIGKILLs the group it guards. It prints READY once its handler is in place.
_GUARD = r"""
import ctypes, os, signal, sys
pgid = int(sys.argv[1])
def stop(signum, frame):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if os.getppid() != int(sys.argv[2]):
    stop(0, None)  # the test died before the death signal was set
print("READY", flush=True)
while True:
    signal.pause()
"""


def die_with_parent_sigkill() -> None:
    """``preexec_fn``: the kernel SIGKILLs this child when the thread that started it
    dies (so start trees from the test's main thread). SIGKILL, not SIGTERM: a child left
    by a killed test has nothing to save, and must not run a shutdown of its own."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """PIDs of the live (not zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        # The command name (field 2) is in parentheses and may contain spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return sorted(members)


class ProcessTree:
    """Start ``command`` as the leader of a new session (its PID is the group's id);
    :meth:`kill` SIGKILLs the whole group. Use it as a context manager: leaving it always
    kills what is left of the group and stops the guard."""

    def __init__(
        self,
        command: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout: IO[bytes] | int | None = None,
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.env = env
        self.stdout = stdout
        self.proc: subprocess.Popen[bytes] | None = None
        self.guard: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            dying_with_parent(self.command),
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=subprocess.STDOUT if self.stdout is not None else None,
            start_new_session=True,
        )
        self.guard = subprocess.Popen(
            [sys.executable, "-c", _GUARD, str(self.proc.pid), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # not in the group it guards
        )
        assert self.guard.stdout is not None
        if self.guard.stdout.readline().strip() != "READY":
            self.kill()
            raise RuntimeError("the process-group guard did not start")
        return self

    def members(self) -> list[int]:
        """Live processes of the tree (its group), the top one included while it runs."""
        return group_members(self.pid)

    def returncode(self) -> int | None:
        """The top process's exit status (negative: the signal that ended it), or None."""
        assert self.proc is not None
        return self.proc.poll()

    def alive(self) -> bool:
        """Whether any process of the tree is still running. The top one counts until it
        is reaped: a multi-threaded process shows as a zombie while its other threads
        still exit, and only then can its exit status be had."""
        if self.returncode() is None:
            return True
        return bool(self.members())

    def signal_top(self, signum: int) -> None:
        """Send ``signum`` to the top process only, as a platform does to PID 1."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait_gone(self, timeout: float) -> bool:
        """Wait until no process of the tree runs; False if some still do at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole group, reap the top process and stop the guard."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            deadline = time.monotonic() + 10
            while self.members() and time.monotonic() < deadline:
                time.sleep(0.05)
        guard, self.guard = self.guard, None
        if guard is not None and guard.poll() is None:
            guard.kill()
        if guard is not None:
            guard.communicate()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
