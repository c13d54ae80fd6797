"""Single-flight across processes and instances sharing a remote (real SeaweedFS)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cargohold
from tests.conftest import s3_url
from testsupport.children import dying_with_parent
from testsupport.servers import SeaweedFS

WORKER = textwrap.dedent(
    """
    import json, os, sys, threading, time, uuid
    from pathlib import Path
    import cargohold
    url, data_dir, builds_dir, prompts, lease_ttl = sys.argv[1:6]
    hold = cargohold.open(url, data_dir=data_dir, signal_handlers=False)
    memo = hold.memo("video", version="v1", lease_ttl=float(lease_ttl))

    def build(inputs, workdir):
        marker = Path(builds_dir) / f"{inputs['prompt']}-{os.getpid()}-{uuid.uuid4().hex}"
        marker.write_text("building")
        print("BUILDING", inputs["prompt"], flush=True)
        time.sleep(float(os.environ.get("BUILD_SECONDS", "0.3")))
        out = workdir / "take_1.mp4"
        out.write_bytes(("video of " + inputs["prompt"]).encode() * 1000)
        return out

    print("READY", flush=True)
    sys.stdin.readline()  # start together
    results = {}

    def ask(prompt):
        entry = memo.get_or_create({"prompt": prompt}, build)
        results[prompt] = entry.path.read_bytes().decode()[:40] + "|" + entry.digest

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts.split(",")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("RESULTS", json.dumps(results, sort_keys=True), flush=True)
    hold.close()
    """
)


def _worker(
    url: str,
    data_dir: Path,
    builds: Path,
    prompts: list[str],
    lease_ttl: float,
    build_seconds: float = 0.3,
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        dying_with_parent(
            [
                sys.executable,
                "-c",
                WORKER,
                url,
                str(data_dir),
                str(builds),
                ",".join(prompts),
                str(lease_ttl),
            ]
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "BUILD_SECONDS": str(build_seconds)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def test_three_processes_twenty_prompts_twenty_builds(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    builds = tmp_path / "builds"
    builds.mkdir()
    prompts = [f"prompt-{i}" for i in range(20)]
    # Separate data directories: three instances that share only the remote.
    workers = [
        _worker(url, tmp_path / f"instance-{n}", builds, prompts, lease_ttl=30) for n in range(3)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        line = next(line for line in out.splitlines() if line.startswith("RESULTS "))
        outputs.append(json.loads(line.removeprefix("RESULTS ")))
    built = sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in builds.iterdir())
    assert built == sorted(prompts), f"{len(built)} builds for 20 prompts"
    assert outputs[0] == outputs[1] == outputs[2], "everyone gets identical results"
    assert outputs[0]["prompt-7"].startswith("video of prompt-7")


def test_a_killed_builder_is_replaced_by_exactly_one_waiter(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    builds = tmp_path / "builds"
    builds.mkdir()
    doomed = _worker(url, tmp_path / "doomed", builds, ["one"], lease_ttl=2, build_seconds=60)
    assert doomed.stdin is not None
    assert doomed.stdout is not None
    doomed.stdin.write("go\n")
    doomed.stdin.flush()
    assert doomed.stdout.readline().split() == ["BUILDING", "one"]
    waiters = [
        _worker(url, tmp_path / f"waiter-{n}", builds, ["one"], lease_ttl=2) for n in range(2)
    ]
    for waiter in waiters:
        assert waiter.stdin is not None
        waiter.stdin.write("go\n")
        waiter.stdin.flush()
    time.sleep(0.5)  # the waiters are now polling a live lease
    with cargohold.open(url, data_dir=tmp_path / "observer", signal_handlers=False) as observer:
        assert observer.memo("video", version="v1").get({"prompt": "one"}) is None, (
            "no entry is visible while it is being built"
        )
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=30)
        outputs = []
        for waiter in waiters:
            out, _ = waiter.communicate(timeout=120)
            assert waiter.returncode == 0
            outputs.append(next(line for line in out.splitlines() if line.startswith("RESULTS ")))
        assert outputs[0] == outputs[1]
        assert len(list(builds.iterdir())) == 2, "the dead builder, then exactly one more"
        entry = observer.memo("video", version="v1").get({"prompt": "one"})
        assert entry is not None
        assert entry.path is not None
        assert entry.path.read_bytes().startswith(b"video of one")
