"""Upgrade: apply what a put log left in a data directory, exactly once, then remove it.

From 2026-12-03 to 2026-12-04 a process alone on its data directory appended puts to
``putlog`` and applied them to the index in batches (removed: it was not safe under
signals and fork). A directory left by that code after a crash may hold acknowledged
records the index has not applied yet. Opening applies them here, once: the index's
``info`` row ``putlog`` names the log file (by the id in its header) and the offset
applied up to, and both the records and the new offset commit in one transaction, so
two processes opening at once, or a crash at any moment, apply each record once. A torn
last record (a write cut short) is skipped, as that code did: it was never acknowledged.
A log file the index does not name was replaced before the crash and is not read.

Read-only towards the log: this module only reads ``putlog`` and then removes it and its
companions (``putlog.lock``, ``putlog.present``, ``putlog.state``, ``putlog.new``). While a
process of the old code still has the directory open (it holds ``putlog.present``), the
files are left for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass
from fcntl import LOCK_EX, LOCK_NB, LOCK_UN, flock
from pathlib import Path
from typing import Any

from ._index import sqlite_error

__all__ = ["LEFTOVERS", "recover_putlog"]

log = logging.getLogger("cargohold.local")

LEFTOVERS = ("putlog", "putlog.new", "putlog.lock", "putlog.present", "putlog.state")
_MAGIC = b"CHPUTLG1"
_HEADER_SIZE = len(_MAGIC) + 8  # magic, then the file's id (8 random bytes)
_FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
# time, flags, size, version, then the lengths of key, file, metadata, content type, inline
_FIELDS = struct.Struct("<dBQQIIIII")
_DELETED, _INLINE = 1, 2

# As the put log applied a record: the version the put returned, unless the row's is
# already that high (another process wrote the key meanwhile): versions only rise.
_UPSERT_LOGGED = """
INSERT INTO objects (key, version, size, inline, file, metadata, content_type,
                     etag, modified, validated, accessed, dirty_since, deleted)
VALUES (:key, :version, :size, :inline, :file, :metadata, :content_type,
        NULL, :now, NULL, :now, :now, :deleted)
ON CONFLICT (key) DO UPDATE SET
    version = max(version + 1, excluded.version), size = excluded.size,
    inline = excluded.inline, file = excluded.file, metadata = excluded.metadata,
    content_type = excluded.content_type, etag = NULL, modified = excluded.modified,
    validated = NULL, accessed = excluded.accessed,
    dirty_since = coalesce(dirty_since, excluded.dirty_since), deleted = excluded.deleted
"""


@dataclass(frozen=True, slots=True)
class _Record:
    params: dict[str, Any]
    end: int  # offset just past the record


def recover_putlog(conn: sqlite3.Connection, root: Path) -> int:
    """Apply the records of ``root/putlog`` past the offset the index has applied, then
    remove the log's files. Returns how many records were applied."""
    if not any(os.path.lexists(root / name) for name in LEFTOVERS):
        return 0
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            applied = _apply(conn, root / "putlog")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise sqlite_error(exc, f"apply the put log left in {root}") from exc
    if applied:
        log.info("cargohold: applied %d write(s) left in the put log of %s", applied, root)
    if _old_code_open(root):
        log.warning(
            "cargohold: an older cargohold process still has %s open: its put log is left "
            "for it; stop it, then open this directory again",
            root,
        )
        return applied
    for name in LEFTOVERS:
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
    # Only now: while the file was there, the row said how much of it was applied.
    conn.execute("DELETE FROM info WHERE name = 'putlog'")
    return applied


def _apply(conn: sqlite3.Connection, path: Path) -> int:
    """In the open transaction: the records past the applied offset, and the new offset."""
    row = conn.execute("SELECT value FROM info WHERE name = 'putlog'").fetchone()
    if row is None:
        return 0  # the index never named a log: nothing in one was acknowledged
    file_id_hex, offset_text = str(row[0]).split()
    file_id, offset = bytes.fromhex(file_id_hex), int(offset_text)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if data[:_HEADER_SIZE] != _MAGIC + file_id:
        return 0  # a file the index does not name: replaced before the crash
    records = _decode(data, max(offset, _HEADER_SIZE))
    for record in records:
        conn.execute(_UPSERT_LOGGED, record.params)
    if records:
        conn.execute(
            "UPDATE info SET value = ? WHERE name = 'putlog'",
            (f"{file_id_hex} {records[-1].end}",),
        )
    return len(records)


def _decode(data: bytes, start: int) -> list[_Record]:
    """The whole records of ``data`` from offset ``start``; stops at the first torn or
    corrupt one."""
    records: list[_Record] = []
    view = memoryview(data)
    at = start
    while at + _FRAME.size <= len(view):
        length, crc = _FRAME.unpack_from(view, at)
        body = view[at + _FRAME.size : at + _FRAME.size + length]
        if len(body) < length or length < _FIELDS.size or zlib.crc32(body) != crc:
            break
        now, flags, size, version, *lengths = _FIELDS.unpack_from(body, 0)
        cursor = _FIELDS.size
        fields = []
        for length_of in lengths:
            fields.append(bytes(body[cursor : cursor + length_of]))
            cursor += length_of
        at += _FRAME.size + length
        key, file, metadata, content_type, inline = fields
        params = {
            "key": key.decode("utf-8", "surrogatepass"),
            "size": size,
            "version": version,
            "inline": inline if flags & _INLINE else None,
            "file": file.decode() or None,
            "metadata": metadata.decode() or None,
            "content_type": content_type.decode(),
            "now": now,
            "deleted": int(bool(flags & _DELETED)),
        }
        records.append(_Record(params, at))
    return records


def _old_code_open(root: Path) -> bool:
    """True if a process of the put log's code has the directory open: each held a shared
    lock on ``putlog.present`` while open."""
    try:
        fd = os.open(root / "putlog.present", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        flock(fd, LOCK_EX | LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # no file locks here: that code never used a log on this filesystem
    else:
        flock(fd, LOCK_UN)
        return False
    finally:
        os.close(fd)
