"""Real processes replicating real SQLite to SeaweedFS: a writer committing small
transactions flat out is SIGKILLed or SIGTERMed at a random moment, its data directory
is wiped (a new container), and the database is restored from the remote alone.

- SIGKILL: every transaction the writer's last reported lag said was on the remote is
  restored, in order, with no gap, and the database passes its integrity check.
- SIGTERM: every transaction the writer saw committed is restored.
- Two instances overlapping: the second waits for the first's lease; a first that is
  frozen past its lease (SIGSTOP) is taken over, and the segments it ships once it
  thaws are never part of the history.

A few trials run in the default suite, more with ``./dev stress`` (``-m stress``).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cargohold.remotes import Remote, open_remote
from cargohold.sqlite import restore
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS

WRITER = textwrap.dedent(
    """
    import os, signal, sqlite3, sys
    import cargohold

    stopped = []
    if os.environ.get("ON_TERM") == "carry-on":  # the app's own handler: it lives on
        signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
    hold = cargohold.open(
        os.environ["REMOTE"],
        data_dir=os.environ["DATA"],
        shutdown_grace=5,
        lease_ttl=2,
        sqlite_uploads_per_minute=600,  # a round every 0.2 s, not the default budget's 2 s
    )
    path = hold.sqlite("app.db", interval=0.2)
    con = sqlite3.connect(path, timeout=1)
    con.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, who TEXT)")
    con.commit()
    n = con.execute("SELECT coalesce(max(n), 0) FROM t").fetchone()[0]
    print("ready", n, flush=True)
    who = os.environ.get("WHO", "w")
    while True:
        try:
            con.execute("INSERT INTO t VALUES (?, ?)", (n + 1, who))
            con.commit()
        except sqlite3.OperationalError:  # locked (a stop holds writes): try again, as apps do
            con.rollback()
            continue
        n += 1
        print("c", n, flush=True)
        if stopped and len(stopped) < 50:
            stopped.append(n)
        elif stopped:
            hold.close()  # ships the rest and gives the lease up
            sys.exit(0)
        if n % 25 == 0:
            status = hold.sqlite_status("app.db")
            print("s", n, status.pending_transactions, flush=True)
    """
)


@dataclass
class Writer:
    process: subprocess.Popen[str]
    data: Path

    def lines(self) -> Iterator[list[str]]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            # Only whole lines: a killed writer may leave half of its last one (its
            # buffer is flushed when full, in the middle of a print).
            if line.endswith("\n"):
                yield line.split()


def start_writer(
    tmp_path: Path, remote_url: str, data: str, who: str = "w", on_term: str = "die"
) -> Writer:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {
        **os.environ,
        "REMOTE": remote_url,
        "DATA": str(tmp_path / data),
        "WHO": who,
        "ON_TERM": on_term,
    }
    with (tmp_path / f"{data}.log").open("a") as log:  # a file: a full pipe would stall it
        process = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            start_new_session=True,
        )
    return Writer(process, tmp_path / data)


def wait_ready(writer: Writer) -> int:
    for words in writer.lines():
        if words and words[0] == "ready":
            return int(words[1])
    log = writer.data.with_name(f"{writer.data.name}.log").read_text()
    raise AssertionError(f"the writer never became ready: {log[-3000:]}")


def run_until_signal(writer: Writer, signum: int, rng: random.Random) -> tuple[int, int]:
    """Let the writer commit for a random moment, signal it, and return the last
    transaction it reported committed and the last one its status said was on the remote."""
    wait_ready(writer)
    deadline = time.monotonic() + rng.uniform(0.5, 2.5)
    committed = on_remote = 0
    words: list[str] = []
    lines = writer.lines()
    for words in lines:
        if words[0] == "c":
            committed = int(words[1])
        elif words[0] == "s":
            on_remote = int(words[1]) - int(words[2])
        if time.monotonic() > deadline and on_remote > 0:
            break
    writer.process.send_signal(signum)
    for words in lines:  # what it printed before it died
        if words[0] == "c":
            committed = int(words[1])
        elif words[0] == "s":
            on_remote = int(words[1]) - int(words[2])
    writer.process.communicate(timeout=60)  # waits, and closes its pipe
    return committed, on_remote


def restored_rows(remote: Remote, tmp_path: Path) -> list[int]:
    dest = tmp_path / f"restored-{time.monotonic_ns()}.db"
    restore(remote, "app.db", dest)  # integrity_check and the remote's size are checked inside
    con = sqlite3.connect(dest)
    try:
        return [n for (n,) in con.execute("SELECT n FROM t ORDER BY n")]
    finally:
        con.close()


@pytest.fixture(scope="module")
def bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.make_bucket("sqlite-trials")


def signal_trials(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str, signum: int, trials: int, seed: int
) -> None:
    """``trials`` writers, each signalled at a random moment, its data directory wiped,
    then restored from the remote. After SIGKILL every transaction the last reported lag
    said was on the remote must come back; after SIGTERM every one it saw committed."""
    rng = random.Random(seed)
    url = s3_url(seaweedfs, bucket)
    remote = open_remote(url)
    try:
        for trial in range(trials):
            writer = start_writer(tmp_path, url, f"data-{trial}")
            committed, on_remote = run_until_signal(writer, signum, rng)
            assert writer.process.returncode == -signum
            promised = committed if signum == signal.SIGTERM else on_remote
            shutil.rmtree(writer.data)  # a new container
            found = restored_rows(remote, tmp_path)
            assert found == list(range(1, len(found) + 1)), f"trial {trial}: a gap"
            assert len(found) >= promised, (
                f"trial {trial} (seed {seed}, signal {signum}): {promised} promised on the "
                f"remote, {len(found)} came back"
            )
    finally:
        remote.close()


def test_sigkill_loses_at_most_the_reported_lag(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str
) -> None:
    signal_trials(tmp_path, seaweedfs, bucket, signal.SIGKILL, trials=3, seed=18)


def test_sigterm_ships_every_committed_transaction(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str
) -> None:
    signal_trials(tmp_path, seaweedfs, bucket, signal.SIGTERM, trials=3, seed=1818)


@pytest.mark.stress
def test_sigkill_many_trials(tmp_path: Path, seaweedfs: SeaweedFS, bucket: str) -> None:
    trials = int(os.environ.get("CARGOHOLD_STRESS_TRIALS", "25"))
    signal_trials(tmp_path, seaweedfs, bucket, signal.SIGKILL, trials=trials, seed=int(time.time()))


@pytest.mark.stress
def test_sigterm_many_trials(tmp_path: Path, seaweedfs: SeaweedFS, bucket: str) -> None:
    trials = int(os.environ.get("CARGOHOLD_STRESS_TRIALS", "25"))
    signal_trials(tmp_path, seaweedfs, bucket, signal.SIGTERM, trials=trials, seed=int(time.time()))


def test_a_restart_after_sigkill_ships_what_the_wal_still_held(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str
) -> None:
    url = s3_url(seaweedfs, bucket)
    writer = start_writer(tmp_path, url, "data")
    committed, _ = run_until_signal(writer, signal.SIGKILL, random.Random(7))
    # The same container starts again: its data directory (and the WAL) is still there.
    again = start_writer(tmp_path, url, "data")
    resumed = wait_ready(again)
    again.process.send_signal(signal.SIGTERM)
    again.process.communicate(timeout=60)
    assert resumed >= committed
    remote = open_remote(url)
    try:
        assert restored_rows(remote, tmp_path)[:committed] == list(range(1, committed + 1))
    finally:
        remote.close()


def test_overlapping_instances_write_one_history(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str
) -> None:
    url = s3_url(seaweedfs, bucket)
    first = start_writer(tmp_path, url, "first", who="first")
    wait_ready(first)
    for words in first.lines():
        if words[0] == "s" and int(words[1]) > int(words[2]):
            break  # some of its rows are on the remote
    # Frozen: it renews nothing, and its lease (2 s) expires for the second instance.
    os.killpg(first.process.pid, signal.SIGSTOP)
    second = start_writer(tmp_path, url, "second", who="second")
    taken_over_at = wait_ready(second)
    second_lines = second.lines()
    for words in second_lines:
        if words[0] == "s":
            break
    # Thawed, the first finds its lease gone; whatever it shipped meanwhile went into
    # its own generation, past the point the second's history took from it.
    os.killpg(first.process.pid, signal.SIGCONT)
    first.process.send_signal(signal.SIGTERM)
    first.process.communicate(timeout=60)
    second.process.send_signal(signal.SIGTERM)
    second.process.communicate(timeout=60)
    remote = open_remote(url)
    try:
        dest = tmp_path / "final.db"
        restore(remote, "app.db", dest)
        con = sqlite3.connect(dest)
        history = con.execute("SELECT n, who FROM t ORDER BY n").fetchall()
        con.close()
    finally:
        remote.close()
    numbers = [n for n, _ in history]
    assert numbers == list(range(1, len(numbers) + 1))
    # One history: the first's rows up to the takeover, then only the second's.
    assert all(who == "first" for n, who in history if n <= taken_over_at)
    assert all(who == "second" for n, who in history if n > taken_over_at)
    assert 0 < taken_over_at < len(numbers)


def test_an_app_that_outlives_its_stop_writes_on_and_loses_nothing(
    tmp_path: Path, seaweedfs: SeaweedFS, bucket: str
) -> None:
    """Its own SIGTERM handler lets it go on: writes wait while the stop ships, then the
    replicator takes its lease back (a new generation continuing the old) and the app's
    later commits are shipped too, the last ones by its close."""
    url = s3_url(seaweedfs, bucket)
    writer = start_writer(tmp_path, url, "data", on_term="carry-on")
    committed, _ = run_until_signal(writer, signal.SIGTERM, random.Random(3))
    assert writer.process.returncode == 0
    shutil.rmtree(writer.data)
    remote = open_remote(url)
    try:
        dest = tmp_path / "after.db"
        report = restore(remote, "app.db", dest)
    finally:
        remote.close()
    con = sqlite3.connect(dest)
    numbers = [n for (n,) in con.execute("SELECT n FROM t ORDER BY n")]
    con.close()
    assert numbers == list(range(1, committed + 1))
    assert report.generation >= 2  # the lease was given up at the stop and taken back
