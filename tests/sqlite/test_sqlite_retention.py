"""hold.sqlite's retention, snapshots every N segments, request budget and refusals, on a
file remote with real SQLite: the remote's object count stays bounded, a restore within
retention works and one before it names the setting, the uploads stay within the budget
while every committed transaction ships, and unsafe file systems are refused."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

import cargohold
from cargohold import paths as paths_module
from cargohold.config import Settings
from cargohold.errors import ConfigError, NotFoundError
from cargohold.keys import internal_prefix
from cargohold.remotes import ObjectInfo
from cargohold.sqlite import restore
from cargohold.sqlite._replica import _check_locks
from tests.conftest import s3_url
from tests.sqlite.test_sqlite import insert, open_hold, rows
from testsupport.servers import SeaweedFS

RECORDS = internal_prefix("sqlite/app.db/g/")


def listing(tmp_path: Path) -> list[ObjectInfo]:
    """The database's records on the file remote (snapshots and segments)."""
    return list(cargohold.open_remote((tmp_path / "remote").as_uri()).list(RECORDS))


def records(tmp_path: Path) -> list[str]:
    """Their keys after ``g/``: ``<token>/snap|wal/<seq>``."""
    return sorted(info.key[len(RECORDS) :] for info in listing(tmp_path))


def test_many_transactions_leave_a_bounded_number_of_objects(tmp_path: Path) -> None:
    with open_hold(tmp_path, "a", sqlite_retention=0, sqlite_snapshot_segments=5) as hold:
        path = hold.sqlite("app.db", interval=3600)  # only flush ships: one segment each
        for n in range(1, 61):
            insert(path, n)
            hold.flush()
            assert len(records(tmp_path)) <= 5 + 2, records(tmp_path)
            if n == 10:
                early = time.time()  # a state this run shipped, older than the last snapshot
        kept = records(tmp_path)
    # Unbounded, 60 flushes leave 60 segments and 12 snapshots.
    assert sum("/snap/" in r for r in kept) == 1
    assert len(kept) <= 7
    dest = tmp_path / "restored.db"
    restore(cargohold.open_remote((tmp_path / "remote").as_uri()), "app.db", dest)
    assert rows(dest) == list(range(1, 61))
    # Retention 0 kept only the newest snapshot: the state after row 10 is gone, and the
    # error says which setting keeps more.
    with pytest.raises(NotFoundError, match="CARGOHOLD_SQLITE_RETENTION") as caught:
        restore(
            cargohold.open_remote((tmp_path / "remote").as_uri()),
            "app.db",
            tmp_path / "old.db",
            at=early,
        )
    assert "raise CARGOHOLD_SQLITE_RETENTION" in (caught.value.hint or "")
    assert not (tmp_path / "old.db").exists()


def test_retention_deletes_through_seaweedfs_and_the_restore_holds(
    tmp_path: Path, seaweedfs: SeaweedFS, seaweedfs_bucket: str
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    settings = {"sqlite_retention": 0, "sqlite_snapshot_segments": 4, "lease_ttl": 5}
    with cargohold.open(url, data_dir=tmp_path / "a", signal_handlers=False, **settings) as hold:
        path = hold.sqlite("app.db", interval=3600)
        for n in range(1, 31):
            insert(path, n)
            hold.flush()
        kept = [i.key for i in hold.remote.list(RECORDS)]
    assert sum("/snap/" in k for k in kept) == 1
    assert len(kept) <= 4 + 2, kept
    dest = tmp_path / "restored.db"
    restore(cargohold.open_remote(url), "app.db", dest)
    assert rows(dest) == list(range(1, 31))


def test_a_restore_within_retention_crosses_snapshots(tmp_path: Path) -> None:
    times = []
    with open_hold(tmp_path, "a", sqlite_snapshot_segments=3) as hold:  # retention: 24 h
        path = hold.sqlite("app.db", interval=3600)
        for n in range(1, 11):
            insert(path, n)
            hold.flush()
            times.append(time.time())
    kept = records(tmp_path)
    assert sum("/snap/" in r for r in kept) >= 3  # nothing inside the window was deleted
    remote = cargohold.open_remote((tmp_path / "remote").as_uri())
    for n in (1, 4, 7, 10):
        dest = tmp_path / f"at-{n}.db"
        restore(remote, "app.db", dest, at=times[n - 1])
        assert rows(dest) == list(range(1, n + 1))


def test_a_new_generation_lets_the_old_ones_go_outside_retention(tmp_path: Path) -> None:
    with open_hold(tmp_path, "a") as first:
        insert(first.sqlite("app.db"), 1, 2)
    first_generation = {r.split("/")[0] for r in records(tmp_path)}
    with open_hold(tmp_path, "b", sqlite_retention=0) as second:  # a new container
        path = second.sqlite("app.db", interval=3600)
        insert(path, 3)
        second.flush()
        generations = {r.split("/")[0] for r in records(tmp_path)}
    assert len(generations) == 1
    assert generations.isdisjoint(first_generation)
    dest = tmp_path / "restored.db"
    restore(cargohold.open_remote((tmp_path / "remote").as_uri()), "app.db", dest)
    assert rows(dest) == [1, 2, 3]


def test_uploads_stay_within_the_budget_and_every_commit_ships_at_close(tmp_path: Path) -> None:
    committed = 0
    done = threading.Event()

    def write(path: Path) -> None:
        nonlocal committed
        con = sqlite3.connect(path)
        try:
            while not done.is_set():
                with con:
                    con.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, v TEXT)")
                    con.execute("INSERT INTO t (n, v) VALUES (?, 'x')", (committed + 1,))
                committed += 1
        finally:
            con.close()

    # 120 uploads a minute: one every 0.5 s, while the loop would run every 10 ms.
    with open_hold(tmp_path, "a", sqlite_uploads_per_minute=120) as hold:
        started = time.monotonic()
        path = hold.sqlite("app.db", interval=0.01)
        assert hold.sqlite_status("app.db").loss_window_seconds == 0.5
        writer = threading.Thread(target=write, args=(path,))
        writer.start()
        while committed < 300 or time.monotonic() - started < 2:
            time.sleep(0.05)
        done.set()
        writer.join()
        made = len(records(tmp_path))
        elapsed = time.monotonic() - started
    # The first snapshot, then one record per 0.5 s of budget (and the round under way).
    assert made <= 2 + elapsed / 0.5, (made, elapsed)
    assert committed >= 300
    dest = tmp_path / "restored.db"
    restore(cargohold.open_remote((tmp_path / "remote").as_uri()), "app.db", dest)
    assert rows(dest) == list(range(1, committed + 1))


@pytest.mark.parametrize(
    ("setting", "value", "allowed"),
    [
        ("sqlite_retention", -1, "CARGOHOLD_SQLITE_RETENTION"),
        ("sqlite_snapshot_segments", 0, "CARGOHOLD_SQLITE_SNAPSHOT_SEGMENTS"),
        ("sqlite_uploads_per_minute", 0, "CARGOHOLD_SQLITE_UPLOADS_PER_MINUTE"),
    ],
)
def test_settings_out_of_range_are_refused_at_open(
    tmp_path: Path, setting: str, value: float, allowed: str
) -> None:
    with pytest.raises(ConfigError, match=allowed):
        open_hold(tmp_path, "a", **{setting: value})


def test_the_settings_read_their_variables() -> None:
    settings = Settings.load(
        {
            "CARGOHOLD_SQLITE_RETENTION": "2h",
            "CARGOHOLD_SQLITE_SNAPSHOT_SEGMENTS": "40",
            "CARGOHOLD_SQLITE_UPLOADS_PER_MINUTE": "6",
        }
    )
    assert settings.sqlite_retention == 7200
    assert settings.sqlite_snapshot_segments == 40
    assert settings.sqlite_uploads_per_minute == 6


def test_a_folder_whose_locks_do_not_hold_is_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in, as in tests/test_volumes.py: a file system that accepts flock and fcntl
    # locks and holds nothing. The probe's second process is real and unpatched.
    monkeypatch.setattr(paths_module, "_hold_locks", lambda fd: None)
    with open_hold(tmp_path, "a") as hold:
        where = tmp_path / "mnt" / "app.db"
        with pytest.raises(ConfigError, match="file locks do not hold") as caught:
            hold.sqlite("app.db", path=where)
    assert "another process took an flock lock" in str(caught.value)
    assert "without path=" in (caught.value.hint or "")
    assert not where.exists()
    assert not (tmp_path / "remote" / ".cargohold" / "sqlite").exists()


def test_a_database_on_a_network_mount_is_refused_from_the_mount_table(tmp_path: Path) -> None:
    # The mount table is a file written here (as tests/test_volumes.py does): no NFS server
    # runs on this machine. The table alone decides; nothing is probed or written.
    efs = tmp_path / "efs"
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        f"fs-1.efs.us-east-1.amazonaws.com:/ {efs} nfs4 rw,relatime,vers=4.1,hard 0 0\n"
    )
    with pytest.raises(ConfigError, match="file locks do not hold") as caught:
        _check_locks(efs / "app.db", mounts=str(table))
    assert "network" in str(caught.value).lower()
    assert "container's own disk" in (caught.value.hint or "")
    assert list(efs.iterdir()) == []  # the folder was made, nothing put in it
    _check_locks(tmp_path / "local" / "app.db", mounts=str(table))  # a local disk passes
