"""The replicator of one database: ships committed transactions, checkpoints, snapshots.

How a transaction is found and why none is missed (docs/design/sqlite.md has the whole
argument): the replicator reads the WAL file from where it left off to the last commit
frame with a valid checksum chain (:mod:`._wal`), and keeps a read transaction open on
a connection of its own (``R``) so SQLite cannot restart the WAL under it. It ends and
re-begins that transaction only while it holds the write lock on a second connection
(``W``, ``BEGIN IMMEDIATE``) and after reading every frame up to the end, so no frame it
has not read can be overwritten; that is also the only moment it checkpoints, and only
once everything read before has been uploaded.

Stops: the Hold's shutdown flush calls :meth:`Replica.scan` on its flushing thread. It
takes ``W`` (no commit can follow), ships everything, gives the lease up and keeps ``W``
until the stop is over, so a process that dies by the default action after the flush
has shipped every transaction it committed. ``close()`` calls :meth:`Replica.stop`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _fork, _shutdown
from .._fork import on_fork
from .._threads import start_thread
from ..errors import AlreadyExists, CargoholdError, ConfigError, ConflictError, InvalidInput
from ..paths import probe_locking
from ..platform import detect, mount_for, read_mounts, volume_of
from ._fence import WriterLease
from ._records import encode, generations, record_key
from ._restore import plan, restore
from ._retention import prune
from ._wal import Position, read_committed, read_header

if TYPE_CHECKING:
    from ..config import Settings
    from ..hold import Hold

__all__ = ["Replica", "SqliteStatus"]

log = logging.getLogger("cargohold.sqlite")

#: About the most WAL bytes one segment carries (always whole transactions).
SEGMENT_BYTES = 8 * 1024 * 1024
#: Frames read from one WAL after which the replicator checkpoints it (SQLite's own
#: automatic checkpoint is at 1000 pages).
CHECKPOINT_FRAMES = 1000
#: Copied but not uploaded bytes past which the replicator leaves frames in the WAL
#: (which it keeps from being overwritten) rather than in memory, while the remote is down.
PENDING_MAX = 64 * 1024 * 1024
#: WAL bytes shipped since the last snapshot, past the database's size, that make a new one.
SNAPSHOT_MIN = 16 * 1024 * 1024
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True, slots=True)
class SqliteStatus:
    """A snapshot of one replicated database (see :meth:`Hold.sqlite_status`).

    ``pending_transactions`` are committed here and not on the remote yet, and
    ``lag_seconds`` is how long the oldest of them has waited since the replicator first
    saw it (0 when there is none): what losing this disk right now would lose.
    ``loss_window_seconds`` is what the shipping interval and the request budget
    (``sqlite_uploads_per_minute``) let that lag grow to while the remote answers: a
    transaction waits at most this long for its upload to begin, however busy the app."""

    name: str
    path: Path
    writer: bool
    generation: int
    shipped_segments: int
    pending_transactions: int
    lag_seconds: float
    loss_window_seconds: float
    last_shipped: datetime | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A record read but not yet uploaded: a segment (``commits`` > 0) or a snapshot."""

    key: str
    data: bytes
    commits: int
    wal_bytes: int
    seen: float


class Replica:
    """Replicates the database at ``path`` as ``name``; made by ``hold.sqlite()``."""

    def __init__(self, hold: Hold, name: str, path: Path, *, interval: float, wait: float) -> None:
        self.hold = hold
        self.remote = hold.remote
        self.name = name
        self.path = path
        self.wal = Path(f"{path}-wal")
        self.sidecar = Path(f"{path}-cargohold")
        self.interval = interval
        self.wait = wait
        settings = hold.settings
        self.retention = settings.sqlite_retention
        self.snapshot_segments = settings.sqlite_snapshot_segments
        #: Seconds of request budget one upload spends (sqlite_uploads_per_minute).
        self.upload_cost = 60.0 / _uploads_per_minute(hold.remote.url, settings)
        self.lease = WriterLease(hold.remote, name, ttl=hold.settings.lease_ttl)
        self.db_id = ""
        self.token = 0
        self.shipped_segments = 0
        self.last_shipped: float | None = None
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None  # R: holds a read transaction
        self._writer: sqlite3.Connection | None = None  # W: takes the write lock
        self._pos: Position | None = None
        self._expect_restart = True
        self._checkpointed_at = 0
        self._pending: list[_Pending] = []
        self._seq = 0
        self._since_snapshot = 0
        self._segments_since_snapshot = 0
        self._prune_due = False  # a snapshot was uploaded: older records may go
        self._next_round = 0.0  # monotonic time the budget lets the loop upload again
        self._held_for_stop: int | None = None  # the stop for which W is held
        self._gave_up_for_stop = False
        self._gap = False  # the WAL was restarted under us: a fresh snapshot is due
        self._deposed = False
        self._closed = False
        self._inert = False  # a forked child: the parent replicates
        on_fork(self._after_fork)

    # -- start ------------------------------------------------------------------------

    def start(self) -> None:
        """Refuse a file system whose locks do not hold (ConfigError naming the fix; a
        remote without conditional writes was refused by ``sqlite()``), take the lease, restore or check the local file, switch it to WAL mode,
        begin a generation with a snapshot, then replicate on a thread of its own."""
        _check_is_database(self.path)
        _check_locks(self.path)
        self.token = self.lease.acquire(self.wait)
        try:
            parent = self._prepare()
            self._open()
            self._begin_generation(parent)
        except BaseException:
            self._close_connections()
            self.lease.release()
            raise
        self._thread = start_thread(self._run, name=f"cargohold-sqlite-{self.name}")

    def _prepare(self) -> list[int] | None:
        """Make the local file the remote's latest state, or check it continues it.
        Returns the parent (generation, segments taken) of the generation to begin."""
        found = {t: g for t, g in generations(self.remote, self.name).items() if g.snapshots}
        latest = max(found, default=None)
        local = _read_json(self.sidecar)
        if latest is None:
            self.db_id = str(local.get("db_id") or uuid.uuid4().hex)
            return None
        remote_id = plan(self.remote, self.name).db_id
        if self.path.exists():
            if local.get("db_id") != remote_id:
                raise ConflictError(
                    f"the remote {self.remote.url} already holds a different database called "
                    f"{self.name!r} than {self.path}",
                    key=self.name,
                    hint=f"remove {self.path} to restore the remote's copy, or replicate this "
                    "one under another name",
                )
            if int(local.get("token", 0)) >= latest:
                self.db_id = remote_id
                gen = found[latest]
                taken = max([s + 1 for s in gen.segments] + list(gen.snapshots))
                return [latest, taken]
            self._move_aside(latest)
        report = restore(self.remote, self.name, self.path)
        self.db_id = report.db_id
        return [report.generation, report.segments]

    def _move_aside(self, latest: int) -> None:
        """The local file is from an older generation: another instance wrote after it.
        The remote's history wins; the local file is kept beside it, renamed."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.superseded-{stamp}")
        log.warning(
            "cargohold: %s is from an older generation of SQLite %r than the remote's "
            "(%d): moved to %s, restoring the remote's",
            self.path,
            self.name,
            latest,
            aside,
        )
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reader = _connect(self.path)
        try:
            mode = str(self._reader.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            raise ConfigError(
                f"{self.path} could not be switched to WAL mode: {exc}",
                hint="call hold.sqlite() before the app opens the database, or switch it "
                "yourself with PRAGMA journal_mode=WAL while nothing else has it open",
            ) from exc
        if mode.lower() != "wal":
            raise ConfigError(
                f"{self.path} stays in journal mode {mode!r}, not WAL, which replication needs",
                hint="a database in memory or on a file system without shared memory cannot "
                "use WAL: keep it on the data directory's disk",
            )
        self._writer = _connect(self.path)

    def _begin_generation(self, parent: list[int] | None) -> None:
        """The first snapshot of this writer's generation, uploaded before start returns."""
        self._seq = 0
        self._take_snapshot(parent=parent, fresh=True)
        self._upload()
        _write_json(self.sidecar, {"db_id": self.db_id, "token": self.token, "name": self.name})
        log.info(
            "cargohold: replicating SQLite %s as %r to %s (generation %d)",
            self.path,
            self.name,
            self.remote.url,
            self.token,
        )

    # -- the loop ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            # The request budget: after a round that uploaded n records, the next waits
            # n * upload_cost seconds, so a busy app's transactions gather into fewer,
            # larger segments. Flushes and stops do not wait (see loss_window).
            self._wake.wait(max(self.interval, self._next_round - time.monotonic()))
            self._wake.clear()
            if self._stopping.is_set():
                return
            with contextlib.suppress(CargoholdError, sqlite3.Error, OSError):
                self.sync()  # logged and kept in last_error: the next round tries again

    def sync(self) -> None:
        """Ship every transaction committed so far (raises what stopped it)."""
        with self._lock:
            if self._inert or self._closed:
                return
            self._end_stop_hold()
            if self.lease.lost and not self._deposed:
                self._depose("another instance took the lease over")
            if self._deposed:
                return
            try:
                self._read_wal()
                self._upload()
                if self._gap and not self._pending:
                    self._take_snapshot(parent=None, fresh=True)
                    self._upload()
                if self._held_for_stop is None and not self._pending:
                    self._maybe_checkpoint()
                    self._maybe_snapshot()
                    self._upload()
                if self._prune_due and self._held_for_stop is None and not self._pending:
                    self._prune()
            except (CargoholdError, sqlite3.Error, OSError) as exc:
                if self.last_error != str(exc):
                    log.warning("cargohold: replicating SQLite %r: %s", self.name, exc)
                self.last_error = str(exc)
                raise
            self.last_error = None

    def _read_wal(self) -> bool:
        """Move the WAL's new whole transactions into pending segments. True when it
        read to the end (not held back by PENDING_MAX)."""
        header = read_header(self.wal)
        if header is None:
            return True
        pos = self._pos
        if pos is None or (pos.salt1, pos.salt2) != (header.salt1, header.salt2):
            if pos is not None and not self._expect_restart:
                # Not after our own checkpoint: frames may have been overwritten unread.
                # A fresh snapshot (sync takes it) covers whatever they held, and no
                # frame of the new log is shipped before it.
                log.warning(
                    "cargohold: the WAL of %s was restarted outside the replicator's "
                    "checkpoint: taking a snapshot to cover it",
                    self.path,
                )
                self._gap = True
                return True
            pos, self._expect_restart, self._checkpointed_at = header, False, 0
        while sum(len(p.data) for p in self._pending) < PENDING_MAX:
            chunk = read_committed(self.wal, pos, max_bytes=SEGMENT_BYTES)
            if chunk is None:
                self._pos = pos
                return True
            header_fields: dict[str, Any] = {
                "kind": "wal",
                "token": self.token,
                "seq": self._seq,
                "db_id": self.db_id,
                "page_size": pos.page_size,
                "start": list(astuple(chunk.start)),
                "end": list(astuple(chunk.end)),
                "commits": chunk.commits,
                "db_pages": chunk.db_pages,
                "time": time.time(),
            }
            key = record_key(self.name, self.token, "wal", self._seq)
            self._pending.append(
                _Pending(
                    key,
                    encode(header_fields, chunk.frames),
                    chunk.commits,
                    len(chunk.frames),
                    time.monotonic(),
                )
            )
            self._seq += 1
            self._segments_since_snapshot += 1
            pos = self._pos = chunk.end
        return False

    def _upload(self) -> None:
        """Upload pending records in order, each create-only: a record is never replaced."""
        while self._pending:
            if self.lease.lost:
                self._depose("another instance took the lease over")
                return
            record = self._pending[0]
            try:
                self.remote.put(record.key, record.data, mode="create")
            except AlreadyExists:
                # Ours from an attempt whose answer was lost, or another writer's: a
                # history that would fork. Only identical bytes count as ours.
                if self.remote.get(record.key) != record.data:
                    self._depose(f"{record.key} was written by another writer")
                    return
            self._pending.pop(0)
            self._next_round = max(self._next_round, time.monotonic()) + self.upload_cost
            self._since_snapshot += record.wal_bytes
            if record.commits:
                self.shipped_segments += 1
            else:
                self._prune_due = True
            self.last_shipped = time.time()

    def _prune(self) -> None:
        """Retention, after a snapshot was uploaded. A failure (a remote that refuses
        deletes, an outage) is logged, never raised: it must not fail a flush of
        transactions that did ship. The next snapshot tries again."""
        self._prune_due = False
        try:
            prune(self.remote, self.name, retention=self.retention, now=datetime.now(UTC))
        except CargoholdError as exc:
            log.warning(
                "cargohold: could not delete SQLite %r's records older than its retention "
                "(CARGOHOLD_SQLITE_RETENTION): %s",
                self.name,
                exc,
            )

    def _maybe_checkpoint(self) -> None:
        """Our own checkpoint once enough frames were shipped: under W, after reading the
        tail, with R re-begun (see the module docstring). Skipped while the app writes."""
        pos = self._pos
        if pos is None or pos.frames - self._checkpointed_at < CHECKPOINT_FRAMES:
            return
        try:
            with self._write_lock(0.2):
                if not self._read_wal():
                    return
                reader = self._conn(self._reader)
                reader.execute("ROLLBACK")
                try:
                    reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    _begin_read(reader)  # W is still held: nothing was committed meanwhile
                self._expect_restart = True
                self._checkpointed_at = self._pos.frames if self._pos else 0
        except sqlite3.OperationalError as exc:
            log.debug("cargohold: checkpoint of %s skipped: %s", self.path, exc)

    def _maybe_snapshot(self) -> None:
        """A new snapshot after sqlite_snapshot_segments segments, or once the WAL shipped
        since the last outgrows the database: a restore applies a bounded number of
        segments, and retention can let the older records go."""
        size = self.path.stat().st_size
        if self._segments_since_snapshot >= self.snapshot_segments or self._since_snapshot > max(
            size, SNAPSHOT_MIN
        ):
            self._take_snapshot(parent=None, fresh=False)

    def _take_snapshot(self, *, parent: list[int] | None, fresh: bool) -> None:
        """A snapshot as of the WAL's end (read under W), through the backup API from R's
        read transaction: consistent, and never a copy of the file. ``fresh``: the
        snapshot starts the record (a generation's first, or one after a gap), so what
        the WAL holds is in it and becomes no segment; otherwise the WAL's tail becomes
        segments before it, and none is held back (else the snapshot is skipped)."""
        reader = self._conn(self._reader)
        with self._write_lock(max(1.0, self.hold.settings.request_timeout)):
            if not fresh and not self._read_wal():
                return
            if fresh or self._gap:
                self._pos, self._gap = _wal_end(self.wal), False
            with contextlib.suppress(sqlite3.OperationalError):
                reader.execute("ROLLBACK")  # not in a transaction at the first snapshot
            _begin_read(reader)
            self._expect_restart = True
        tmp = self.path.with_name(f".{self.path.name}.cargohold-snap-{uuid.uuid4().hex[:12]}")
        try:
            target = sqlite3.connect(tmp)
            try:
                reader.backup(target)
            finally:
                target.close()
            payload = tmp.read_bytes()
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
        header_fields: dict[str, Any] = {
            "kind": "snapshot",
            "token": self.token,
            "seq": self._seq,
            "db_id": self.db_id,
            "page_size": page_size,
            "db_pages": len(payload) // page_size,
            "time": time.time(),
            "parent": parent,
        }
        key = record_key(self.name, self.token, "snap", self._seq)
        self._pending.append(_Pending(key, encode(header_fields, payload), 0, 0, time.monotonic()))
        self._since_snapshot = self._segments_since_snapshot = 0

    # -- status -----------------------------------------------------------------------

    def status(self) -> SqliteStatus:
        """Reads the WAL for what was committed since the last round (nothing is sent)."""
        with self._lock:
            if not (self._inert or self._closed or self._deposed):
                with contextlib.suppress(OSError):
                    self._read_wal()
            waiting = [p for p in self._pending if p.commits]
            lag = time.monotonic() - waiting[0].seen if waiting else 0.0
            return SqliteStatus(
                name=self.name,
                path=self.path,
                writer=not (self._inert or self._closed or self._deposed),
                generation=self.token,
                shipped_segments=self.shipped_segments,
                pending_transactions=sum(p.commits for p in waiting),
                lag_seconds=lag,
                loss_window_seconds=max(self.interval, self.upload_cost),
                last_shipped=None
                if self.last_shipped is None
                else datetime.fromtimestamp(self.last_shipped, UTC),
                last_error=self.last_error,
            )

    # -- stops ------------------------------------------------------------------------

    def scan(self) -> None:
        """Part of every flush of the Hold: ship what is committed. On the shutdown flush
        of a stop signal, first take the write lock and keep it until the stop is over
        (see the module docstring), then give the lease up."""
        if not (_shutdown.in_flusher() and _shutdown.shutting_down() is not None):
            self.sync()
            return
        with self._lock:
            if self._inert or self._closed or self._deposed:
                return
            if self._held_for_stop is None:
                budget = _shutdown.remaining(self.hold.shutdown_grace)
                try:
                    self._lock_writes(max(0.05, budget / 2))
                    self._held_for_stop = _shutdown.current_stop()
                except sqlite3.OperationalError as exc:
                    log.warning(
                        "cargohold: could not stop writes to %s for the shutdown: %s",
                        self.path,
                        exc,
                    )
            try:
                self.sync()
            except (CargoholdError, sqlite3.Error, OSError):
                return  # logged by sync; the lease is kept (the records are not all out)
            if not self._pending and self._held_for_stop is not None:
                self.lease.release()
                self._gave_up_for_stop = True
                log.info("cargohold: SQLite %r shipped for the shutdown", self.name)
        self._wake.set()  # the loop lets W go once the stop is over

    def _end_stop_hold(self) -> None:
        """Once a stop this process outlived is over: let the app write again, after
        taking the lease back (or stop replicating if another instance has it)."""
        stop = self._held_for_stop
        if stop is None or stop < 0 or _shutdown.stop_under_way(stop):
            return
        if self._gave_up_for_stop:
            self._gave_up_for_stop = False
            old = self.token
            try:
                self.token = self.lease.acquire(0.0)
            except CargoholdError as exc:
                self._depose(f"the lease was not free after the stop: {exc}")
            else:
                if self.token != old + 1:  # another generation came in between
                    self.lease.release()
                    self._depose("another instance wrote after this one's stop")
                else:  # W is still held: nothing was committed since the last segment
                    self._begin_generation([old, self._seq])
        self._held_for_stop = None
        with contextlib.suppress(sqlite3.Error):
            self._conn(self._writer).execute("ROLLBACK")

    def stop(self, timeout: float) -> None:
        """Ship the rest within ``timeout`` seconds, give the lease up, close (from
        ``Hold.close``)."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._inert or self._closed:
                return
            try:
                if self._held_for_stop is None and not self._deposed:
                    with contextlib.suppress(sqlite3.OperationalError):
                        self._lock_writes(max(0.05, min(2.0, deadline - time.monotonic())))
                        self._held_for_stop = -1
                self._gave_up_for_stop = False
                if not self._deposed:
                    self.sync()
            except (CargoholdError, sqlite3.Error, OSError) as exc:
                log.warning(
                    "cargohold: SQLite %r: %d record(s) not shipped at close: %s",
                    self.name,
                    len(self._pending),
                    exc,
                )
            finally:
                self._closed = True
                self.lease.release()
                self._close_connections()

    def _depose(self, why: str) -> None:
        self._deposed = True
        self._pending.clear()
        log.error(
            "cargohold: stopped replicating SQLite %r: %s. Transactions committed here from "
            "now on are not replicated (the other instance writes its history).",
            self.name,
            why,
        )

    # -- connections ------------------------------------------------------------------

    def _conn(self, con: sqlite3.Connection | None) -> sqlite3.Connection:
        if con is None:
            raise CargoholdError(f"the replicator of {self.path} is closed")
        return con

    def _lock_writes(self, timeout: float) -> None:
        """Take the database's write lock on W and keep it (``BEGIN IMMEDIATE``)."""
        writer = self._conn(self._writer)
        writer.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        writer.execute("BEGIN IMMEDIATE")

    @contextlib.contextmanager
    def _write_lock(self, timeout: float) -> Iterator[None]:
        """Hold the database's write lock for the block: no commit can happen in it."""
        if self._held_for_stop is not None:  # already held
            yield
            return
        self._lock_writes(timeout)
        try:
            yield
        finally:
            self._conn(self._writer).execute("ROLLBACK")

    def _close_connections(self) -> None:
        for con in (self._writer, self._reader):
            if con is not None:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
        self._writer = self._reader = None

    def _after_fork(self) -> None:
        """In a forked child: the parent replicates. Its connections are abandoned here,
        never closed (see :mod:`cargohold._fork`)."""
        _fork.abandon(self._reader, self._writer)
        self._reader = self._writer = None
        self._lock = threading.RLock()
        self._pending = []
        self._thread = None
        self._inert = True


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit (isolation_level=None): the transactions here are the explicit ones.
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)


def _wal_end(wal: Path) -> Position | None:
    """The position after the WAL's last valid commit frame (None: no valid log)."""
    pos = read_header(wal)
    while pos is not None and (chunk := read_committed(wal, pos, max_bytes=SEGMENT_BYTES)):
        pos = chunk.end
    return pos


def _begin_read(con: sqlite3.Connection) -> None:
    """Begin a read transaction (a read of the schema takes the snapshot)."""
    con.execute("BEGIN")
    con.execute("SELECT count(*) FROM sqlite_master").fetchall()


def _check_is_database(path: Path) -> None:
    """A file that is there must be an SQLite database (an empty one will become one)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        head = b"dir"
    if head and head != _SQLITE_MAGIC:
        raise InvalidInput(
            f"{path} is not an SQLite database",
            hint="pass the path of an SQLite database file (or one that does not exist yet)",
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def _write_json(path: Path, content: dict[str, Any]) -> None:
    """Atomically (temp file + rename): a crash leaves the old record or the new one."""
    tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex[:12]}")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, path)


def _uploads_per_minute(url: str, settings: Settings) -> float:
    """The replicator's budget: ``sqlite_uploads_per_minute``, and on a dataset repo
    (``hf://datasets/``, where each upload is a commit) at most half the commit budget
    (``hf_commits_per_hour``), leaving the rest to the Hold's own writes: past it the
    Hub refuses commits, and the loss window reported would be a promise not kept."""
    per_minute = settings.sqlite_uploads_per_minute
    if url.startswith("hf://datasets/"):
        per_minute = min(per_minute, settings.hf_commits_per_hour / 60 / 2)
    return per_minute


def _check_locks(path: Path, mounts: str = "/proc/mounts") -> None:
    """ConfigError unless SQLite's file locks hold where ``path`` lives: on a network or
    FUSE mount (decided from the mount table) or where the lock probe of
    :func:`cargohold.paths.probe_locking` fails, the app and the replicator could both
    write at once and corrupt the database."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    mount = mount_for(folder, read_mounts(mounts))
    volume = None if mount is None else volume_of(mount, detect(mounts=mounts).name)
    if volume is not None and not volume.lockable:
        problem: str | None = f"it is on {volume.why}"
    else:
        found = probe_locking(folder)
        problem = None if found is None else f"a probe found that {found}"
    if problem is not None:
        raise ConfigError(
            f"{path} cannot hold a replicated SQLite database: file locks do not hold "
            f"there ({problem})",
            hint="keep the database on the container's own disk (the default, under the "
            "data directory: call hold.sqlite(name) without path=), and let cargohold keep "
            "it on the remote",
            key=str(path),
        )
