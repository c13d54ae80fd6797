"""The S3 remote across a real ``os.fork()``: a child of a process that used obstore talks
S3 through botocore (obstore's tokio runtime does not survive fork; see the s3 module's
docstring), and the parent keeps working on obstore.

Each child reports through a pipe and always leaves with ``os._exit``; a child that says
nothing within the deadline is SIGKILLed, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cargohold import (
    AlreadyExists,
    Hold,
    NotFoundError,
    PreconditionFailed,
    Settings,
)
from cargohold.remotes import Put, open_remote
from cargohold.remotes.s3 import S3Remote
from tests.conftest import s3_url

CHILD_DEADLINE = 120.0  # seconds; only a hung child comes near it


def in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork, run ``work`` in the child and return what it returned (JSON through a pipe).
    Fails the test if the child raised, exited non-zero or hung (then it is SIGKILLed)."""
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of fork() beside threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report, and never run the test's own clean-up
        code = 1
        try:
            os.close(read)
            try:
                report = {"result": work()}
                code = 0
            except BaseException as exc:
                report = {"error": "".join(traceback.format_exception(exc))}
            with os.fdopen(write, "w") as out:
                json.dump(report, out)
        finally:
            os._exit(code)
    os.close(write)
    received = b""
    deadline = time.monotonic() + CHILD_DEADLINE
    try:
        while True:
            left = deadline - time.monotonic()
            # poll(), not select(): a test worker that has run many tests may hold file
            # descriptors past select()'s limit of 1024.
            poller = select.poll()
            poller.register(read, select.POLLIN)
            ready = poller.poll(max(left, 0) * 1000)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child hung for {CHILD_DEADLINE}s and was killed")
            chunk = os.read(read, 65536)
            if not chunk:
                break
            received += chunk
    finally:
        os.close(read)
    _, status = os.waitpid(pid, 0)
    report = json.loads(received or b"{}")
    assert "error" not in report, report["error"]
    assert os.waitstatus_to_exitcode(status) == 0
    return dict(report["result"])


@pytest.fixture(params=["seaweedfs", "moto"])
def url(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue(request.param)
    return s3_url(server, request.getfixturevalue(f"{request.param}_bucket"))


@pytest.fixture
def remote(url: str) -> Iterator[S3Remote]:
    made = open_remote(url)
    assert isinstance(made, S3Remote)
    with made:
        yield made


def _catch(fn: Callable[[], object]) -> str:
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__
    return "no error"


def test_a_forked_child_does_every_operation_and_the_parent_keeps_working(
    remote: S3Remote, tmp_path: Path
) -> None:
    parent = remote.put("shared/doc.json", b'{"v": 1}', metadata={"owner": "parent"})
    remote.put("shared/r.bin", bytes(range(256)))
    assert remote._boto() is None  # obstore here, in the process that started it
    big = tmp_path / "big.bin"
    big.write_bytes(b"".join(hashlib.sha256(bytes([i])).digest() * 32768 for i in range(20)))

    def child() -> dict[str, Any]:
        stale = remote.put("child/cas", b"v1")
        fresh = remote.put("child/cas", b"v2", if_match=stale.etag)
        head = remote.head("shared/doc.json")
        with remote.stream("shared/r.bin", range=(250, None)) as stream:
            streamed = b"".join(stream)
        uploaded = remote.put("child/big.bin", big)  # 20 MiB: a multipart upload
        return {
            "sdk": "botocore" if remote._boto() is not None else "obstore",
            "get": remote.get("shared/doc.json").decode(),
            "range": list(remote.get("shared/r.bin", range=(10, 14))),
            "past_end": remote.get("shared/r.bin", range=(300, None)).decode(),
            "streamed": list(streamed),
            "stream_size": stream.info.size,
            "head": [head.etag == parent.etag, head.metadata, head.content_type],
            "created": remote.put("child/once", b"first", mode="create").size,
            "create_again": _catch(lambda: remote.put("child/once", b"x", mode="create")),
            "stale_if_match": _catch(lambda: remote.put("child/cas", b"v3", if_match=stale.etag)),
            "missing_if_match": _catch(lambda: remote.put("child/none", b"x", if_match=fresh.etag)),
            "cas": remote.get("child/cas").decode(),
            "big": [uploaded.size, hashlib.sha256(remote.get("child/big.bin")).hexdigest()],
            "list": [info.key for info in remote.list("child/")],
            "batch": [
                type(r).__name__
                for r in remote.put_many([Put("child/b1", b"1"), Put("child/once", b"x", "create")])
            ],
            "get_many": [
                r.decode() if isinstance(r, bytes) else type(r).__name__
                for r in remote.get_many(["child/b1", "child/nothing"])
            ],
            "delete": [remote.delete("child/b1"), remote.delete("child/never")],
            "after_delete": _catch(lambda: remote.get("child/b1")),
            "missing": _catch(lambda: remote.head("child/nothing")),
        }

    result = in_child(child)
    assert result == {
        "sdk": "botocore",
        "get": '{"v": 1}',
        "range": [10, 11, 12, 13],
        "past_end": "",
        "streamed": [250, 251, 252, 253, 254, 255],
        "stream_size": 256,
        "head": [True, {"owner": "parent"}, "application/json"],
        "created": 5,
        "create_again": AlreadyExists.__name__,
        "stale_if_match": PreconditionFailed.__name__,
        "missing_if_match": PreconditionFailed.__name__,
        "cas": "v2",
        "big": [big.stat().st_size, hashlib.sha256(big.read_bytes()).hexdigest()],
        "list": ["child/big.bin", "child/cas", "child/once"],
        "batch": ["ObjectInfo", "AlreadyExists"],
        "get_many": ["1", NotFoundError.__name__],
        "delete": [None, None],
        "after_delete": NotFoundError.__name__,
        "missing": NotFoundError.__name__,
    }
    # The parent, still on obstore, sees what the child wrote and keeps writing.
    assert remote._boto() is None
    assert remote.get("child/once") == b"first"
    assert remote.get("child/big.bin") == big.read_bytes()
    remote.put("shared/after", b"parent again")
    assert [i.key for i in remote.list("shared/")] == [
        "shared/after",
        "shared/doc.json",
        "shared/r.bin",
    ]


def test_remotes_built_in_the_child_and_grandchildren_work(remote: S3Remote, url: str) -> None:
    remote.put("k", b"from the parent")

    def grandchild() -> dict[str, Any]:
        remote.put("k3", b"from the grandchild")
        return {"k": remote.get("k").decode(), "k2": remote.get("k2").decode()}

    def child() -> dict[str, Any]:
        fresh = open_remote(url)  # built after the fork: botocore too
        assert isinstance(fresh, S3Remote)
        fresh.put("k2", b"from the child")
        first = remote.get("k").decode()  # the child's own botocore client ...
        below = in_child(grandchild)  # ... is not the grandchild's
        return {
            "sdk": [fresh._boto() is not None, remote._boto() is not None],
            "k": first,
            "grandchild": below,
            "k3": remote.get("k3").decode(),
        }

    assert in_child(child) == {
        "sdk": [True, True],
        "k": "from the parent",
        "grandchild": {"k": "from the parent", "k2": "from the child"},
        "k3": "from the grandchild",
    }
    assert remote.get("k3") == b"from the grandchild"


def test_a_hold_opened_before_fork_works_in_the_child(url: str, tmp_path: Path) -> None:
    settings = Settings.load({}, signal_handlers=False)
    remote = open_remote(url)
    with Hold(remote=remote, local_dir=tmp_path / "local", settings=settings) as hold:
        hold.put("before", b"put and synced by the parent")
        hold.flush(60)
        remote.put("remote-only", b"read through by the child")

        def child() -> dict[str, Any]:
            hold.put("from-child", b"put by the child")
            hold.flush(60)
            return {
                "before": hold.get("before").decode(),
                "read_through": hold.get("remote-only").decode(),
                "on_remote": remote.get("from-child").decode(),
            }

        assert in_child(child) == {
            "before": "put and synced by the parent",
            "read_through": "read through by the child",
            "on_remote": "put by the child",
        }
        assert remote.get("from-child") == b"put by the child"
        hold.put("after", b"the parent still syncs")
        hold.flush(60)
        assert remote.get("after") == b"the parent still syncs"


def test_a_process_that_forks_before_using_obstore_keeps_it(url: str) -> None:
    """A fresh interpreter (this one has used obstore): a remote built but not yet used
    before fork() stays on obstore in the child, which starts its own runtime."""
    code = f"""
import os, sys, warnings
from cargohold.remotes import open_remote
remote = open_remote({url!r})
pid = os.fork()
if pid == 0:
    ok = False
    try:
        remote.put("k", b"child on obstore")
        ok = remote.get("k") == b"child on obstore" and remote._boto() is None
    finally:
        os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), remote.get("k").decode(), remote._boto() is None)
"""
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=CHILD_DEADLINE,
        check=True,
    )
    assert out.stdout.strip() == "0 child on obstore True"
