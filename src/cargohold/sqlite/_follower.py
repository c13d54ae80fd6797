"""A read-only follower: restore a replicated database, then follow what its writer ships.

The follower never writes to the remote and takes no lease. It keeps a private working
copy (``<path>-cargohold-follow``) that it restores, then extends with each new segment of
the newest generation, verified as a restore verifies them (digest, checksum chain,
continuity); a new generation, or segments retention deleted before it read them, means a
fresh restore. After each change it **publishes** the working copy: a copy beside
``path``, switched to rollback-journal mode (so readers make no ``-wal`` or ``-shm`` file
that could outlive the file they belong to), renamed over ``path``. A reader's open
connection keeps the file it opened, whole and consistent; a new connection sees the new
state. Open it read-only (``sqlite3.connect(f"file:{path}?mode=ro", uri=True)``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

from .._fork import on_fork
from .._threads import start_thread
from ..errors import CargoholdError
from ..remotes import Remote
from ._records import decode, generations
from ._restore import _check_database, _check_segment, restore
from ._wal import Position, apply_frames

__all__ = ["Follower"]

log = logging.getLogger("cargohold.sqlite")

#: Byte offsets of the file format's write and read versions: 1 is rollback, 2 is WAL.
_VERSION_BYTES = 18


class Follower:
    """Follows ``name`` on ``remote`` into ``path``; made by ``hold.sqlite(follow=True)``."""

    def __init__(self, remote: Remote, name: str, path: Path, *, interval: float) -> None:
        self.remote = remote
        self.name = name
        self.path = path
        self.work = Path(f"{path}-cargohold-follow")
        self.interval = interval
        self.generation = 0
        self.segments = 0  # the next segment of the generation to apply
        self.last_error: str | None = None
        self._position: Position | None = None
        self._page_size = 0
        self._pages = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        on_fork(self._after_fork)

    def start(self) -> None:
        """Restore and publish the latest state (NotFoundError if the remote has none),
        then follow on a thread of its own."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._restore()
        self._thread = start_thread(self._run, name=f"cargohold-sqlite-follow-{self.name}")

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            with contextlib.suppress(CargoholdError, OSError):
                self.scan()  # logged and kept in last_error: the next round tries again

    def scan(self) -> None:
        """Catch up with what the remote holds now (part of every flush of the Hold)."""
        with self._lock:
            if self._stopping.is_set():
                return
            try:
                self._follow()
            except (CargoholdError, OSError) as exc:
                if self.last_error != str(exc):
                    log.warning("cargohold: following SQLite %r: %s", self.name, exc)
                self.last_error = str(exc)
                raise
            self.last_error = None

    def stop(self, timeout: float) -> None:
        """Stop following (the published file stays). ``timeout`` bounds the wait for the
        thread's round under way."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _after_fork(self) -> None:
        """In a forked child: the parent follows (its thread is not here, and the lock
        may have been held at the fork)."""
        self._lock = threading.Lock()
        self._thread = None
        self._stopping = threading.Event()
        self._stopping.set()

    def _follow(self) -> None:
        found = {t: g for t, g in generations(self.remote, self.name).items() if g.snapshots}
        newest = max(found, default=None)
        if newest is None:
            return  # nothing there (yet): keep what was published
        gen = found[newest]
        # Our next segment is gone while later records are there: retention deleted it.
        pruned = self.segments not in gen.segments and any(
            s > self.segments for s in [*gen.segments, *gen.snapshots]
        )
        if newest != self.generation or pruned:  # or a new writer's generation: start over
            self._restore()
            return
        applied = 0
        while self.segments in gen.segments:
            key = gen.segments[self.segments]
            record, frames = decode(key, self.remote.get(key))
            self._position, _, self._pages = _check_segment(
                key, record, frames, self._position, gen
            )
            apply_frames(self.work, frames, self._page_size)
            self.segments += 1
            applied += 1
        if applied:
            _check_database(self.work, self._pages * self._page_size, self.name)
            self._publish()

    def _restore(self) -> None:
        report = restore(self.remote, self.name, self.work, replace=True)
        self.generation, self.segments = report.generation, report.segments
        self._pages = report.pages
        self._page_size = _page_size(self.work)
        # The chain continues from the last segment restore applied: its end is not in
        # the report, so the next segment is checked against itself (digest and chain
        # within it, its token); a restore verified the ones before.
        self._position = None
        self._publish()

    def _publish(self) -> None:
        """Atomically replace ``path`` with a rollback-mode copy of the working copy."""
        tmp = self.path.with_name(f".{self.path.name}.cargohold-{uuid.uuid4().hex[:12]}")
        try:
            shutil.copyfile(self.work, tmp)
            with tmp.open("r+b") as fh:
                fh.seek(_VERSION_BYTES)
                fh.write(b"\x01\x01")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _page_size(db: Path) -> int:
    with db.open("rb") as fh:
        fh.seek(16)
        raw = int.from_bytes(fh.read(2), "big")
    return 65536 if raw == 1 else raw
