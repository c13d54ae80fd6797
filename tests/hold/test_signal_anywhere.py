"""SIGTERM at any line of cargohold's own code on the main thread.

Each trial is a real process that loops put / get / delete / flush / durable put on its
main thread. A trace function counts the lines cargohold executes there and, at the N-th,
sends the process SIGTERM: Python runs the handler at the next bytecode, inside that very
frame (a put holding the local tier's write lock, a flush waiting on the syncer, ...).
The process must end by SIGTERM's default action within the grace and a margin, and the
remote (never the old data directory) must hold every acknowledged write.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cargohold.remotes.file import FileRemote
from testsupport.children import dying_with_parent

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import cargohold

    remote, data_dir, acked_path, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    hold = cargohold.open(remote, data_dir=data_dir, shutdown_grace=5)
    acked = os.open(acked_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    lines = 0

    def tracer(frame, event, arg):
        global lines
        if "/cargohold/" not in frame.f_code.co_filename:
            return None  # not in cargohold: do not trace this frame's lines
        if event == "line":
            lines += 1
            if lines == nth:
                sys.settrace(None)
                frame.f_trace = None
                os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode
        return tracer

    def note(line):
        os.write(acked, (line + "\\n").encode())

    i = 0
    sys.settrace(tracer)
    while True:
        key = f"k/{i % 40}"
        value = f"{i}".encode() * (1 + i % 7) * 300
        note(f"try put {key} {i}")  # begun, not acknowledged: it may or may not land
        hold.put(key, value)
        note(f"done put {key} {i}")
        assert hold.get(key) == value
        if i % 5 == 4:
            note(f"try del k/{(i - 2) % 40} {i}")
            hold.delete(f"k/{(i - 2) % 40}")
            note(f"done del k/{(i - 2) % 40} {i}")
        if i % 9 == 8:
            hold.flush(10)
        if i % 11 == 10:
            note(f"try put d/{i} {i}")
            hold.put(f"d/{i}", b"durable" * 100, durable=True)
            note(f"done put d/{i} {i}")
        i += 1
    """
)


def _value(key: str, n: int) -> bytes:
    if key.startswith("d/"):
        return b"durable" * 100
    return f"{n}".encode() * (1 + n % 7) * 300


def _allowed(acked: list[str]) -> dict[str, set[bytes | None]]:
    """What the remote may hold for each key: its last acknowledged state (bytes, or None
    once deleted), or, for the one operation begun and not acknowledged when the process
    died, its effect too."""
    state: dict[str, bytes | None] = {}
    in_flight: tuple[str, bytes | None] | None = None
    for line in acked:
        phase, op, key, i = line.split()
        effect = None if op == "del" else _value(key, int(i))
        if phase == "try":
            in_flight = (key, effect)
        else:
            state[key] = effect
            in_flight = None
    allowed = {key: {value} for key, value in state.items()}
    if in_flight is not None:
        key, effect = in_flight
        allowed.setdefault(key, {None}).add(effect)
    return allowed


def _trial(tmp_path: Path, nth: int) -> None:
    remote_dir = tmp_path / f"remote-{nth}"
    acked_path = tmp_path / f"acked-{nth}"
    proc = subprocess.run(
        dying_with_parent(
            [
                sys.executable,
                "-c",
                CHILD,
                remote_dir.as_uri(),
                str(tmp_path / f"data-{nth}"),
                str(acked_path),
                str(nth),
            ]
        ),
        capture_output=True,
        text=True,
        timeout=60,  # grace 5 s: a hang fails here
    )
    assert proc.returncode == -signal.SIGTERM, (nth, proc.returncode, proc.stderr[-3000:])
    acked = acked_path.read_text().split("\n")[:-1] if acked_path.exists() else []
    remote = FileRemote(remote_dir)
    held = {info.key for info in remote.list()}
    for key, allowed in _allowed(acked).items():
        value = remote.get(key) if key in held else None
        assert value in allowed, (nth, key, None if value is None else value[:12])


# Where the signal lands: lines counted from the first put. A loop iteration runs a few
# hundred to a few thousand lines of cargohold; these spread over the first iterations,
# the syncer's first hand-offs and a flush. The stress run draws many more.
LANDINGS = [1, 7, 23, 61, 140, 333, 777, 1500, 3100, 6400]


@pytest.mark.parametrize("nth", LANDINGS)
def test_sigterm_at_a_line_of_cargohold(tmp_path: Path, nth: int) -> None:
    _trial(tmp_path, nth)


@pytest.mark.stress
@pytest.mark.parametrize("trial", range(60))
def test_sigterm_at_random_lines(tmp_path: Path, trial: int) -> None:
    _trial(tmp_path, random.Random(trial).randint(1, 40_000))


def test_the_trace_reaches_cargohold_code(tmp_path: Path) -> None:
    """The harness itself: with a landing no loop reaches in time, nothing signals, so
    a bounded run ends by timeout (the tracer did not kill it at line 0)."""
    env = dict(os.environ)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(
            dying_with_parent(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    (tmp_path / "remote").as_uri(),
                    str(tmp_path / "data"),
                    str(tmp_path / "acked"),
                    str(10**12),
                ]
            ),
            capture_output=True,
            timeout=3,
            env=env,
        )
    assert (tmp_path / "acked").read_text().count("done put") > 3
