"""A data directory left by the put log's code (2026-12-03) after a crash: opening it with
this code applies every acknowledged record exactly once and removes the log's files.

The directory is built in that code's format: ``_old_record`` is its encoder, copied from
``cargohold/_putlog.py`` as it was (commit 0bd5e81), so the test does not depend on the
reader it checks.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import zlib
from pathlib import Path

import pytest

from cargohold._putlog_recovery import LEFTOVERS
from cargohold.local import LocalTier

# -- the put log's format, copied from the old code -------------------------------------------

_MAGIC = b"CHPUTLG1"
_HEADER_SIZE = len(_MAGIC) + 8
_FRAME = struct.Struct("<II")
_FIELDS = struct.Struct("<dBQQIIIII")
_DELETED, _INLINE = 1, 2


def _old_record(
    key: str,
    size: int,
    version: int,
    inline: bytes | None,
    file: str | None,
    metadata: str | None,
    content_type: str,
    now: float,
    deleted: bool,
) -> bytes:
    parts = [
        key.encode("utf-8", "surrogatepass"),
        (file or "").encode(),
        (metadata or "").encode(),
        content_type.encode(),
    ]
    flags = (_DELETED if deleted else 0) | (_INLINE if inline is not None else 0)
    payload = b"".join(
        [
            _FIELDS.pack(now, flags, size, version, *(len(p) for p in parts), len(inline or b"")),
            *parts,
        ]
    )
    payload += inline or b""
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


# -- building a directory as the old code left it ---------------------------------------------

FILE_ID = bytes.fromhex("0123456789abcdef")
T0 = 1_764_000_000.0
V0 = int(T0 * 1_000_000)  # the old code's versions: a rising microsecond count


def _put(key: str, value: bytes, n: int, meta: str | None = None) -> bytes:
    return _old_record(
        key, len(value), V0 + n, value, None, meta, "text/plain", T0 + n / 1000, False
    )


def _delete(key: str, n: int) -> bytes:
    return _old_record(
        key, 0, V0 + n, None, None, None, "application/octet-stream", T0 + n / 1000, True
    )


def _leave_a_crashed_directory(root: Path, *, applied_count: int) -> tuple[list[bytes], int]:
    """The index (made by this code: the schema is the same), with the first
    ``applied_count`` records applied and the offset after them recorded, as the old code
    did in one transaction; the whole log and a torn tail beside it; the lock files."""
    LocalTier(root).close()
    blob = root / "blobs" / "f" / "f00d"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(b"B" * 70_000)
    records = [
        _put("applied/a", b"a1", 1),  # applied before the crash
        _put("applied/b", b"b1", 2, '{"who":"old"}'),  # applied before the crash
        _put("applied/c", b"c1", 3),  # applied before the crash, never written again
        _put("logged/x", b"x1", 4),
        _put("logged/x", b"x2", 5),  # the same key again: the latest wins
        _put("applied/a", b"a2", 6),  # an applied key written again after the offset
        _delete("applied/b", 7),  # a deletion
        _old_record(
            "logged/big", 70_000, V0 + 8, None, "f/f00d", None, "video/mp4", T0 + 0.008, False
        ),
    ]
    log = _MAGIC + FILE_ID + b"".join(records)
    torn = _put("torn/never-acknowledged", b"t" * 100, 9)
    (root / "putlog").write_bytes(log + torn[:-10])
    offset = _HEADER_SIZE + sum(len(r) for r in records[:applied_count])
    conn = sqlite3.connect(root / "index.sqlite3", isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for n, (key, value) in enumerate(
            [("applied/a", b"a1"), ("applied/b", b"b1"), ("applied/c", b"c1")][:applied_count]
        ):
            conn.execute(
                "INSERT INTO objects (key, version, size, inline, metadata, content_type, "
                "modified, accessed, dirty_since, deleted) VALUES (?, ?, ?, ?, ?, 'text/plain', "
                "?, ?, ?, 0)",
                (
                    key,
                    V0 + n + 1,
                    len(value),
                    value,
                    '{"who":"old"}' if key == "applied/b" else None,
                    T0,
                    T0,
                    T0,
                ),
            )
        conn.execute(
            "INSERT OR REPLACE INTO info VALUES ('putlog', ?)", (f"{FILE_ID.hex()} {offset}",)
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    for name in ("putlog.lock", "putlog.present"):
        (root / name).write_bytes(b"")
    (root / "putlog.state").write_bytes(bytes(24))
    return records, offset


def _rows(root: Path) -> dict[str, tuple[int, bytes | None, str | None, int, str | None]]:
    conn = sqlite3.connect(root / "index.sqlite3")
    try:
        return {
            row[0]: row[1:]
            for row in conn.execute(
                "SELECT key, version, inline, file, deleted, metadata FROM objects"
            )
        }
    finally:
        conn.close()


def _integrity(root: Path) -> str:
    conn = sqlite3.connect(root / "index.sqlite3")
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("applied_count", [0, 3])
def test_records_left_in_the_put_log_are_applied_once_on_open(
    tmp_path: Path, applied_count: int
) -> None:
    root = tmp_path / "data"
    _leave_a_crashed_directory(root, applied_count=applied_count)

    tier = LocalTier(root)
    try:
        # Each record applied once: a row gets the version its put returned, and a record
        # applied again would bump it one past (versions only rise).
        c = tier.entry("applied/c")
        assert c is not None
        assert c.inline == b"c1"
        assert c.version == V0 + 3
        a = tier.entry("applied/a")
        assert a is not None
        assert a.inline == b"a2"
        assert a.pending
        assert a.version == V0 + 6
        b = tier.entry("applied/b")
        assert b is not None
        assert b.deleted
        assert b.pending
        assert b.version == V0 + 7
        x = tier.entry("logged/x")
        assert x is not None
        assert x.inline == b"x2"
        assert x.version == V0 + 5
        big = tier.entry("logged/big")
        assert big is not None
        assert big.file == "f/f00d"
        assert big.size == 70_000
        assert tier.data(big) == b"B" * 70_000
        assert big.content_type == "video/mp4"
        assert tier.entry("torn/never-acknowledged") is None  # a torn tail was never acked
        totals = tier.totals()
        assert totals.pending_count == 5  # a, b (deletion), c, x, big
        assert totals.pending_bytes == 2 + 0 + 2 + 2 + 70_000
        # Journal order kept: what the syncer takes first is the oldest.
        assert tier.pending(1)[0].entry.key == "applied/a"
        # Writes after the upgrade go on from the old versions.
        assert tier.write("logged/x", b"x3", metadata={}, content_type="text/plain").version == (
            V0 + 6
        )
    finally:
        tier.close()
    for name in LEFTOVERS:
        assert not (root / name).exists(), name
    assert _integrity(root) == "ok"

    before = _rows(root)
    LocalTier(root).close()  # opening again applies nothing again
    assert _rows(root) == before


def test_a_put_log_the_index_does_not_name_is_not_applied(tmp_path: Path) -> None:
    """The old code named a new log file in the index before it replaced the old one, so a
    file with another id was replaced before a crash: everything in it was applied."""
    root = tmp_path / "data"
    LocalTier(root).close()
    (root / "putlog").write_bytes(_MAGIC + bytes(8) + _put("stale", b"s", 1))
    conn = sqlite3.connect(root / "index.sqlite3", isolation_level=None)
    conn.execute("INSERT INTO info VALUES ('putlog', ?)", (f"{FILE_ID.hex()} {_HEADER_SIZE}",))
    conn.close()

    with_tier = LocalTier(root)
    try:
        assert with_tier.entry("stale") is None
        assert with_tier.info_value("putlog") is None
    finally:
        with_tier.close()
    assert not (root / "putlog").exists()


def test_the_log_is_left_while_a_process_of_the_old_code_has_the_directory_open(
    tmp_path: Path,
) -> None:
    """Each tier of the old code held a shared lock on putlog.present while open: its log
    is applied (once) but not removed under it; the next open after it left removes it."""
    root = tmp_path / "data"
    _leave_a_crashed_directory(root, applied_count=3)
    fd = os.open(root / "putlog.present", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # as a live tier of the old code holds it
        LocalTier(root).close()
        assert (root / "putlog").exists()
        first = _rows(root)
        assert first["logged/x"][1] == b"x2"
    finally:
        os.close(fd)  # that process has gone
    LocalTier(root).close()
    assert _rows(root) == first  # nothing applied twice
    for name in LEFTOVERS:
        assert not (root / name).exists(), name
