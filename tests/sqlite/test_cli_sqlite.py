"""`cargohold sqlite ls / restore / replicate`, run for real in subprocesses on a file remote."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import cargohold
from cargohold.keys import internal_prefix

CLI = [sys.executable, "-m", "cargohold"]


def env_for(tmp_path: Path, data: str) -> dict[str, str]:
    return {
        **os.environ,
        "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
        "CARGOHOLD_DATA_DIR": str(tmp_path / data),
        "CARGOHOLD_LEASE_TTL": "2",
    }


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env_for(tmp_path, "cli"), timeout=120
    )


def start_replicate(tmp_path: Path, data: str, *args: str) -> subprocess.Popen[str]:
    """`cargohold sqlite replicate ARGS` in a process of its own, data directory ``data``."""
    return subprocess.Popen(
        [*CLI, "sqlite", "replicate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path, data),
    )


def on_remote(tmp_path: Path) -> list[tuple[str, str | None]]:
    """Every SQLite object on the remote, with its etag."""
    with cargohold.open_remote((tmp_path / "remote").as_uri()) as remote:
        return sorted((i.key, i.etag) for i in remote.list(internal_prefix("sqlite/")))


def test_replicate_beside_another_process_then_ls_and_restore(tmp_path: Path) -> None:
    db = tmp_path / "app" / "shop.db"
    replicator = start_replicate(tmp_path, "replicator", str(db), "--interval", "0.2")
    assert replicator.stdout is not None
    assert replicator.stdout.readline().startswith("ready"), replicator.stderr
    # The "app": another process writing the database the replicator watches.
    app = sqlite3.connect(db)
    with app:
        app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        app.executemany("INSERT INTO orders (item) VALUES (?)", [("tea",), ("cake",)])
    app.close()
    replicator.send_signal(signal.SIGTERM)  # ships the last transactions, then ends
    _, err = replicator.communicate(timeout=60)
    assert replicator.returncode == -signal.SIGTERM, err

    listed = run(tmp_path, "sqlite", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [entry["name"] for entry in json.loads(listed.stdout)] == ["shop.db"]

    out = tmp_path / "copy.db"
    restored = run(tmp_path, "sqlite", "restore", "shop.db", "--to", str(out), "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["path"] == str(out)
    con = sqlite3.connect(out)
    assert [item for (item,) in con.execute("SELECT item FROM orders ORDER BY id")] == [
        "tea",
        "cake",
    ]
    con.close()

    # A follower beside a reader in another language: restored, read-only, nothing written.
    before = on_remote(tmp_path)
    seen = tmp_path / "reader" / "shop.db"
    follower = start_replicate(tmp_path, "follower", str(seen), "--name", "shop.db", "--follow")
    assert follower.stdout is not None
    assert follower.stdout.readline().startswith("ready: following"), follower.stderr
    con = sqlite3.connect(f"file:{seen}?mode=ro", uri=True)
    assert [item for (item,) in con.execute("SELECT item FROM orders ORDER BY id")] == [
        "tea",
        "cake",
    ]
    con.close()
    follower.send_signal(signal.SIGTERM)
    _, err = follower.communicate(timeout=60)
    assert follower.returncode == -signal.SIGTERM, err
    assert on_remote(tmp_path) == before  # the follower wrote nothing, not even a lease

    again = run(tmp_path, "sqlite", "restore", "shop.db", "--to", str(out))
    assert again.returncode == 2  # bad input: the file exists, and it is left alone
    assert "already exists" in again.stderr
    unknown = run(tmp_path, "sqlite", "restore", "other.db", "--to", str(tmp_path / "o.db"))
    assert unknown.returncode == 4
    assert "no replicated database" in unknown.stderr
    bad_time = run(tmp_path, "sqlite", "restore", "shop.db", "--at", "yesterday")
    assert bad_time.returncode == 2
    assert "ISO 8601" in bad_time.stderr
