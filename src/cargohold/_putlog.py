"""The put log: an append-only file that makes a local write safe in one ``write()``.

Why: a put that is its own SQLite transaction costs 35-50 µs here (about five WAL frames and
six file locks), and while the syncer is busy each of its several GIL hand-offs can wait
behind another thread. One ``write()`` of a framed record costs a few microseconds, and
the records are applied to the index in batches, many to a transaction, by whichever
thread next needs the index (usually the syncer, as it looks for work). Written here, not
borrowed: it is the journal itself (see DESIGN.md, "Write our own where the job is our
core").

Who appends: only a tier that had the data directory to itself when it opened (the
*owner*). Working alone is decided under ``putlog.lock``: every tier holds a shared lock on
``putlog.present`` for as long as it is open, so a tier that can take it exclusively is the
only one. A tier that opens beside an owner *joins*: it marks the owner's epoch as joined in
``putlog.state`` (three counters every tier maps: the owner's epoch, the last epoch joined,
the last epoch the owner acknowledged), writes straight to SQLite, and until the owner
acknowledges it applies whatever the owner appended before each use of the index (an
``fstat`` to see that the log grew). The owner sees the join at its next put, or lookup
while it holds records not yet applied (a 24-byte read of the map), applies what it holds,
acknowledges, and writes to SQLite from then on. So a write by any process is seen by the
next read in every other one. A tier that finds itself alone again (the others closed)
claims the log anew, as a new epoch (``claiming``; the syncer tries when idle).

Which records are applied is decided inside the index's own write transaction: the
``info`` row ``putlog`` holds the log file's id and the offset applied up to, so a record
is applied exactly once whoever applies it, and a crash at any moment leaves the index and
the offset in step. A record is framed by its length and CRC-32: a torn tail (a write cut
short by power loss, or by a full disk) stops the reader there and is cut off by the next
owner. With ``fsync`` on, each record is fdatasync'd before the put returns.

If the directory's filesystem cannot lock files (some network mounts), no tier owns the
log and every write goes to SQLite, as before the log existed.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fcntl import LOCK_EX, LOCK_NB, LOCK_SH, LOCK_UN, flock
from pathlib import Path

__all__ = ["HEADER_SIZE", "LogRecord", "PutLog", "decode_records", "encode_record"]

log = logging.getLogger("cargohold.local")

MAGIC = b"CHPUTLG1"
HEADER_SIZE = len(MAGIC) + 8  # magic, then the file's id (8 random bytes)
_FRAME = struct.Struct("<II")  # payload length, CRC-32 of the payload
# time, flags, size, version, then the lengths of key, file, metadata, content type, inline
_FIELDS = struct.Struct("<dBQQIIIII")
_DELETED, _INLINE = 1, 2
_STATE_SIZE = 24  # owner epoch, joined epoch, acknowledged epoch: three little-endian u64
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One logged local change: the values of a dirty upsert, and where it ends in the log."""

    key: str
    size: int
    version: int  # the version the put returned: the index gives it at least this
    inline: bytes | None
    file: str | None
    metadata: str | None  # JSON text as the index stores it
    content_type: str
    now: float
    deleted: bool
    end: int  # offset just past this record: applying it means "applied up to end"


def encode_record(
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


def decode_records(data: bytes, start: int) -> tuple[list[LogRecord], int]:
    """The whole records in ``data`` (the log's bytes from offset ``start``), and the
    offset just past the last one. Stops at the first torn or corrupt record."""
    records: list[LogRecord] = []
    view = memoryview(data)
    at = 0
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
        records.append(
            LogRecord(
                key=key.decode("utf-8", "surrogatepass"),
                size=size,
                version=version,
                inline=inline if flags & _INLINE else None,
                file=file.decode() or None,
                metadata=metadata.decode() or None,
                content_type=content_type.decode(),
                now=now,
                deleted=bool(flags & _DELETED),
                end=start + at,
            )
        )
    return records, start + at


class PutLog:
    """The log file of one data directory and this tier's part in it (see the module
    docstring). ``owner`` is True when this tier may append."""

    def __init__(self, root: Path, *, fsync: bool) -> None:
        self.path = root / "putlog"
        self._root = root
        self._fsync = fsync
        self.owner = False
        self.end = 0  # the owner's append offset
        self._epoch = b""
        self._forked = False
        self._fd = -1
        self._new_fd = -1
        self._lock_fd = -1
        self._present_fd = -1
        self._state: mmap.mmap | None = None
        try:
            self._open()
        except OSError as exc:  # no file locks here: every write goes to SQLite directly
            log.info(
                "cargohold: %s cannot lock files (%s): writes go to the index directly", root, exc
            )
            self.close(ack=False)

    # -- joining --------------------------------------------------------------------------

    def _open(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._lock_fd = os.open(self._root / "putlog.lock", flags, 0o644)
        self._present_fd = os.open(self._root / "putlog.present", flags, 0o644)
        state_fd = os.open(self._root / "putlog.state", flags, 0o644)
        try:
            with self._locked():
                if os.fstat(state_fd).st_size < _STATE_SIZE:
                    os.ftruncate(state_fd, _STATE_SIZE)
                self._state = mmap.mmap(state_fd, _STATE_SIZE)
                if not self._own_if_alone():
                    self._state[8:16] = self._state[0:8]  # tell the owner, if there is one
        finally:
            os.close(state_fd)  # the map keeps the file
        if self.path.exists():
            self._fd = self._open_log()

    def _open_log(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)

    @contextlib.contextmanager
    def claiming(self) -> Iterator[bool]:
        """Hold ``putlog.lock`` and, if this tier is alone on the directory now (the others
        have closed), become the owner of a new epoch: yields True then. The caller sets up
        the log inside the block, before another tier can open and join."""
        if self._state is None or self._forked or self._present_fd < 0:
            yield False
            return
        with self._locked():
            yield self._own_if_alone()

    def _own_if_alone(self) -> bool:
        """With ``putlog.lock`` held: if no other tier has the directory open, become the
        owner of a new epoch. Either way this tier holds its shared lock on
        ``putlog.present`` afterwards, so the next tier to open finds it there."""
        assert self._state is not None
        try:
            # Exclusive only if no other tier holds it shared. When this tier holds it
            # already, this is a conversion: the shared lock goes first, and comes back
            # below if the exclusive one is refused. No tier can look meanwhile: opening
            # looks under putlog.lock, which this one holds.
            flock(self._present_fd, LOCK_EX | LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        # Never blocks: only a tier holding putlog.lock ever holds it exclusively.
        flock(self._present_fd, LOCK_SH)
        if alone:
            self._epoch = _U64.pack(_U64.unpack(self._state[0:8])[0] + 1)
            self._state[0:8] = self._epoch
            self.owner = True
        return alone

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        flock(self._lock_fd, LOCK_EX)
        try:
            yield
        finally:
            flock(self._lock_fd, LOCK_UN)

    def joined(self) -> bool:
        """Owner: another tier has opened the directory since this one became owner."""
        state = self._state
        return state is not None and state[8:16] == self._epoch

    def watching(self) -> bool:
        """Not the owner: an owner may still be appending (it has not acknowledged a
        join), so the log must be applied before the index is read."""
        if self._forked:
            return True
        state = self._state
        return state is not None and state[0:8] != state[16:24]

    def acknowledge(self) -> None:
        """Owner: everything this tier appended is in the index and it appends no more."""
        if self._state is not None and self.owner and not self._forked:
            with self._locked():
                if self._state[0:8] == self._epoch:
                    self._state[16:24] = self._epoch

    # -- the file ---------------------------------------------------------------------------

    def file_id(self) -> bytes | None:
        """The id in the log file's header, or None when there is no log file."""
        if self._fd < 0:
            if not self.path.exists():
                return None
            self._fd = self._open_log()
        header = os.pread(self._fd, HEADER_SIZE, 0)
        if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
            return None
        return header[len(MAGIC) :]

    def size(self) -> int:
        return os.fstat(self._fd).st_size if self._fd >= 0 else 0

    def read_from(self, offset: int, upto: int) -> list[LogRecord]:
        """The whole records between ``offset`` and ``upto``."""
        if upto <= offset:
            return []
        return decode_records(os.pread(self._fd, upto - offset, offset), offset)[0]

    def start_new(self) -> bytes:
        """Owner: write a new, empty log file beside the current one (``putlog.new``) and
        return its id; ``replace_with_new`` makes it the log once the index names it."""
        new_id = os.urandom(8)
        self._new_fd = os.open(
            self._root / "putlog.new",
            os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
            0o644,
        )
        try:
            os.write(self._new_fd, MAGIC + new_id)
            if self._fsync:
                os.fsync(self._new_fd)
        except BaseException:
            self.drop_new()
            raise
        return new_id

    def drop_new(self) -> None:
        """The new file will not be used (the index did not take its name)."""
        if self._new_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._new_fd)
            self._new_fd = -1
        with contextlib.suppress(OSError):
            (self._root / "putlog.new").unlink()

    def replace_with_new(self) -> None:
        """Make the new file the log (the descriptor follows it through the rename)."""
        os.replace(self._root / "putlog.new", self.path)
        if self._fsync:  # the rename must survive power loss too, or the old file returns
            dir_fd = os.open(self._root, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        old, self._fd, self._new_fd = self._fd, self._new_fd, -1
        if old >= 0:
            os.close(old)
        self.end = HEADER_SIZE

    def append(self, record: bytes) -> int:
        """Owner: add ``record`` at the end; returns the offset past it. A write that
        fails part-way is cut off again, so no later record follows a torn one."""
        start = self.end
        try:
            written = os.write(self._fd, record)
            while written < len(record):  # only a full disk or a signal cuts a write short
                written += os.write(self._fd, record[written:])
            if self._fsync:
                os.fdatasync(self._fd)
        except BaseException:
            # Cut off again, so no later record follows a torn one; the caller appends no
            # more either way (see LocalTier._log_write).
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise
        self.end = start + len(record)
        return self.end

    @contextlib.contextmanager
    def rotating(self) -> Iterator[bool]:
        """Owner: hold ``putlog.lock`` while the log is replaced; yields False (replace
        nothing) if another tier joined meanwhile, as it may be reading this file."""
        with self._locked():
            yield self.owner and not self._forked and not self.joined()

    # -- lifetime -----------------------------------------------------------------------------

    def forked(self) -> None:
        """In a child after fork(): the parent may still append, and the child must not.
        The child joins (so the parent stops appending at its next put or get) and reads
        the log through a descriptor of its own."""
        if self.owner and self._state is not None:
            with contextlib.suppress(ValueError):
                self._state[8:16] = self._epoch
        self.owner = False
        self._forked = True
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # the parent's descriptor stays open in the parent
            self._fd = -1
        with contextlib.suppress(OSError):
            self._fd = self._open_log()

    def close(self, *, ack: bool) -> None:
        if ack:
            with contextlib.suppress(OSError):
                self.acknowledge()
        if self._state is not None:
            with contextlib.suppress(ValueError, BufferError):
                self._state.close()
            self._state = None
        if self._new_fd >= 0:
            self.drop_new()
        for name in ("_fd", "_present_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:  # in a child after fork() too: the parent's descriptors stay open
                with contextlib.suppress(OSError):
                    os.close(fd)
            setattr(self, name, -1)
        self.owner = False
