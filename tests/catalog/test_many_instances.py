"""Many instances on one SeaweedFS cluster and one PostgreSQL catalog: separate processes,
separate local tiers, sharing only the remote and the catalog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cargohold
from cargohold.catalog import Catalog
from cargohold.remotes.s3 import S3Remote
from testsupport.children import dying_with_parent
from testsupport.servers import SeaweedCluster

WORKER = textwrap.dedent(
    """
    import json, os, sys, threading, time, uuid
    from pathlib import Path
    import cargohold
    from cargohold import ConflictError, NotFoundError
    url, catalog, data_dir, name, builds = sys.argv[1:6]
    hold = cargohold.open(url, data_dir=data_dir, catalog=catalog, signal_handlers=False)

    def reply(**fields):
        print(json.dumps(fields), flush=True)

    def build(inputs, workdir):
        Path(builds, f"{inputs['prompt']}-{name}-{uuid.uuid4().hex}").write_text("x")
        time.sleep(float(inputs.get("seconds", 0.2)))
        return ("made of " + inputs["prompt"]).encode()

    reply(ready=name)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "write":
            for i in range(command["count"]):
                hold.put(f"{name}/{i}", f"{name}:{i}".encode())
            reply(written=command["count"])
        elif op == "flush":
            hold.flush(120)
            reply(flushed=True)
        elif op == "read":
            got = {}
            for other in command["names"]:
                for i in range(command["count"]):
                    got[f"{other}/{i}"] = hold.get(f"{other}/{i}").decode()
            reply(read=got)
        elif op == "increment":
            done = 0
            while done < command["times"]:
                try:
                    info = hold.remote.head("counter")
                    value = int(hold.remote.get("counter"))
                    hold.put("counter", str(value + 1).encode(), if_match=info.etag)
                    done += 1
                except ConflictError:
                    pass
            reply(incremented=done)
        elif op == "claim":
            won = []
            for i in range(command["count"]):
                try:
                    hold.put(f"claims/{i}", name.encode(), mode="create")
                    won.append(i)
                except ConflictError:
                    pass
            reply(won=won)
        elif op == "memo":
            memo = hold.memo("videos", version="v1", lease_ttl=2)
            results = {}
            def ask(prompt):
                results[prompt] = memo.get_or_create(
                    {"prompt": prompt, "seconds": command.get("seconds", 0.2)}, build
                ).value.decode()
            threads = [threading.Thread(target=ask, args=(p,)) for p in command["prompts"]]
            for t in threads: t.start()
            for t in threads: t.join()
            reply(results=results)
        elif op == "quit":
            hold.close()
            reply(bye=True)
            break
    """
)


class Instance:
    def __init__(self, url: str, catalog: str, data_dir: Path, name: str, builds: Path) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            dying_with_parent(
                [sys.executable, "-c", WORKER, url, catalog, str(data_dir), name, str(builds)]
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask_raw() == {"ready": name}

    def send(self, **command: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def ask_raw(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"{self.name} died"
        return dict(json.loads(line))

    def ask(self, **command: object) -> dict[str, object]:
        self.send(**command)
        return self.ask_raw()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(op="quit")
            finally:
                self.proc.communicate(timeout=60)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SeaweedCluster]:
    server = SeaweedCluster().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def instances(
    cluster: SeaweedCluster, catalog_url: str, tmp_path: Path
) -> Iterator[tuple[list[Instance], str, Path]]:
    bucket = cluster.make_bucket()
    url = (
        f"s3://{bucket}/app?endpoint={cluster.endpoint}"
        f"&access_key_id={cluster.access_key}&secret_access_key={cluster.secret_key}"
    )
    builds = tmp_path / "builds"
    builds.mkdir()
    started = [Instance(url, catalog_url, tmp_path / f"i{n}", f"i{n}", builds) for n in range(3)]
    try:
        yield started, url, builds
    finally:
        for instance in started:
            if instance.proc.poll() is None:
                instance.proc.kill()
                instance.proc.communicate(timeout=30)


def _all(instances: list[Instance], **command: object) -> list[dict[str, object]]:
    for instance in instances:
        instance.send(**command)
    return [instance.ask_raw() for instance in instances]


def test_no_lost_updates_read_your_writes_and_one_build_each(
    instances: tuple[list[Instance], str, Path], catalog_url: str
) -> None:
    workers, url, builds = instances
    S3Remote.from_url(url).put("counter", b"0")
    # Compare-and-swap from three instances at once: no increment is lost.
    assert [r["incremented"] for r in _all(workers, op="increment", times=15)] == [15, 15, 15]
    assert S3Remote.from_url(url).get("counter") == b"45"
    # Create-only claims: each won by exactly one instance.
    won = [set(r["won"]) for r in _all(workers, op="claim", count=30)]  # type: ignore[arg-type]
    assert sorted(i for w in won for i in w) == list(range(30))
    # Read-your-writes across instances once the writer has flushed.
    _all(workers, op="write", count=20)
    _all(workers, op="flush")
    names = [w.name for w in workers]
    for reply in _all(workers, op="read", names=names, count=20):
        assert reply["read"] == {f"{n}/{i}": f"{n}:{i}" for n in names for i in range(20)}
    # Ten prompts, each asked by all three instances at once: ten builds.
    prompts = [f"p{i}" for i in range(10)]
    results = [r["results"] for r in _all(workers, op="memo", prompts=prompts)]
    assert results[0] == results[1] == results[2] == {p: f"made of {p}" for p in prompts}
    assert sorted(p.name.split("-")[0] for p in builds.iterdir()) == prompts
    for worker in workers:
        worker.stop()


def test_a_volume_server_dies_mid_workload(
    instances: tuple[list[Instance], str, Path], cluster: SeaweedCluster
) -> None:
    workers, url, _ = instances
    for worker in workers:
        worker.send(op="write", count=200)
    cluster.kill_volume(0)  # while they write
    assert [w.ask_raw()["written"] for w in workers] == [200, 200, 200]
    _all(workers, op="write", count=220)  # writes go on with one volume server down
    _all(workers, op="flush")
    remote = S3Remote.from_url(url)
    for worker in workers:
        for i in range(220):
            assert remote.get(f"{worker.name}/{i}") == f"{worker.name}:{i}".encode()
    for worker in workers:
        worker.stop()


def test_a_builder_killed_mid_build_is_replaced_once(
    instances: tuple[list[Instance], str, Path],
) -> None:
    workers, _, builds = instances
    doomed, waiter, _ = workers
    doomed.send(op="memo", prompts=["slow"], seconds=60)
    deadline = time.monotonic() + 60
    while not list(builds.iterdir()):
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.05)
    waiter.send(op="memo", prompts=["slow"], seconds=0.2)
    time.sleep(0.5)  # the waiter is now waiting on a live lease
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.communicate(timeout=30)
    assert waiter.ask_raw() == {"results": {"slow": "made of slow"}}
    assert len(list(builds.iterdir())) == 2, "the killed build, then exactly one more"
    for worker in workers[1:]:
        worker.stop()


def test_rebuild_after_dropping_the_catalog(
    instances: tuple[list[Instance], str, Path], catalog_url: str
) -> None:
    workers, url, _ = instances
    _all(workers, op="write", count=50)
    _all(workers, op="memo", prompts=["a", "b"])
    _all(workers, op="flush")
    for worker in workers:
        worker.stop()
    remote = S3Remote.from_url(url)
    catalog = Catalog(catalog_url, remote)
    before = [(i.key, i.size, i.etag) for i in catalog.objects("")]
    assert len(before) >= 150
    catalog.drop()
    catalog.rebuild()
    assert [(i.key, i.size, i.etag) for i in catalog.objects("")] == before
    expected = sorted(i.key for i in remote.list(""))
    assert [i.key for i in catalog.objects("")] == expected
    with cargohold.Hold(
        remote=remote,
        local_dir=Path(os.environ.get("TMPDIR", "/tmp")) / f"rebuild-check-{os.getpid()}",
        settings=cargohold.Settings.load({}, signal_handlers=False),
        catalog=catalog,
    ) as hold:
        assert sorted(e.inputs["prompt"] for e in hold.memo("videos", version="v1").entries()) == [
            "a",
            "b",
        ]
