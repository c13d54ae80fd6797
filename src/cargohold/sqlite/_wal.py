"""SQLite's write-ahead log, read as a file (sqlite.org/fileformat.html, section 4).

A WAL is a 32-byte header and frames: a 24-byte frame header and one page each. A frame
is part of the log's current contents only when its salts equal the header's and its
checksum continues the cumulative chain that starts at the header's own checksum; the
last frame of a transaction (a *commit frame*) carries the database size after the
commit. :func:`read_committed` returns whole transactions only: the frames up to the last
commit frame whose chain is valid. A frame still being written breaks the chain, so a
reader never takes a torn one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FRAME_HEADER",
    "WAL_HEADER",
    "Chunk",
    "Position",
    "apply_frames",
    "checksum",
    "read_committed",
    "read_header",
    "verify_frames",
]

WAL_HEADER = 32
FRAME_HEADER = 24
_MAGIC_LE = 0x377F0682
_MAGIC_BE = 0x377F0683
_MASK = 0xFFFFFFFF


def checksum(data: bytes | memoryview, s0: int, s1: int, *, big: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing ``(s0, s1)``."""
    words = struct.unpack((">" if big else "<") + f"{len(data) // 4}I", data)
    it = iter(words)
    for a, b in zip(it, it, strict=True):
        s0 = (s0 + a + s1) & _MASK
        s1 = (s1 + b + s0) & _MASK
    return s0, s1


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader stands in one WAL: the log's salts (which change when SQLite
    restarts the log), how many frames of it were read, and the checksum after them."""

    salt1: int
    salt2: int
    page_size: int
    big: bool
    frames: int
    s0: int
    s1: int


def read_header(wal: Path) -> Position | None:
    """The position at the start of ``wal`` (no frame read), or None when the file is
    missing, shorter than a header, or its header is not valid (SQLite ignores such a log)."""
    try:
        with wal.open("rb") as fh:
            raw = fh.read(WAL_HEADER)
    except FileNotFoundError:
        return None
    if len(raw) < WAL_HEADER:
        return None
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", raw)
    if magic not in (_MAGIC_LE, _MAGIC_BE):
        return None
    big = magic == _MAGIC_BE
    if checksum(raw[:24], 0, 0, big=big) != (c0, c1):
        return None
    return Position(salt1, salt2, page_size, big, 0, c0, c1)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Whole transactions read from a WAL: ``frames`` (frame headers and pages, as in
    the file) from ``start`` to ``end``; ``commits`` commit frames, the last of which
    left the database ``db_pages`` pages long."""

    start: Position
    end: Position
    frames: bytes
    commits: int
    db_pages: int


def read_committed(wal: Path, start: Position, *, max_bytes: int) -> Chunk | None:
    """The frames after ``start`` up to the last valid commit frame (about ``max_bytes``
    at most, always whole transactions), or None when there is none. ``start`` must be
    a position in the log's current contents (same salts)."""
    size = FRAME_HEADER + start.page_size
    try:
        fh = wal.open("rb")
    except FileNotFoundError:
        return None
    with fh:
        fh.seek(WAL_HEADER + start.frames * size)
        s0, s1, frames = start.s0, start.s1, start.frames
        buffer = bytearray()
        commit_end = 0
        commits = db_pages = 0
        end = start
        while True:
            frame = fh.read(size)
            if len(frame) < size:
                break
            _pgno, after, salt1, salt2, c0, c1 = struct.unpack(">6I", frame[:FRAME_HEADER])
            if (salt1, salt2) != (start.salt1, start.salt2):
                break
            s0, s1 = checksum(frame[:8], s0, s1, big=start.big)
            s0, s1 = checksum(memoryview(frame)[FRAME_HEADER:], s0, s1, big=start.big)
            if (s0, s1) != (c0, c1):
                break
            frames += 1
            buffer += frame
            if after:
                commits += 1
                db_pages = after
                commit_end = len(buffer)
                end = Position(start.salt1, start.salt2, start.page_size, start.big, frames, s0, s1)
                if commit_end >= max_bytes:
                    break
    if not commits:
        return None
    return Chunk(start, end, bytes(buffer[:commit_end]), commits, db_pages)


def verify_frames(frames: bytes, start: Position) -> tuple[Position, int, int]:
    """Check ``frames`` continue the chain from ``start`` with its salts and end at a
    commit frame. Returns the end position, the number of commits and the database size
    after the last one; raises ValueError saying which frame is wrong."""
    size = FRAME_HEADER + start.page_size
    if not frames or len(frames) % size:
        raise ValueError(f"{len(frames)} bytes are not whole frames of {size} bytes")
    s0, s1 = start.s0, start.s1
    commits = db_pages = last = 0
    view = memoryview(frames)
    count = len(frames) // size
    for index in range(count):
        frame = view[index * size : (index + 1) * size]
        _pgno, after, salt1, salt2, c0, c1 = struct.unpack(">6I", frame[:FRAME_HEADER])
        if (salt1, salt2) != (start.salt1, start.salt2):
            raise ValueError(f"frame {index} has other salts than its log")
        s0, s1 = checksum(frame[:8], s0, s1, big=start.big)
        s0, s1 = checksum(frame[FRAME_HEADER:], s0, s1, big=start.big)
        if (s0, s1) != (c0, c1):
            raise ValueError(f"frame {index} breaks the checksum chain")
        if after:
            commits += 1
            db_pages = after
            last = index
    if last != count - 1 or not commits:
        raise ValueError("the frames do not end with a commit frame")
    end = Position(
        start.salt1, start.salt2, start.page_size, start.big, start.frames + count, s0, s1
    )
    return end, commits, db_pages


def apply_frames(db: Path, frames: bytes, page_size: int) -> None:
    """Write each frame's page into ``db`` and cut the file to the size each commit
    frame gives, as a checkpoint does. ``frames`` must have passed :func:`verify_frames`."""
    size = FRAME_HEADER + page_size
    with db.open("r+b") as out:
        for offset in range(0, len(frames), size):
            pgno, after = struct.unpack(">2I", frames[offset : offset + 8])
            out.seek((pgno - 1) * page_size)
            out.write(frames[offset + FRAME_HEADER : offset + size])
            if after:
                out.truncate(after * page_size)
