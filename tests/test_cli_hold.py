"""The Hold commands (put, get, ls, stats, rm, sync, restore, bench, serve), run for real
in a subprocess against a file:// remote."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import cargohold
from cargohold.cli import EXIT_CODES
from testsupport.children import dying_with_parent

CLI = [sys.executable, "-m", "cargohold"]


def code_for(cls: type[BaseException]) -> int:
    return next(code for c, code in EXIT_CODES if issubclass(cls, c))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
        "COLUMNS": "200",  # rich wraps tables to the terminal width
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_put_get_ls_rm(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"\x00video" * 1000)
    out = run(env, "put", "videos/a.mp4", str(source), "--json")
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout)
    assert stored["key"] == "videos/a.mp4"
    assert stored["size"] == 6000
    # durable by default: the remote has it when put returns
    assert (tmp_path / "remote" / "videos" / "a.mp4").read_bytes() == source.read_bytes()

    listing = json.loads(run(env, "ls", "videos/", "--json").stdout)
    assert [o["key"] for o in listing] == ["videos/a.mp4"]
    assert listing[0]["size"] == 6000
    assert "videos/a.mp4" in run(env, "ls").stdout

    fetched = subprocess.run(
        [*CLI, "get", "videos/a.mp4"], capture_output=True, env=env, timeout=60
    )
    assert fetched.returncode == 0
    assert fetched.stdout == source.read_bytes()
    target = tmp_path / "out" / "copy.mp4"
    target.parent.mkdir()
    assert run(env, "get", "videos/a.mp4", "-o", str(target)).returncode == 0
    assert target.read_bytes() == source.read_bytes()
    assert not list(target.parent.glob(".*.part"))
    described = run(env, "get", "videos/a.mp4", "-o", str(target), "--json")
    assert json.loads(described.stdout) == {
        "key": "videos/a.mp4",
        "path": str(target),
        "size": 6000,
    }
    refused = run(env, "get", "videos/a.mp4", "--json")
    assert refused.returncode == code_for(cargohold.InvalidInput)
    assert "-o FILE" in refused.stderr
    # A path that cannot be written is the user's input: one line naming it, no traceback.
    nowhere = tmp_path / "missing-dir" / "copy.mp4"
    failed = run(env, "get", "videos/a.mp4", "-o", str(nowhere))
    assert failed.returncode == code_for(FileNotFoundError)
    assert "Traceback" not in failed.stderr
    assert str(nowhere.parent) in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1

    assert json.loads(run(env, "rm", "videos/a.mp4", "--json").stdout) == {
        "deleted": "videos/a.mp4"
    }
    assert not (tmp_path / "remote" / "videos" / "a.mp4").exists()
    assert json.loads(run(env, "ls", "--json").stdout) == []


def test_bad_input_names_what_to_fix(env: dict[str, str], tmp_path: Path) -> None:
    out = run(env, "put", "k", str(tmp_path / "missing.bin"))
    assert out.returncode == code_for(cargohold.InvalidInput)
    assert "missing.bin is not a file" in out.stderr
    assert "Traceback" not in out.stderr

    source = tmp_path / "f.txt"
    source.write_text("x")
    out = run(env, "put", "../escape", str(source))
    assert out.returncode == code_for(cargohold.InvalidKey)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

    out = run(env, "get", "never/stored")
    assert out.returncode == code_for(cargohold.NotFoundError)
    assert "never/stored" in out.stderr


# A process killed with writes still in its journal: the state `stats` and `sync` are for.
KILLED_WITH_PENDING_WRITES = """
import os, cargohold
hold = cargohold.open(signal_handlers=False)
with hold.syncer.paused():
    for i in range(3):
        hold.put(f"p/{i}", b"payload")
    os._exit(0)
"""


def test_stats_and_sync_after_a_kill(env: dict[str, str], tmp_path: Path) -> None:
    killed = subprocess.run([sys.executable, "-c", KILLED_WITH_PENDING_WRITES], env=env, timeout=60)
    assert killed.returncode == 0
    # Reading commands neither wait for pending writes nor send them: they open a Hold
    # that does not sync (a send cut off when the command exits would hold the app's own
    # syncer back for resend_after).
    stats = json.loads(run(env, "stats", "--json").stdout)
    assert stats["pending_count"] == 3
    assert stats["pending_bytes"] == 3 * len(b"payload")
    assert stats["embedded_default"] is False
    assert "3 write(s)" in run(env, "stats").stdout
    assert [o["key"] for o in json.loads(run(env, "ls", "p/", "--json").stdout)] == [
        "p/0",
        "p/1",
        "p/2",
    ]
    assert not (tmp_path / "remote" / "p").exists()

    # The killed syncer had sent nothing (its session record says so): nothing is held back.
    out = run(env, "sync")
    assert out.returncode == 0, out.stderr
    assert "synced 3 write(s)" in out.stdout
    assert sorted(p.name for p in (tmp_path / "remote" / "p").iterdir()) == ["0", "1", "2"]
    assert json.loads(run(env, "stats", "--json").stdout)["pending_count"] == 0
    assert json.loads(run(env, "sync", "--json").stdout)["synced"] == 0


def test_sync_to_an_unreachable_remote_times_out_and_keeps_the_writes(
    env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    down = {
        **env,
        "CARGOHOLD_REMOTE": f"s3://bucket?endpoint={dead}",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "CARGOHOLD_SHUTDOWN_GRACE": "1",
    }
    source = tmp_path / "f.bin"
    source.write_bytes(b"kept")
    assert run(down, "put", "k/1", str(source), "--no-durable").returncode == 0
    out = run(down, "sync", "--timeout", "2")
    assert out.returncode == code_for(cargohold.TimedOut)
    assert "k/1" in out.stderr
    stats = json.loads(run(down, "stats", "--json").stdout)
    assert stats["pending_count"] == 1
    assert stats["last_error"]
    # Nothing was lost: the local tier still serves it.
    got = subprocess.run([*CLI, "get", "k/1"], capture_output=True, env=down, timeout=60)
    assert got.stdout == b"kept"


def test_restore_into_a_fresh_disk(env: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    for i in range(5):
        source.write_bytes(f"object {i}".encode())
        assert run(env, "put", f"r/{i}", str(source)).returncode == 0
    fresh = {**env, "CARGOHOLD_DATA_DIR": str(tmp_path / "fresh")}
    report = json.loads(run(fresh, "restore", "r/", "--json").stdout)
    assert report["objects"] == 5
    assert report["failed"] == {}
    again = run(fresh, "restore", "r/")
    assert again.returncode == 0
    assert "5 already here" in again.stdout
    with cargohold.open(
        remote=env["CARGOHOLD_REMOTE"], data_dir=tmp_path / "fresh", signal_handlers=False
    ) as hold:
        assert hold.get("r/3") == b"object 3"


def test_bench_reports_and_recommends(env: dict[str, str]) -> None:
    out = run(env, "bench", "--rounds", "3", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["recommendation"] in {"write-back", "write-through"}
    assert {(r["tier"], r["op"]) for r in report["rows"]} == {
        ("local", "put"),
        ("local", "get"),
        ("remote", "put"),
        ("remote", "get"),
    }
    human = run(env, "bench", "--rounds", "3")
    assert "recommended:" in human.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_until_stopped(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        dying_with_parent([*CLI, "serve", "--port", str(port)]),
        env={**env, "CARGOHOLD_TOKEN": "t0ken"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "serve never answered /healthz"
            time.sleep(0.2)
        assert (
            httpx.put(
                f"{base}/api/objects/s/hello.txt",
                content=b"hi",
                headers={"authorization": "Bearer t0ken"},
                timeout=10,
            ).status_code
            == 201
        )
        assert httpx.get(f"{base}/api/objects/s/hello.txt", timeout=10).status_code == 401
        got = httpx.get(
            f"{base}/api/objects/s/hello.txt", headers={"authorization": "Bearer t0ken"}, timeout=10
        )
        assert got.content == b"hi"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    # SIGTERM drains: the write reached the remote before the process exited.
    assert (tmp_path / "remote" / "s" / "hello.txt").read_bytes() == b"hi"


def test_serve_on_a_non_loopback_address_without_a_token_warns_loudly(
    env: dict[str, str],
) -> None:
    """192.0.2.1 (TEST-NET-1) is no address of this machine: the warning is printed, then
    the bind fails at once, so nothing ever listens beyond loopback."""
    env = {k: v for k, v in env.items() if k not in ("CARGOHOLD_TOKEN", "CARGOHOLD_READ_TOKEN")}
    out = run(env, "serve", "--host", "192.0.2.1", "--port", str(free_port()))
    assert out.returncode != 0  # could not bind
    assert "WARNING: listening on 192.0.2.1 with no CARGOHOLD_TOKEN" in out.stderr
    assert "X-Forwarded-For" in out.stderr
    with_token = run(
        {**env, "CARGOHOLD_TOKEN": "t0ken"},
        "serve",
        "--host",
        "192.0.2.1",
        "--port",
        str(free_port()),
    )
    assert "WARNING" not in with_token.stderr


def test_serve_refuses_a_public_prefix_covering_debug_bundles(env: dict[str, str]) -> None:
    out = run(env, "serve", "--public-prefix", "public/", "--public-prefix", "debug/")
    assert out.returncode == code_for(cargohold.ConfigError)
    assert "CARGOHOLD_PUBLIC_PREFIXES" in out.stderr
    assert "never public" in out.stderr


def test_catalog_rebuild_without_a_catalog_says_how_to_set_one(env: dict[str, str]) -> None:
    out = run({**env, "CARGOHOLD_CATALOG": ""}, "catalog", "rebuild")
    assert out.returncode == code_for(cargohold.ConfigError)
    assert "CARGOHOLD_CATALOG" in out.stderr


def test_the_readme_exit_code_table_matches_the_cli() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("| exit code | error |") :].split("\n\n")[0]
    documented = {int(line.split("|")[1]) for line in table.splitlines()[2:]}
    assert documented == {0} | {code for _, code in EXIT_CODES}
