"""Closing a Hold while other threads still use its local tier.

Each thread has its own SQLite connection to the index. close() runs on one thread while
others are in the middle of a scan or a write: closing their connections under them makes
SQLite fail, or crash the process, inside a call those threads are making. What they may
see instead is HoldClosed, at their next call, and nothing else.

The rounds run in a child process, so a crash fails this test instead of ending the run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from testsupport.children import dying_with_parent

ROUNDS = 20

CHILD = textwrap.dedent(
    """
    import sys, threading, uuid
    import cargohold
    from cargohold import HoldClosed
    from cargohold.remotes import MemoryRemote

    data, rounds = sys.argv[1], int(sys.argv[2])

    def use_until_closed(hold, t, working, errors):
        i = 0
        try:
            while True:
                if t % 2:
                    hold.put(f"t{t}/{i % 30}", b"x" * (100 + 997 * (i % 7)))  # inline and files
                else:
                    for entry in hold.local.entries(""):  # a scan of the index, page by page
                        hold.local.entry(entry.key)
                    hold.status()
                if i == 3:
                    working.release()
                i += 1
        except HoldClosed:
            pass  # the one error a call racing close() may raise
        except BaseException as exc:
            errors.append(repr(exc))
        if i <= 3:
            working.release()

    for round_ in range(rounds):
        name = f"index-close-{uuid.uuid4().hex}"
        hold = cargohold.open(f"memory://{name}", data_dir=f"{data}/{round_}", signal_handlers=False)
        for i in range(200):
            hold.put(f"seed/{i}", b"s" * (10 + 97 * i))
        errors = []
        working = threading.Semaphore(0)
        threads = [
            threading.Thread(target=use_until_closed, args=(hold, t, working, errors))
            for t in range(4)
        ]
        for thread in threads:
            thread.start()
        for _ in threads:
            working.acquire()  # every thread is under way: close() lands mid-call
        hold.close()
        for thread in threads:
            thread.join()
        MemoryRemote.forget(name)
        print("round", round_, "errors", errors, flush=True)
    """
)


def test_close_while_threads_scan_and_write(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        dying_with_parent(
            [sys.executable, "-X", "faulthandler", "-c", CHILD, str(tmp_path), str(ROUNDS)]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=240)  # a thread that hangs keeps it running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    rounds = stdout.splitlines()
    failure = (proc.returncode, rounds[-3:], stderr[-3000:])
    assert rounds == [f"round {i} errors []" for i in range(ROUNDS)], failure
    assert proc.returncode == 0, failure
