"""Per-request scratch space: ``with hold.scratch(request_id) as work: ...``.

A request (an uploaded audio file, its trimmed mp3) gets a directory of its own under the
temp directory (:func:`cargohold.paths.temp_dir`, so disk rather than RAM when there is a
choice), named ``<UTC time>-<request id>-<random>``, and loses it when the ``with`` ends.

Guarantees:

- **Removed on exit, whatever happens**: a normal exit, an exception, ``KeyboardInterrupt``
  or ``SystemExit``. A workspace whose process died (``SIGKILL``, a crash) is removed by the
  first ``hold.scratch()`` of a later process using the same temp directory, and by
  ``cargohold gc``: each workspace holds a lock (``flock``) on ``<name>.lock`` beside it
  for as long as it lives, and one whose lock can be taken has no owner.
- **A byte quota** (``quota=``, default the ``scratch_quota`` setting). What is enforced,
  exactly: bytes written through :meth:`Scratch.save` and :meth:`Scratch.open` are counted
  as they arrive, and the write that would pass the quota raises :class:`StorageFull`
  (naming the quota and the setting) before its bytes reach the disk; a ``save`` that
  fails leaves no file. What is not: files written into :attr:`Scratch.dir` by other means
  (ffmpeg writing to :meth:`Scratch.path`) cannot be stopped mid-write; they are counted
  (by file size) at the next ``save``, ``open``, ``output`` or ``check`` call, and at exit,
  and going over there raises :class:`StorageFull` too. So other writers can pass the quota
  by as much as they write between two checks.
- **A debug bundle on failure**: when the body raises an ``Exception`` (not
  ``KeyboardInterrupt`` or ``SystemExit``) and the ``debug_bundles`` setting is on, the
  workspace's files (up to :data:`BUNDLE_MAX_BYTES`; the rest are listed), the traceback and
  the request's record are put in the Hold under ``debug/<YYYY-MM-DD>/<request id>/``
  (write-through, so the remote has them when the exception reaches the caller, unless the
  remote is down: then they follow through the journal). The exception carries the location
  in ``exc.debug_bundle`` and in a note (``exc.add_note``) that tracebacks print. Secrets in
  the record and the traceback are redacted (see :mod:`cargohold._redact`); the files are
  uploaded as they are. ``cargohold gc`` removes bundles older than ``debug_retention``.
- **One structured log record per request** on the ``cargohold.scratch`` logger (INFO, or
  WARNING when it failed): request id, duration, outcome, input bytes (through ``save``),
  output bytes (files marked with ``output``), peak bytes, quota, the bundle's location and
  the fields the app put in :attr:`Scratch.record`. The message is the record as JSON; the
  ``LogRecord`` also carries it as ``cargohold_request``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, Self

from filelock import FileLock, Timeout

from ._redact import redact, redact_text
from .config import parse_size
from .errors import (
    CargoholdError,
    InvalidInput,
    InvalidKey,
    PermissionDenied,
    RemoteError,
    StorageFull,
    TimedOut,
    from_os_error,
)
from .hold import provide
from .keys import normalize_key
from .paths import temp_dir

if TYPE_CHECKING:
    from .hold import Hold

__all__ = [
    "BUNDLE_MAX_BYTES",
    "DEBUG_PREFIX",
    "Scratch",
    "collect_bundles",
    "remove_dead",
    "workspace_root",
]

log = logging.getLogger("cargohold.scratch")

DEBUG_PREFIX = "debug/"
#: A debug bundle carries the workspace's files up to this many bytes (smallest first);
#: the others are listed in its record.
BUNDLE_MAX_BYTES = 256 * 1024**2
_CHUNK = 1024 * 1024
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_ORPHAN_LOCK_AGE = 3600.0

Outcome = Literal["ok", "error", "interrupted", "over-quota"]

_roots: weakref.WeakKeyDictionary[Hold, Path] = weakref.WeakKeyDictionary()
_swept: set[Path] = set()
_roots_guard = threading.Lock()


def workspace_root(hold: Hold) -> Path:
    """The folder ``hold``'s workspaces go in: ``scratch/`` under the temp directory
    (:func:`cargohold.paths.temp_dir`), probed once per Hold."""
    with _roots_guard:
        root = _roots.get(hold)
        if root is None:
            root = temp_dir(hold.settings).path / "scratch"
            try:
                root.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise from_os_error(
                    exc, f"create the scratch folder {root}", fix=_ROOT_FIX
                ) from exc
            _roots[hold] = root
        return root


#: The fix for a scratch root this user cannot write, or a full one.
_ROOT_FIX = (
    "set CARGOHOLD_TEMP_DIR to a writable directory on a disk with room (see "
    "`cargohold doctor`), or lower the quota (CARGOHOLD_SCRATCH_QUOTA)"
)


def _root(hold: Hold) -> Path:
    """:func:`workspace_root`; on its first use in this process, workspaces of dead
    processes are removed from it."""
    root = workspace_root(hold)
    with _roots_guard:
        if root not in _swept:
            _swept.add(root)
            removed = remove_dead(root)
            if removed:
                log.info("cargohold: removed %d workspace(s) left by dead processes", removed)
        return root


def _request_id(value: str | None) -> str:
    """The request id as used in names: letters, digits, ``.``, ``_``, ``-`` (others become
    ``-``), at most 64 characters; a random one when none is given."""
    if value is None:
        return uuid.uuid4().hex[:12]
    if not isinstance(value, str):
        raise InvalidInput(f"request_id must be a str, not {type(value).__name__}")
    cleaned = _ID_CHARS.sub("-", value).strip(".-")[:64]
    return cleaned or uuid.uuid4().hex[:12]


def _quota(hold: Hold, quota: int | str | None) -> int:
    if quota is None:
        return hold.settings.scratch_quota
    if isinstance(quota, str):
        try:
            return parse_size(quota)
        except ValueError as exc:
            raise InvalidInput(f"quota {quota!r} is not a size", hint=str(exc)) from None
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise InvalidInput(
            f"quota must be a number of bytes >= 0 or a size such as '512MiB', not {quota!r}"
        )
    return quota


class Scratch:
    """A per-request workspace. Made by :meth:`Hold.scratch`; enter it with ``with``.

    :attr:`dir` is the directory; :attr:`record` a dict of the app's own fields for the
    request's log record and debug bundle. See the module docstring for the guarantees.
    """

    def __init__(self, hold: Hold, request_id: str | None, *, quota: int | str | None) -> None:
        self.hold = hold
        self.request_id = _request_id(request_id)
        self.quota = _quota(hold, quota)
        self.record: dict[str, Any] = {}
        #: The bundle's location (``debug/<date>/<id>/``) once one was uploaded.
        self.debug_bundle: str | None = None
        #: The workspace's directory name (``<time>-<request id>-<random>``) once entered.
        self.workspace: str | None = None
        self._dir: Path | None = None
        self._lock: FileLock | None = None
        self._used = 0
        self._peak = 0
        self._input_bytes = 0
        self._outputs: set[str] = set()
        self._started = 0.0
        self._started_at = datetime.now(UTC)
        self._guard = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """The workspace's directory (valid inside the ``with``)."""
        if self._dir is None:
            raise InvalidInput("the workspace exists only inside `with hold.scratch() as work:`")
        return self._dir

    def __enter__(self) -> Self:
        if self._dir is not None or self._started:
            raise InvalidInput("a Scratch is entered once; call hold.scratch() again")
        root = _root(self.hold)
        self._started = time.monotonic()
        self._started_at = datetime.now(UTC)
        stamp = self._started_at.strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{self.request_id}-{secrets.token_hex(3)}"
        # The lock first: a directory is only ever seen with its owner's lock held.
        lock = FileLock(str(root / f"{name}.lock"), is_singleton=False)
        try:
            lock.acquire(timeout=5)
        except OSError as exc:
            raise from_os_error(
                exc, f"create the scratch workspace {root / name}", fix=_ROOT_FIX
            ) from exc
        try:
            (root / name).mkdir(mode=0o700)
        except OSError as exc:
            _drop_lock(lock)
            raise from_os_error(
                exc, f"create the scratch workspace {root / name}", fix=_ROOT_FIX
            ) from exc
        self._lock, self._dir, self.workspace = lock, root / name, name
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome: Outcome = "ok"
        over: StorageFull | None = None
        output_bytes = 0
        try:
            try:
                self.check()
            except StorageFull as err:
                over = err
            output_bytes = self._output_bytes()
            if exc is not None:
                outcome = "error" if isinstance(exc, Exception) else "interrupted"
            elif over is not None:
                outcome = "over-quota"
            if isinstance(exc, Exception) and self.hold.settings.debug_bundles:
                self._bundle(exc, output_bytes)
        finally:
            self._remove()
            self._log(outcome, exc if exc is not None else over, output_bytes)
        if over is not None and exc is None:
            raise over

    def _remove(self) -> None:
        folder, lock = self._dir, self._lock
        self._dir = self._lock = None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():  # a file the app left read-only inside a read-only folder
                _force_remove(folder)
        if lock is not None:
            _drop_lock(lock)

    # -- writing ---------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """Where ``name`` (a relative path such as ``out/trimmed.mp3``) goes in the
        workspace, its folders created. Nothing is written or counted until a check."""
        relative = self._name(name)
        target = self.dir.joinpath(*relative.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def save(
        self,
        name: str,
        data: bytes | bytearray | memoryview | IO[bytes] | os.PathLike[str] | Iterable[bytes],
    ) -> Path:
        """Write ``data`` (bytes, a binary file object, a Path to copy, or an iterable of
        byte chunks such as an upload's stream) to ``name``; its bytes count as the
        request's input. Raises StorageFull at the quota, leaving no file behind."""
        target = self.path(name)
        self.check()
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        written = 0
        try:
            with _QuotaWriter(self, partial.open("wb"), name) as out:
                for chunk in _chunks(data):
                    written += out.write(chunk)
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            self._forget(written)
            raise
        self._input_bytes += written
        return target

    def open(self, name: str, mode: Literal["wb", "ab", "xb", "rb"] = "wb") -> BinaryIO:
        """A binary file in the workspace. Writing modes give a writer that counts its
        bytes against the quota (StorageFull before the bytes that would pass it)."""
        if mode not in ("wb", "ab", "xb", "rb"):
            raise InvalidInput(f"mode must be 'wb', 'ab', 'xb' or 'rb', not {mode!r}")
        target = self.path(name)
        if mode == "rb":
            return target.open("rb")
        self.check()
        return _QuotaWriter(self, target.open(mode), name)  # type: ignore[return-value]

    def output(self, name: str) -> Path:
        """Mark ``name`` as one of the request's outputs (its size goes in the record as
        output bytes) and check the quota. Returns its path."""
        target = self.path(name)
        self._outputs.add(self._name(name))
        self.check()
        return target

    def check(self) -> int:
        """Measure the workspace (the size of every file in it) and return its bytes.
        Raises StorageFull when it holds more than the quota."""
        if self._dir is None:
            return self._used
        used = _folder_bytes(self._dir)
        with self._guard:
            self._used = used
            self._peak = max(self._peak, used)
        if used > self.quota:
            raise self._over(used)
        return used

    @property
    def used(self) -> int:
        """Bytes in the workspace as last counted."""
        return self._used

    def _reserve(self, size: int, name: str) -> None:
        with self._guard:
            if self._used + size > self.quota:
                raise self._over(self._used + size, name)
            self._used += size
            self._peak = max(self._peak, self._used)

    def _forget(self, size: int) -> None:
        with self._guard:
            self._used = max(0, self._used - size)

    def _over(self, used: int, name: str | None = None) -> StorageFull:
        return StorageFull(
            f"the scratch workspace of request {self.request_id} would hold {used} bytes, "
            f"more than its quota of {self.quota} bytes (the scratch_quota setting)",
            key=name,
            hint="raise CARGOHOLD_SCRATCH_QUOTA, or pass quota= to hold.scratch()",
        )

    def _name(self, name: str) -> str:
        try:
            return normalize_key(name)
        except InvalidKey as exc:
            raise InvalidInput(
                f"{name!r} is not a relative file name in the workspace: {exc.message}"
            ) from None

    # -- the bundle and the record ------------------------------------------------------------

    def _output_bytes(self) -> int:
        total = 0
        for name in self._outputs:
            with contextlib.suppress(OSError):
                total += self.dir.joinpath(*name.split("/")).stat().st_size
        return total

    def _base_record(
        self, outcome: Outcome, error: BaseException | None, output_bytes: int
    ) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "workspace": self.workspace,
            "started": self._started_at.isoformat(),
            "duration_s": round(time.monotonic() - self._started, 6) if self._started else 0.0,
            "outcome": outcome,
            "error": f"{type(error).__name__}: {error}" if error is not None else None,
            "input_bytes": self._input_bytes,
            "output_bytes": output_bytes,
            "peak_bytes": self._peak,
            "quota_bytes": self.quota,
            "debug_bundle": self.debug_bundle,
            "fields": self.record,
        }

    def _bundle(self, exc: Exception, output_bytes: int) -> None:
        when = datetime.now(UTC)
        prefix = f"{DEBUG_PREFIX}{when:%Y-%m-%d}/{self.request_id}/"
        try:
            files, left_out = self._bundle_files()
            record = redact(self._base_record("error", exc, output_bytes))
            record["debug_bundle"] = prefix
            record["files"] = [name for name, _ in files]
            record["files_left_out"] = left_out
            trace = redact_text("".join(traceback.format_exception(exc)))
            uploads: list[tuple[str, bytes | Path]] = [
                *((f"{prefix}files/{name}", path) for name, path in files),
                (f"{prefix}traceback.txt", trace.encode()),
                (f"{prefix}record.json", json.dumps(record, indent=2, default=str).encode()),
            ]
            waiting = self._upload(uploads)
        except (CargoholdError, OSError) as err:
            log.error("cargohold: the debug bundle of request %s failed: %s", self.request_id, err)
            return
        self.debug_bundle = prefix
        where = f"{self.hold.remote.url} under {prefix}"
        note = f"cargohold: debug bundle of request {self.request_id} in {where}"
        if waiting:
            note += f" (not on the remote yet: {waiting}; it follows when the remote is back)"
        with contextlib.suppress(AttributeError, TypeError):
            exc.debug_bundle = prefix  # type: ignore[attr-defined]
        exc.add_note(note)

    def _bundle_files(self) -> tuple[list[tuple[str, Path]], list[str]]:
        found: list[tuple[int, str, Path]] = []
        left_out: list[str] = []
        for root, _, names in os.walk(self.dir):
            for file_name in names:
                path = Path(root) / file_name
                relative = path.relative_to(self.dir).as_posix()
                try:
                    normalize_key(relative)
                    if path.is_symlink() or not path.is_file():
                        raise InvalidKey("not a regular file")
                    found.append((path.stat().st_size, relative, path))
                except (InvalidKey, OSError):
                    left_out.append(relative)
        taken: list[tuple[str, Path]] = []
        total = 0
        for size, relative, path in sorted(found):
            if total + size > BUNDLE_MAX_BYTES:
                left_out.append(relative)
                continue
            total += size
            taken.append((relative, path))
        return taken, sorted(left_out)

    def _upload(self, uploads: list[tuple[str, bytes | Path]]) -> str | None:
        """Put each part write-through; once the remote fails, the rest go through the
        journal (one timeout, not one per file). Returns why they wait, if they do."""
        waiting: str | None = None
        status = self.hold.status()
        if status.last_error_at is not None and (
            status.last_sync is None or status.last_error_at > status.last_sync
        ):
            # The remote is failing right now: do not make the failed request wait for it.
            waiting = f"the remote is failing: {status.last_error}"
        for key, data in uploads:
            if waiting is None:
                try:
                    self.hold.put(key, data, durable=True)
                    continue
                except (TimedOut, RemoteError, PermissionDenied) as err:
                    waiting = str(err)
            self.hold.put(key, data)
        return waiting

    def _log(self, outcome: Outcome, error: BaseException | None, output_bytes: int) -> None:
        record = redact(self._base_record(outcome, error, output_bytes))
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(
            level,
            "cargohold: request %s",
            json.dumps(record, default=str, sort_keys=True),
            extra={"cargohold_request": record},
        )

    def __repr__(self) -> str:
        return f"<Scratch {self.request_id} {self._dir or '(not entered)'}>"


class _QuotaWriter(io.RawIOBase):
    """A binary file whose writes count against the workspace's quota."""

    def __init__(self, scratch: Scratch, fh: IO[bytes], name: str) -> None:
        super().__init__()
        self._scratch = scratch
        self._fh = fh
        self._name = name

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._scratch._reserve(size, self._name)
        try:
            return self._fh.write(data)
        except OSError as exc:
            self._scratch._forget(size)
            raise from_os_error(
                exc, f"write {self._name} in the scratch workspace", fix=_ROOT_FIX
            ) from exc

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _chunks(data: object) -> Iterator[bytes | memoryview]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _CHUNK):
            yield view[start : start + _CHUNK]
        return
    if isinstance(data, str):
        raise InvalidInput(
            "save takes bytes, a binary file, a Path or byte chunks, not str: encode it"
        )
    if isinstance(data, os.PathLike):
        with Path(data).open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk
        return
    read = getattr(data, "read", None)
    if callable(read):
        while chunk := read(_CHUNK):
            if isinstance(chunk, str):
                raise InvalidInput("save was given a text file: open it in binary mode ('rb')")
            yield chunk
        return
    if isinstance(data, Iterable):
        for chunk in data:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise InvalidInput(f"save's chunks must be bytes, not {type(chunk).__name__}")
            yield chunk
        return
    raise InvalidInput(
        f"save takes bytes, a binary file, a Path or byte chunks, not {type(data).__name__}"
    )


def _folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def _force_remove(folder: Path) -> None:
    for root, dirs, _ in os.walk(folder):
        for name in dirs:
            with contextlib.suppress(OSError):
                (Path(root) / name).chmod(0o700)
    with contextlib.suppress(OSError):
        folder.chmod(0o700)
    shutil.rmtree(folder, ignore_errors=True)


def _drop_lock(lock: FileLock) -> None:
    # Unlinked while still held, so no one can take a lock on a name about to vanish.
    with contextlib.suppress(FileNotFoundError):
        Path(lock.lock_file).unlink()
    lock.release()


def remove_dead(root: Path) -> int:
    """Remove the workspaces under ``root`` whose process is gone (no one holds their lock).
    Returns how many were removed. Safe to run while other processes use workspaces."""
    removed = 0
    if not root.is_dir():
        return 0
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.suffix == ".lock" or not entry.is_dir():
            continue
        lock = FileLock(str(root / f"{entry.name}.lock"), is_singleton=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # its process is alive
        try:
            _force_remove(entry)
            removed += 1
        finally:
            _drop_lock(lock)
    cutoff = time.time() - _ORPHAN_LOCK_AGE
    for stale in root.glob("*.lock"):
        with contextlib.suppress(OSError):
            if not stale.with_suffix("").exists() and stale.stat().st_mtime < cutoff:
                lock = FileLock(str(stale), is_singleton=False)
                try:
                    lock.acquire(timeout=0)
                except Timeout:
                    continue
                _drop_lock(lock)
    return removed


def collect_bundles(hold: Hold, *, older_than: float | None = None) -> int:
    """Delete debug bundles older than ``older_than`` seconds (default: the
    ``debug_retention`` setting). Returns how many bundles were removed."""
    retention = hold.settings.debug_retention if older_than is None else older_than
    cutoff = datetime.now(UTC) - timedelta(seconds=retention)
    removed: set[str] = set()
    for info in list(hold.list(DEBUG_PREFIX)):
        parts = info.key.split("/")
        if len(parts) < 4:
            continue
        if info.last_modified < cutoff:
            hold.delete(info.key)
            removed.add("/".join(parts[:3]))
    return len(removed)


provide("scratch", Scratch)  # what Hold.scratch calls
