"""The local tier's SQLite index: its schema, one connection per thread, write transactions,
and the table of rows read lately that survives this process's own commits.

One thing owned here: every statement that commits goes through :meth:`Index.writing`,
:meth:`Index.write_one` or :meth:`Index.transaction`, which hold this process's write lock, so writers queue on a
Python lock instead of in SQLite's busy handler (which sleeps a millisecond or more each
time it finds the database locked) and the hot-row table learns what this process changed.
Reads take no Python lock at all; only the fork gate (below), which holds a thread back
only while a fork waits for the others to be out of SQLite.

Fork: SQLite forbids using a connection in a child process after ``fork()``. A child gets
fresh connections and fresh locks (``after_fork_in_child``); the inherited connections are
abandoned: never used, never closed, never finalized (closing one could checkpoint or
remove the WAL under the parent, and finalizing closes it), so a reference to each is kept
for the child's lifetime. Before a fork, two waits, both by the forking thread:

- for another thread's transaction to end (``Index.before_fork``, up to ``_FORK_WAIT``),
  so that at the fork no connection of this process holds SQLite's WAL write lock: SQLite
  keeps who holds it in process memory, and the child's connections would find it held by
  a sibling for good ("database is locked"; tests/hold/test_fork_local.py shows it);
- for every other thread to be out of SQLite (the fork gate, :class:`_Gate`). SQLite takes
  process-global mutexes inside its calls (the unix VFS's big lock around file locks at
  every read transaction, the shared-memory node's mutex): a thread inside a call at the
  instant of the fork would leave one held in the child, whose first SQLite call then waits
  forever (issue 14: a Pool worker hung so). So every SQLite call of the local tier runs
  inside a section of the gate (``one``, ``all``, ``reading``, ``writing``,
  ``write_one``, ``transaction``; ``conn()`` only inside one of them), the fork closes the
  gate to new entries and waits until no other thread is inside, and the gate opens again
  after the fork (a fresh one in the child).

Why this cannot hang: the gate is the only thing a section waits for on the way in, and
nothing inside a section waits for a lock the forking thread holds: a writer takes the
write lock *before* entering, the fork takes every write lock before it closes the gate,
and fork hooks registered before this module's (logging's lock among them) run after the
gate's wait. So every thread inside gets out by finishing its SQLite call, and the child
(the forking thread alone) cannot inherit an SQLite mutex held by another. The forking
thread never waits for itself (a fork from inside a section, a signal handler that reads
while it waits), nor does a thread already inside wait to enter again (nested sections, a
signal handler on a thread inside). If a call outlasts ``_FORK_WAIT`` (a huge scan, a busy
wait on another process's write lock) the fork goes ahead with a warning rather than wait
on: then, as before the gate, the child may inherit a mutex held.

Two threads forking at once take the write lock (and then the gate's door) in turn: the
second waits for the first's fork to be done, up to ``_FORK_WAIT``. The lock is released
after a fork only by the thread whose ``before_fork`` took it (``Index._fork_holder``),
so a fork that gave up waiting neither releases a lock it does not hold nor makes the
other fork keep it held for good.

Close: each connection belongs to one thread, and only that thread may close it while it
lives. ``close()`` closes its own thread's connection and those of threads that have
ended; another thread may be inside an SQLite call on its connection that very moment (a
scan, a commit), and closing a connection under a call in progress crashes the process.
A live thread closes its own at its next ``conn()``, which then raises HoldClosed, or when
it ends (its ``_Owner`` is dropped with the thread). Until then that connection may keep
the ``-wal`` file.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._fork import at_fork
from ._hot_rows import HotRows
from .errors import CargoholdError, HoldClosed, PermissionDenied, StorageFull

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Index", "sqlite_error"]

log = logging.getLogger("cargohold.local")

_Params = Sequence[Any] | Mapping[str, Any]

SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 60_000
#: Seconds a fork waits for another thread's transaction to end (see ``before_fork``), and
#: then for the other threads to be out of SQLite (see ``_Gate``).
_FORK_WAIT = 2.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,      -- bumped by every local change of the row
    size INTEGER NOT NULL,
    inline BLOB,                   -- the bytes, for objects up to INLINE_MAX
    file TEXT,                     -- otherwise the blob file, relative to blobs/
    metadata TEXT,                 -- JSON object, NULL when empty
    content_type TEXT NOT NULL,
    etag TEXT,                     -- the remote's etag of these bytes; NULL until synced
                                   -- (a tombstone: of the clean copy it replaced)
    modified REAL NOT NULL,        -- when these bytes were written here
    validated REAL,                -- when the remote last confirmed etag
    accessed REAL NOT NULL,
    dirty_since REAL,              -- oldest local change not yet on the remote; NULL if none
    deleted INTEGER NOT NULL DEFAULT 0   -- 1: a deletion waiting to reach the remote
);
CREATE INDEX IF NOT EXISTS objects_pending ON objects(dirty_since) WHERE dirty_since IS NOT NULL;
CREATE INDEX IF NOT EXISTS objects_lru ON objects(accessed) WHERE dirty_since IS NULL;
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    local_bytes INTEGER NOT NULL,
    pending_bytes INTEGER NOT NULL,
    pending_count INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0, 0);
CREATE TABLE IF NOT EXISTS garbage (file TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
-- keys synced while the shared catalog was unreachable: recorded there once it is back
CREATE TABLE IF NOT EXISTS catalog_backlog (key TEXT PRIMARY KEY);
-- changes the remote refused for good, set aside until rewritten, retried or dropped;
-- a row counts only while the object's row is still pending at that version
CREATE TABLE IF NOT EXISTS refused (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,            -- the error's class in cargohold.errors
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
-- keys whose pending change a caller waits for (a durable put, a write during a stop):
-- the syncer of whichever process syncs sends them before older changes
CREATE TABLE IF NOT EXISTS urgent (key TEXT PRIMARY KEY);
-- left by the put log (2026-12-03 to 2026-12-04), which needed every version ever given
DROP TRIGGER IF EXISTS objects_version_insert;
DROP TRIGGER IF EXISTS objects_version_update;
DROP TABLE IF EXISTS version_high;
CREATE TRIGGER IF NOT EXISTS objects_insert AFTER INSERT ON objects BEGIN
    UPDATE totals SET
        local_bytes = local_bytes + NEW.size,
        pending_bytes = pending_bytes + IIF(NEW.dirty_since IS NULL, 0, NEW.size),
        pending_count = pending_count + (NEW.dirty_since IS NOT NULL);
END;
CREATE TRIGGER IF NOT EXISTS objects_update AFTER UPDATE ON objects BEGIN
    UPDATE totals SET
        local_bytes = local_bytes + NEW.size - OLD.size,
        pending_bytes = pending_bytes + IIF(NEW.dirty_since IS NULL, 0, NEW.size)
                                      - IIF(OLD.dirty_since IS NULL, 0, OLD.size),
        pending_count = pending_count + (NEW.dirty_since IS NOT NULL)
                                      - (OLD.dirty_since IS NOT NULL);
    INSERT INTO garbage(file) SELECT OLD.file WHERE OLD.file IS NOT NULL AND OLD.file IS NOT NEW.file;
END;
CREATE TRIGGER IF NOT EXISTS objects_delete AFTER DELETE ON objects BEGIN
    UPDATE totals SET
        local_bytes = local_bytes - OLD.size,
        pending_bytes = pending_bytes - IIF(OLD.dirty_since IS NULL, 0, OLD.size),
        pending_count = pending_count - (OLD.dirty_since IS NOT NULL);
    INSERT INTO garbage(file) SELECT OLD.file WHERE OLD.file IS NOT NULL;
END;
"""

# A change every carried transaction makes (see Index.writing): an UPDATE that writes the
# values a row already has counts as a change but commits nothing.
_BUMP = (
    "INSERT INTO info VALUES ('commits', '1') "
    "ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
)

#: Connections inherited across fork() and abandoned: kept alive for good (see the module
#: docstring). A list alone is not enough: at interpreter exit module globals are cleared
#: and the connections would be deallocated, which closes them; an extra reference taken
#: through the C API is never given back, so they never are.
_ABANDONED: list[sqlite3.Connection] = []


def _abandon(connections: list[sqlite3.Connection]) -> None:
    for conn in connections:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))
        _ABANDONED.append(conn)


class _Gate:
    """Counts the threads inside an SQLite call, so that a fork happens only when no other
    thread is (see the module docstring). One for the process: SQLite's mutexes are global,
    whichever index a call is on.

    Entering and leaving take no lock: each thread changes only its own entry of
    ``_inside`` (thread id -> depth), each change one dict operation under the GIL, so a
    signal handler that enters and leaves on a thread it interrupted, even in the middle of
    its enter or leave, leaves the entry as it found it. The fork sets ``_closed`` and then
    reads ``_inside``; an entrant writes ``_inside`` and then reads ``_closed``: so either the
    fork sees the entrant inside and waits for it, or the entrant sees the gate closed, steps
    back out and waits at ``_door``, a lock the fork holds while the gate is closed. Whoever
    leaves last while the gate is closed wakes the fork through a ``SimpleQueue``, whose
    ``put`` never blocks and may interrupt itself (a signal handler can run there)."""

    def __init__(self) -> None:
        self._inside: dict[int, int] = {}
        self._closed = False
        self._door = threading.Lock()
        self._forker: int | None = None  # the thread whose fork holds the door
        self._left = queue.SimpleQueue[None]()

    def enter(self) -> int:
        """Enter a section (pass the result to ``leave``): waits while a fork is waiting
        for threads to leave, unless this thread is inside already or is the one forking."""
        ident = _get_ident()
        inside = self._inside
        while True:
            depth = inside.get(ident, 0)
            inside[ident] = depth + 1
            if not self._closed or depth or ident == self._forker:
                return ident
            self.leave(ident)
            with self._door:  # held by the fork until it is done
                pass

    def leave(self, ident: int) -> None:
        inside = self._inside
        depth = inside[ident] - 1
        if depth:
            inside[ident] = depth
            return
        del inside[ident]
        if self._closed:
            self._left.put(None)

    def others_inside(self) -> int:
        """How many threads other than this one are inside a section."""
        me = _get_ident()
        return sum(1 for ident in list(self._inside) if ident != me)

    def before_fork(self) -> None:
        """Close the gate and wait (up to ``_FORK_WAIT``) until no other thread is inside."""
        # Held for an instant by a thread passing through (see enter()), or for a whole
        # fork by another thread forking at the same time: wait for that one to be done.
        if not self._door.acquire(timeout=2 * _FORK_WAIT):
            log.warning("cargohold: fork() while another thread's fork held the gate")
            return
        deadline = time.monotonic() + _FORK_WAIT
        self._left = queue.SimpleQueue()
        self._forker = _get_ident()
        self._closed = True
        while self.others_inside():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "cargohold: fork() while %d other thread(s) have been inside an SQLite call "
                    "for %.0f s: the child may inherit one of SQLite's locks held and wait on it",
                    self.others_inside(),
                    _FORK_WAIT,
                )
                return
            self._wait_for_leavers(remaining)

    def _wait_for_leavers(self, timeout: float) -> None:
        """Until a thread leaves its outermost section (or ``timeout``)."""
        with contextlib.suppress(queue.Empty):
            self._left.get(timeout=timeout)

    def after_fork_in_parent(self) -> None:
        if self._forker == _get_ident():  # else this fork could not close the gate
            self._closed = False
            self._forker = None
            self._door.release()

    def after_fork_in_child(self) -> None:
        """A fresh gate. The forking thread is the only thread left, and may be inside a
        section still (a fork from inside one): its entry is kept, so that it can leave."""
        me = _get_ident()
        self._inside = {me: self._inside[me]} if me in self._inside else {}
        self._closed = False
        self._door = threading.Lock()
        self._forker = None
        self._left = queue.SimpleQueue()


_get_ident = threading.get_ident
#: The process's fork gate (see the module docstring).
_GATE = _Gate()
# Registered once this module is imported, that is before local.py registers its own hooks:
# so this "before" runs after local's (the interpreter runs those in reverse order), once
# every write lock is held, and the gate opens again before they are released.
os.register_at_fork(before=_GATE.before_fork, after_in_parent=_GATE.after_fork_in_parent)
at_fork(_GATE.after_fork_in_child)


class _Owner:
    """A thread's connection as that thread's ``threading.local`` holds it. CPython drops
    it when the thread ends: then the connection is closed if the index is (see
    ``Index.close``), or left for ``close()`` to close."""

    __slots__ = ("conn", "index", "pid")
    _getpid = staticmethod(os.getpid)  # the module's globals may be gone when this runs

    def __init__(self, conn: sqlite3.Connection, index: Index) -> None:
        self.conn = conn
        self.index = weakref.ref(index)
        self.pid = os.getpid()

    def __del__(self) -> None:
        # In a child after fork() CPython drops the parent's other threads (and their
        # locals) before any fork hook runs: their connections are abandoned, never closed.
        if self._getpid() != self.pid:
            return
        index = self.index()
        if index is not None:
            index._thread_ended(self.conn)


class Index:
    """The SQLite index at ``path`` (WAL mode), shared by every thread of this process
    (one connection each) and by other processes."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self._local = threading.local()
        #: Every connection of this process not closed yet, each with whether its thread
        #: has ended. Referenced here, not only by the threads' locals: in a fork child
        #: CPython drops the other threads' locals, and these must be abandoned, not closed.
        self._connections: dict[sqlite3.Connection, bool] = {}
        # _connections and _closed. Re-entrant: close() from a signal handler that
        # interrupted this thread while it added its connection must not wait for itself.
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        #: The thread whose fork took _write_lock in before_fork (None: no fork holds it).
        #: Per thread, not a flag: two threads may fork at once, and only the one whose
        #: before_fork took the lock may release it (see before_fork).
        self._fork_holder: int | None = None
        self._gate = _GATE
        self._closed = False
        try:
            with self._write_lock, self.reading() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _statements(SCHEMA):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT OR IGNORE INTO info VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            # Mapped once a connection has put the index in WAL mode; see _hot_rows.
            self.hot = HotRows(path)
        except BaseException:
            self._close_connections()
            raise

    # -- SQLite calls, each inside a section of the fork gate --------------------------------

    def one(self, sql: str, params: _Params = ()) -> Any:
        """The first row of one read statement, or None. Inside a gate section, statement
        and cursor included (a cursor dropped with rows left resets its statement: an
        SQLite call)."""
        ident = _GATE.enter()
        try:
            return self.conn().execute(sql, params).fetchone()
        finally:
            _GATE.leave(ident)

    def all(self, sql: str, params: _Params = ()) -> list[Any]:
        """Every row of one read statement (read to its end inside a gate section)."""
        ident = _GATE.enter()
        try:
            return self.conn().execute(sql, params).fetchall()
        finally:
            _GATE.leave(ident)

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for several statements that read, inside one gate
        section: every cursor must be read to its end (``fetchall``) or dropped inside the
        block. Never wait for a lock inside it (see the module docstring); writes go
        through ``writing``."""
        ident = _GATE.enter()
        try:
            yield self.conn()
        finally:
            _GATE.leave(ident)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (made at its first use), for use inside a gate section
        only (``reading`` and the others above). Once the index is closed, HoldClosed, and
        this thread's connection is closed (see the module docstring)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        if self._closed:
            if conn is not None:
                self._forget(conn)
                del self._local.conn, self._local.owner
            raise HoldClosed(f"the local tier at {self.path.parent} is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,  # autocommit: one statement, one transaction
                check_same_thread=False,  # each thread has its own; close() closes them all
                timeout=_BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit is a write() into the WAL, safe when the process
            # dies; only a checkpoint fsyncs. FULL fsyncs every commit (power loss too).
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            # Checkpoints (which fsync) run in the syncer's upkeep, not in whichever write
            # happens to cross the threshold: that write would wait milliseconds.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # Reads through a memory map instead of a read() per page (as diskcache does).
            conn.execute("PRAGMA mmap_size=268435456")
            conn.execute("PRAGMA cache_size=-32768")
        except sqlite3.Error as exc:
            raise CargoholdError(f"cannot open the local index {self.path}: {exc}") from exc
        with self._lock:
            self._connections[conn] = False
        self._local.conn = conn
        self._local.owner = _Owner(conn, self)
        if self._closed:  # close() ran meanwhile, and did not see this one
            return self.conn()  # raises
        return conn

    @contextlib.contextmanager
    def writing(self, changed: dict[str, Any] | None = None) -> Iterator[sqlite3.Connection]:
        """This thread's connection, with this process's write lock held around
        statements that commit. ``changed`` names every key whose lookup row they change,
        with the row now (None: dropped or not known), filled in before the block ends:
        then the table of rows read lately keeps its other rows across this commit (see
        ``_hot_rows``); without it, the table is emptied at the next lookup.

        With ``changed``, the block must commit exactly once if it changes any row, and
        that change must be real: SQLite counts an UPDATE that writes the values a row
        already holds as a change but commits nothing, and then a commit by another
        process in the same moment would pass for this one. A single statement that
        always changes a value (a version bumped, a row deleted) qualifies; transactions
        make sure of it with ``_BUMP``.

        The block is one gate section, entered once the write lock is held: never the
        other way round (see the module docstring)."""
        with self._write_lock:
            ident = _GATE.enter()
            try:
                conn = self.conn()
                before = self.hot.snapshot() if changed is not None else None
                writes = conn.total_changes
                yield conn
                if changed is not None and conn.total_changes != writes:
                    self.hot.carry(before, self.hot.snapshot(), changed)
            finally:
                _GATE.leave(ident)

    def write_one(
        self, sql: str, params: Mapping[str, Any], key: str, row_of: Callable[[list[Any]], Any]
    ) -> list[Any]:
        """``writing({key: row_of(rows)})`` around one statement, run to its end (so it
        has committed on return); returns its rows. The same as that block, without a
        generator's cost: a put is this and little else."""
        hot = self.hot
        with self._write_lock:
            ident = _GATE.enter()
            try:
                conn = self.conn()
                before = hot.snapshot()
                writes = conn.total_changes
                rows = conn.execute(sql, params).fetchall()
                if conn.total_changes != writes:
                    hot.carry(before, hot.snapshot(), {key: row_of(rows)})
            finally:
                _GATE.leave(ident)
        return rows

    @contextlib.contextmanager
    def transaction(self, changed: dict[str, Any] | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); ``changed`` as for ``writing``."""
        with self.writing(changed) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                if changed is not None:
                    conn.execute(_BUMP)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- fork -------------------------------------------------------------------------------

    def before_fork(self) -> None:
        """Wait a moment for another thread's transaction to end (see the module
        docstring). Never for long: a thread may hold the lock for reasons of its own,
        among them another thread's fork under way (whose hooks hold it until that fork
        is done). A fork that could not take the lock leaves whoever holds it as holder:
        a shared flag cleared here would make that other fork leave the lock held for
        good, and every later write of this process wait on it."""
        if self._write_lock.acquire(timeout=_FORK_WAIT):
            self._fork_holder = _get_ident()
        else:
            log.warning(
                "cargohold: fork() while another thread has held the local index %s for %.0f s: "
                "if it is inside a transaction, the child's writes there fail as locked",
                self.path,
                _FORK_WAIT,
            )

    def after_fork_in_parent(self) -> None:
        if self._fork_holder == _get_ident():  # else this fork did not take it
            self._fork_holder = None
            self._write_lock.release()

    def after_fork_in_child(self) -> None:
        """Fresh locks and connections; the inherited ones are abandoned (never closed)."""
        self._fork_holder = None
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        inherited, self._connections = list(self._connections), {}
        _abandon(inherited)
        self._local = threading.local()
        self.hot.after_fork_in_child()

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close this thread's connection and those of threads that have ended; every other
        thread's is closed by that thread (see the module docstring). Safe to call twice."""
        if self._closed:
            return
        self.hot.close()  # before the connections: the map is valid while they are open
        self._close_connections()

    def _close_connections(self) -> None:
        mine = getattr(self._local, "conn", None)
        with self._lock:
            self._closed = True  # under the lock: see _thread_ended
            closing = [conn for conn, ended in self._connections.items() if ended or conn is mine]
            for conn in closing:
                del self._connections[conn]
        ident = _GATE.enter()  # closing is an SQLite call too
        try:
            for conn in closing:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        finally:
            _GATE.leave(ident)

    def _thread_ended(self, conn: sqlite3.Connection) -> None:
        """``conn``'s thread has ended: close it now if the index is closed, else mark it
        for close(). Both under the lock, so a close() racing the end of a thread either
        sees the mark or has set _closed before this looks."""
        with self._lock:
            if conn not in self._connections:
                return
            if not self._closed:
                self._connections[conn] = True
                return
        self._forget(conn)

    def _forget(self, conn: sqlite3.Connection) -> None:
        """Close ``conn``, called by its own thread or once that thread has ended."""
        with self._lock:
            self._connections.pop(conn, None)
        gate = self._gate  # not the global: this may run at exit, from _Owner.__del__
        ident = gate.enter()  # closing is an SQLite call too
        try:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        finally:
            gate.leave(ident)


def _statements(script: str) -> list[str]:
    """Split the schema into statements (triggers contain ';' inside BEGIN ... END)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        if not current and line.startswith("--"):
            continue
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and sqlite3.complete_statement(text):
            statements.append(text)
            current = []
    return statements


def sqlite_error(exc: sqlite3.Error, doing: str) -> CargoholdError:
    """An SQLite error as ours: a full disk and a read-only index say what to fix."""
    text = str(exc).lower()
    if "full" in text:
        return StorageFull(
            f"cannot {doing}: the disk is full", hint="free space or use a larger volume"
        )
    if "readonly" in text or "read-only" in text:
        return PermissionDenied(
            f"cannot {doing}: the index is read-only", hint="use a writable data directory"
        )
    return CargoholdError(f"cannot {doing}: {exc}")
