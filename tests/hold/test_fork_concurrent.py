"""Two threads fork at once after a Hold is open: both children put and flush, the parent
too, and the remote has every value (issue 14, fork).

A real process on SeaweedFS. The second fork must wait for the first, whose hooks hold the
local index's write lock; the child makes the first fork slow (a fork hook registered
before cargohold is imported runs after cargohold's, inside that window) so that the
second gives up waiting. The lock must then still be released by the first fork: a flag
shared by both forks was cleared by the one that gave up, the lock stayed held, and the
parent's next put waited on it for good.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from cargohold.remotes.s3 import S3Remote
from testsupport.children import dying_with_parent
from testsupport.servers import SeaweedFS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX")

CHILD = textwrap.dedent(
    """
    import os, sys, threading, time, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: the case
    slow = threading.Event()   # set by thread A: its fork is to linger inside the window
    second = threading.Event()  # set by thread B just before it forks

    def linger():
        # Registered before cargohold: runs after cargohold's before-fork hooks, while the
        # fork holds the index's write lock. Only thread A's fork lingers, until thread B
        # is forking and has waited past cargohold's fork wait.
        if slow.is_set() and threading.current_thread().name == "A":
            second.wait(60)
            time.sleep(3.5)

    os.register_at_fork(before=linger)
    import cargohold
    from cargohold import _index
    assert _index._FORK_WAIT < 3.0

    url, data_dir = sys.argv[1], sys.argv[2]
    hold = cargohold.open(url, data_dir=data_dir, shutdown_grace=5)
    hold.put("parent/before", b"before")
    hold.flush()
    children = {}

    def fork(name):
        if name == "B":
            slow.wait(60)
            time.sleep(0.2)  # thread A is inside its fork by now (or soon: B waits for it)
            second.set()
        else:
            slow.set()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                hold.put(f"child/{name}", f"from {name}".encode())
                hold.flush(timeout=60)
                code = 0
            finally:
                os._exit(code)
        children[name] = pid

    threads = [threading.Thread(target=fork, args=(n,), name=n) for n in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, pid in sorted(children.items()):
        _, status = os.waitpid(pid, 0)
        print("CHILD", name, os.waitstatus_to_exitcode(status), flush=True)
    hold.put("parent/after", b"after")  # waited for good on a lock left held
    hold.flush(timeout=60)
    print("PARENT DONE", flush=True)
    hold.close()
    """
)


def test_two_threads_forking_at_once_leave_parent_and_children_working(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = (
        f"s3://{seaweedfs_bucket}/forks-{uuid.uuid4().hex[:8]}?endpoint={seaweedfs.endpoint}"
        f"&access_key_id={seaweedfs.access_key}&secret_access_key={seaweedfs.secret_key}"
    )
    proc = subprocess.Popen(
        dying_with_parent([sys.executable, "-c", CHILD, url, f"{tmp_path}/data"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the process hung after two concurrent forks:\n{out}\n{err[-3000:]}")
    assert out.split("\n")[:3] == ["CHILD A 0", "CHILD B 0", "PARENT DONE"], (out, err[-3000:])
    assert proc.returncode == 0, err[-3000:]
    remote = S3Remote.from_url(url)
    try:
        values = {info.key: remote.get(info.key) for info in remote.list("")}
    finally:
        remote.close()
    assert values == {
        "parent/before": b"before",
        "child/A": b"from A",
        "child/B": b"from B",
        "parent/after": b"after",
    }
