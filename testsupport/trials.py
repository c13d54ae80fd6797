"""Process-model trials: a real server (or script) writing through a Hold under load, a
SIGTERM at a random moment, and the remote checked afterwards.

One trial (:func:`run_trial`):

1. write the apps (:mod:`testsupport.trialapps`) into a fresh directory, with a fresh
   prefix on the S3 server and a fresh data directory;
2. start the model's process tree in its own session (:class:`~testsupport.proctree.ProcessTree`)
   and, for servers, the load client (:class:`~testsupport.loadclient.LoadClient`);
3. once writes are acknowledged, wait a random moment and send SIGTERM to the top
   process only, as a platform does to PID 1 (the uvicorn or gunicorn master, the
   script, the pool's parent);
4. wait up to ``grace + margin`` for the whole tree to be gone; if anything still runs,
   SIGKILL the group, as the platform would, and record the trial as hung;
5. list and read the remote afresh (boto3; the old data directory is never opened again:
   on a platform it is gone) and compare with every acknowledged write.

Writes acknowledged after the SIGTERM count like any other: servers drain, and a client
that got a 200 was promised its data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from testsupport.loadclient import LoadClient, Protocol
from testsupport.proctree import ProcessTree
from testsupport.servers import S3Server, free_port
from testsupport.trialapps import RemoteSpec, StoreKind, write_apps

__all__ = ["MODELS", "Model", "TrialResult", "read_acked_files", "remote_digests", "run_trial"]

Driver = Literal["put", "gradio", "files"]

SIGTERM = 15


@dataclass(frozen=True)
class Model:
    """A way to run an app: its command line, how its writes are driven and counted, and
    the exit status its top process gives after SIGTERM (what the same app gives without
    cargohold, checked by the harness's own trials with the ``direct`` store)."""

    name: str
    command: Callable[[int], list[str]]  # the port -> argv
    driver: Driver
    exit_status: int
    why: str  # where that exit status comes from
    startup_timeout: float = 60.0


def _python(*args: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, *args]


def _uvicorn(*extra: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        "-m",
        "uvicorn",
        "app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


def _gunicorn(*extra: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "--no-control-socket",  # its default path is one per user: trials would share it
        *extra,
        "app:app",
    ]


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model(
            "uvicorn",
            _uvicorn(),
            "put",
            -SIGTERM,
            "uvicorn drains, then re-raises the signal it caught with the default action",
        ),
        Model(
            "uvicorn-workers-2",
            _uvicorn("--workers", "2"),
            "put",
            0,
            "uvicorn's supervisor terminates its workers, joins them and returns: exit 0",
        ),
        Model(
            "gunicorn-uvicorn-worker",
            _gunicorn(),
            "put",
            0,
            "gunicorn's arbiter stops its workers gracefully and exits 0",
        ),
        Model(
            "gunicorn-uvicorn-worker-preload",
            _gunicorn("--preload"),
            "put",
            0,
            "as without --preload: the arbiter exits 0",
        ),
        Model(
            "gradio-launch",
            _python("gradio_app.py"),
            "gradio",
            -SIGTERM,
            "launch() installs no SIGTERM handler: the default action ends the process",
            startup_timeout=120.0,
        ),
        Model(
            "script",
            _python("writer.py"),
            "files",
            -SIGTERM,
            "a script with no handler of its own: the default action",
        ),
        Model(
            "multiprocessing-pool-fork",
            _python("pool_writer.py"),
            "files",
            128 + SIGTERM,
            "the app's own handler exits 143, which ends `with Pool` (terminating the workers)",
        ),
    )
}


@dataclass
class TrialResult:
    """What one trial saw. ``missing``: acknowledged keys not on the remote; ``wrong``:
    on the remote with other bytes than acknowledged."""

    model: str
    grace: float
    seed: int
    hung: bool = False
    returncode: int | None = None
    acked: int = 0
    acked_after_signal: int = 0
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    signal_after: float = 0.0  # seconds of acknowledged writes before the SIGTERM
    gone_after: float | None = None  # seconds from the SIGTERM until the tree was gone
    log_tail: str = ""

    def summary(self) -> str:
        gone = "hung" if self.hung else f"gone in {self.gone_after:.1f}s"
        return (
            f"{self.model} grace={self.grace:g} seed={self.seed}: exit {self.returncode}, {gone}, "
            f"{self.acked} acked ({self.acked_after_signal} after SIGTERM), "
            f"{len(self.missing)} missing, {len(self.wrong)} wrong"
        )


def read_acked_files(directory: Path) -> dict[str, str]:
    """``key -> sha256`` from the ``acked/*.txt`` files the script and pool apps write
    (a line is written only after its put returned; a torn last line is ignored)."""
    acked: dict[str, str] = {}
    for path in sorted(directory.glob("*.txt")):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and len(parts[1]) == 64:
                acked[parts[0]] = parts[1]
    return acked


def _count_acked_files(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.txt"):
        with contextlib.suppress(OSError):
            total += path.read_bytes().count(b"\n")
    return total


def remote_digests(server: S3Server, bucket: str, prefix: str, keys: list[str]) -> dict[str, str]:
    """``key -> sha256`` of what the remote has for each of ``keys`` that it lists under
    ``prefix``: a fresh client, a fresh listing, every object read back."""
    client: Any = server.client()
    listed: set[str] = set()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            listed.add(item["Key"].removeprefix(f"{prefix}/"))
    present = [key for key in keys if key in listed]

    def read(key: str) -> tuple[str, str]:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
        return key, hashlib.sha256(body).hexdigest()

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(read, present))


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_trial(
    model: Model,
    server: S3Server,
    bucket: str,
    workdir: Path,
    *,
    grace: float,
    margin: float = 5.0,
    seed: int | None = None,
    store: StoreKind = "hold",
    min_acked: int = 20,
    delay: tuple[float, float] = (0.2, 2.0),
    env: dict[str, str] | None = None,
) -> TrialResult:
    """Run one trial of ``model`` in a fresh directory under ``workdir`` (see the module
    docstring). ``delay``: the SIGTERM comes this many seconds (uniformly drawn) after
    the first ``min_acked`` writes were acknowledged."""
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    result = TrialResult(model=model.name, grace=grace, seed=seed)
    trial_dir = workdir / f"{model.name}-{uuid.uuid4().hex[:8]}"
    prefix = f"trial-{uuid.uuid4().hex[:12]}"
    remote = RemoteSpec(server.endpoint, bucket, prefix, server.access_key, server.secret_key)
    port = free_port()
    token = uuid.uuid4().hex
    write_apps(trial_dir, store=store, remote=remote, grace=grace, port=port, token=token)
    tree_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",  # Gradio must not call out
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(trial_dir / "gradio-tmp"),
        **(env or {}),
    }
    log_path = trial_dir / "tree.log"
    load: LoadClient | None = None
    with (
        log_path.open("ab") as log,
        ProcessTree(model.command(port), cwd=trial_dir, env=tree_env, stdout=log) as tree,
    ):
        try:
            if model.driver != "files":
                protocol: Protocol = "gradio" if model.driver == "gradio" else "put"
                load = LoadClient(port, token, protocol=protocol, seed=seed).start()
            started = _wait_for_writes(tree, load, trial_dir / "acked", min_acked, model)
            if started is None:
                result.log_tail = _log_tail(log_path)
                raise RuntimeError(
                    f"{model.name}: no writes acknowledged after {model.startup_timeout:g}s "
                    f"(exit {tree.returncode()}):\n{result.log_tail}"
                )
            time.sleep(rng.uniform(*delay))
            acked_at_signal = load.acked_count if load else _count_acked_files(trial_dir / "acked")
            signalled = time.monotonic()
            result.signal_after = signalled - started
            tree.signal_top(SIGTERM)
            gone = tree.wait_gone(grace + margin)
            if gone:
                result.gone_after = time.monotonic() - signalled
            else:
                result.hung = True
                tree.kill()
            result.returncode = tree.returncode()
        finally:
            if load is not None:
                load.stop()
    acked = load.acked if load is not None else read_acked_files(trial_dir / "acked")
    result.acked = len(acked)
    result.acked_after_signal = max(0, len(acked) - acked_at_signal)
    found = remote_digests(server, bucket, prefix, sorted(acked))
    result.missing = sorted(key for key in acked if key not in found)
    result.wrong = sorted(key for key in acked if key in found and found[key] != acked[key])
    result.log_tail = _log_tail(log_path)
    return result


def _wait_for_writes(
    tree: ProcessTree, load: LoadClient | None, acked_dir: Path, count: int, model: Model
) -> float | None:
    """The moment the first acknowledged writes were seen, or None if the tree died or
    none came within the model's start-up time."""
    deadline = time.monotonic() + model.startup_timeout
    while time.monotonic() < deadline:
        seen = load.acked_count if load is not None else _count_acked_files(acked_dir)
        if seen >= count:
            return time.monotonic()
        if tree.returncode() is not None:
            return None
        time.sleep(0.05)
    return None
