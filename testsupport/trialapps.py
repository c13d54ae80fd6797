"""The apps the process-model trials run, written as a user would write them, into a
fresh directory per trial.

Each app opens its store at import (a module-level ``hold``) and writes through it:

- ``app.py``: a FastAPI app; ``PUT /w/{key}`` stores the body and answers 200 only after
  ``put`` returned. Served by uvicorn or gunicorn (see :mod:`testsupport.trials`).
- ``gradio_app.py``: a Gradio Interface started with ``demo.launch()``, whose function
  stores its text input; driven over Gradio's own HTTP API.
- ``writer.py``: a plain script whose main thread puts 2 KB values flat out and prints
  each key with its digest, once ``put`` returned, to ``acked/<pid>.txt``.
- ``pool_writer.py``: a ``multiprocessing.Pool`` (fork start method) whose workers put
  flat out through the Hold the parent opened before starting the pool, each reporting
  to its own ``acked/<pid>.txt``. Its SIGTERM handler (installed before the Hold is
  opened, so cargohold chains in front of it) exits 143, which ends the ``with Pool``
  block, and so terminates the workers: the usual way a pool app stops on SIGTERM.

The store is a real Hold (``hold``), or, for the harness's own check, ``direct``: every
write goes straight to the remote before it is acknowledged, so a trial of it must find
nothing missing (a miss would be the harness's fault, not cargohold's).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["RemoteSpec", "StoreKind", "write_apps"]

StoreKind = Literal["hold", "direct"]


@dataclass(frozen=True)
class RemoteSpec:
    """Where a trial's objects go: a bucket and prefix on an S3 server."""

    endpoint: str
    bucket: str
    prefix: str
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        """The cargohold URL for this prefix (the credentials in the query, as the test
        suite's other S3 URLs have them: what the URL says wins over the environment)."""
        return (
            f"s3://{self.bucket}/{self.prefix}?endpoint={self.endpoint}"
            f"&access_key_id={self.access_key}&secret_access_key={self.secret_key}"
        )


_DIRECT = '''
"""The control store: each put goes to the remote before it returns (no Hold)."""
import os
import boto3
from botocore.config import Config


class DirectStore:
    def __init__(self, endpoint, bucket, prefix, access_key, secret_key):
        self._args = (endpoint, bucket, prefix, access_key, secret_key)
        self._clients = {}

    def _client(self):
        pid = os.getpid()  # a forked worker makes its own client
        if pid not in self._clients:
            endpoint, _, _, access_key, secret_key = self._args
            self._clients[pid] = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name="us-east-1",
                config=Config(s3={"addressing_style": "path"}),
            )
        return self._clients[pid]

    def put(self, key, value):
        _, bucket, prefix, _, _ = self._args
        self._client().put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=value)
'''

_FASTAPI = """
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

{open_store}

app = FastAPI()


@app.put("/w/{{key:path}}")
async def write(key: str, request: Request) -> Response:
    body = await request.body()
    await run_in_threadpool(hold.put, key, body)  # put blocks: off the event loop
    return Response(status_code=200, content=b"stored {token}")
"""

_GRADIO = """
import gradio as gr

{open_store}


def write(key: str, body: str) -> str:
    hold.put(key, body.encode())
    return f"stored {{key}} {token}"


demo = gr.Interface(write, inputs=["text", "text"], outputs="text", api_name="write")
demo.launch(server_name="127.0.0.1", server_port={port})
"""

_WRITER = """
import hashlib
import os

{open_store}

out = open(os.path.join("acked", f"{{os.getpid()}}.txt"), "a", buffering=1)  # line buffered
i = 0
while True:
    key = f"s/{{i}}"
    value = os.urandom(2048)
    hold.put(key, value)
    out.write(f"{{key}} {{hashlib.sha256(value).hexdigest()}}\\n")  # only once put returned
    i += 1
"""

_POOL = """
import hashlib
import multiprocessing
import os
import signal
import sys

hold = None


def work(worker: int) -> None:
    out = open(os.path.join("acked", f"{{os.getpid()}}.txt"), "a", buffering=1)
    i = 0
    while True:
        key = f"p{{worker}}/{{i}}"
        value = os.urandom(2048)
        hold.put(key, value)
        out.write(f"{{key}} {{hashlib.sha256(value).hexdigest()}}\\n")  # only once put returned
        i += 1


def stop(signum, frame):
    sys.exit(128 + signum)


def main() -> None:
    global hold
    signal.signal(signal.SIGTERM, stop)
    {open_store_indented}
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(work, range(2))


if __name__ == "__main__":
    main()
"""


def _open_store(store: StoreKind, remote: RemoteSpec, data_dir: Path, grace: float) -> str:
    if store == "hold":
        return (
            "import cargohold\n"
            f"hold = cargohold.open({remote.url!r}, data_dir={str(data_dir)!r}, "
            f"shutdown_grace={grace!r})"
        )
    args = (remote.endpoint, remote.bucket, remote.prefix, remote.access_key, remote.secret_key)
    return f"from trial_direct import DirectStore\nhold = DirectStore{args!r}"


def write_apps(
    directory: Path,
    *,
    store: StoreKind,
    remote: RemoteSpec,
    grace: float,
    port: int,
    token: str,
) -> None:
    """Write every app into ``directory`` (made if needed), storing through ``store``
    with the Hold's data in ``directory/data``. ``port`` is the Gradio app's. The servers
    put ``token`` in each answer, so a load client counts only its own server's answers
    (never those of another test's server that got the same free port first)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "acked").mkdir(exist_ok=True)
    open_store = _open_store(store, remote, directory / "data", grace)
    sources = {
        "trial_direct.py": _DIRECT,
        "app.py": _FASTAPI.format(open_store=open_store, token=token),
        "gradio_app.py": _GRADIO.format(open_store=open_store, port=port, token=token),
        "writer.py": _WRITER.format(open_store=open_store),
        "pool_writer.py": _POOL.format(
            open_store_indented=textwrap.indent(open_store, "    ").strip()
        ),
    }
    for name, source in sources.items():
        (directory / name).write_text(textwrap.dedent(source).lstrip())
