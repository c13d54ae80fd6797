"""A replicated database past 1 GiB, where SQLite leaves its lock-byte page (the page at
byte offset 2**30) unused: segments that write pages beyond it, snapshots of a file that
spans it, and a restore that must give back every row with integrity_check ok. In the
stress run only (``./dev stress``): it writes and restores over 2 GiB."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

import cargohold
from cargohold.sqlite import restore
from tests.sqlite.test_sqlite import open_hold

BLOB = 1024 * 1024
ROWS = 1100  # 1.1 GiB of blobs: the database ends well past the lock-byte page


def blob(n: int) -> bytes:
    """Row ``n``'s 1 MiB of pseudo-random bytes (incompressible, reproducible)."""
    seed = hashlib.sha256(n.to_bytes(8, "big")).digest()
    return (seed * (BLOB // len(seed) + 1))[:BLOB]


@pytest.mark.stress
def test_a_database_past_the_lock_byte_page_comes_back_whole(tmp_path: Path) -> None:
    with open_hold(tmp_path, "a") as hold:
        path = hold.sqlite("big.db", interval=3600)
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE b (n INTEGER PRIMARY KEY, data BLOB, digest TEXT)")
        for n in range(1, ROWS + 1):
            data = blob(n)
            with con:
                con.execute(
                    "INSERT INTO b VALUES (?, ?, ?)", (n, data, hashlib.sha256(data).hexdigest())
                )
            if n % 64 == 0:
                hold.flush()  # ships and checkpoints: the WAL stays small
        con.close()
        hold.flush()
        assert path.stat().st_size > 2**30 + 64 * BLOB
    dest = tmp_path / "restored.db"
    report = restore(cargohold.open_remote((tmp_path / "remote").as_uri()), "big.db", dest)
    assert report.pages * 4096 == dest.stat().st_size > 2**30
    con = sqlite3.connect(dest)
    try:
        assert con.execute("SELECT count(*) FROM b").fetchone() == (ROWS,)
        for n, data, digest in con.execute("SELECT n, data, digest FROM b"):
            assert hashlib.sha256(data).hexdigest() == digest == hashlib.sha256(blob(n)).hexdigest()
    finally:
        con.close()
