"""``Hold.persist_dir``: keep an ordinary folder (``outputs/``, say) in the remote.

What huggingface_hub's CommitScheduler does, plus what it leaves out: the folder is
restored on start, deletions propagate, and a flush (or the shutdown handler) pushes the
last changes before the process goes.

- Restore: every object under the prefix that the folder lacks, or holds with other
  bytes, is written into the folder (temp file + rename, so no half files). The remote
  wins a difference at start: it is the durable copy.
- Scan: every ``interval`` seconds, and on ``flush()``, ``close()`` and shutdown. A file
  whose size and mtime are unchanged is skipped; otherwise its MD5 is compared with what
  was last pushed, so a touched but identical file costs no upload. Changed and new files
  are put into the Hold (journaled, synced in the background); missing ones are deleted.
- Files are copied into the Hold's local tier when pushed, so the app may keep writing
  to them; a file caught mid-write is pushed again once it changes no more.
- A scan's puts and deletes are journaled and never wait for the remote, even after a
  stop signal (when the app's own puts become write-through): no caller waits on them,
  and a scan stuck on a remote that is down would hold the lock the last scan at stop
  needs. The syncer sends them; a stop's flush or ``close()`` ships them within its budget.

Stop within the grace
---------------------

:meth:`PersistedDir.stop` (from ``Hold.close``, the exit's included) has a budget, what is
left of ``shutdown_grace``: it waits for the scan thread no longer than that (a scan still
under way then ends with the process, and the last scan is skipped), and its last scan
only hashes files and journals: it never waits on the remote.
So with the remote down the exit still ends within the grace; what did not reach the
remote stays in the journal, and the Hold logs it by key (``<prefix>/<file>``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import _shutdown
from ._threads import start_thread
from .errors import CargoholdError, InvalidKey, from_os_error
from .hold import provide
from .keys import normalize_key, normalize_prefix

if TYPE_CHECKING:
    from .hold import Hold

__all__ = ["PersistedDir", "ScanReport", "persist_dir"]

log = logging.getLogger("cargohold.persist")

#: Names never pushed: our own temp files, editors' lock and swap files.
DEFAULT_IGNORE = (".cargohold-*", ".~lock.*", "*.swp", "*.tmp", "*.part")


@dataclass(frozen=True, slots=True)
class _Seen:
    size: int
    mtime_ns: int
    md5: str


@dataclass(frozen=True, slots=True)
class ScanReport:
    pushed: int
    deleted: int
    unchanged: int
    skipped: dict[str, str]


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class PersistedDir:
    """A folder kept in the remote. Made by :meth:`Hold.persist_dir`."""

    def __init__(
        self,
        hold: Hold,
        folder: Path,
        *,
        prefix: str | None,
        interval: float,
        ignore: tuple[str, ...] = DEFAULT_IGNORE,
    ) -> None:
        self.hold = hold
        self.folder = folder.absolute()
        name = prefix if prefix is not None else self.folder.name
        self.prefix = normalize_prefix(name.strip("/") + "/") if name.strip("/") else ""
        self.interval = interval
        self.ignore = ignore
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restored = 0

    def start(self) -> None:
        """Restore the folder, then scan in the background. A folder this user cannot
        create or write raises PermissionDenied (a full disk StorageFull), with the fix."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.restore()
        except CargoholdError:
            raise
        except OSError as exc:
            raise from_os_error(
                exc,
                f"keep the folder {self.folder} (persist_dir)",
                fix=(
                    "pass persist_dir() a folder this user can create and write: one under "
                    "the data directory (cargohold.paths.data_dir()), or give the app's user "
                    "the folder (Dockerfile: COPY --chown=user or RUN chown)"
                ),
            ) from exc
        self._thread = start_thread(self._run, name=f"cargohold-persist-{self.folder.name}")

    def stop(self, timeout: float = 30.0) -> None:
        """Scan one last time (so the final changes are journaled) and stop, within
        ``timeout`` seconds: a scan still under way then (hashing a huge file) is left to
        end with the process, and the last scan is skipped, with a warning."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning(
                    "cargohold: no last scan of %s at stop: its scan thread had not stopped "
                    "when the time ran out, so changes since its last scan may not be in the "
                    "journal",
                    self.folder,
                )
                return
        with contextlib.suppress(CargoholdError):
            self.scan()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:
                log.exception("cargohold: scanning %s failed", self.folder)

    # -- restore ----------------------------------------------------------------------

    def restore(self) -> int:
        """Write into the folder what the remote has and the folder lacks or holds with
        other bytes. Returns the number of files written."""
        written = 0
        with self._lock:
            for info in self.hold.list(self.prefix):
                relative = info.key[len(self.prefix) :]
                path = self.folder.joinpath(*relative.split("/"))
                remote_md5 = (info.metadata or {}).get("md5") or (
                    info.etag if "-" not in info.etag and len(info.etag) == 32 else None
                )
                if remote_md5 is None:
                    remote_md5 = (self.hold.head(info.key).metadata or {}).get("md5")
                if path.is_file() and remote_md5 is not None and _md5(path) == remote_md5:
                    self._remember(relative, path, remote_md5)
                    continue
                self._write_file(info.key, path)
                self._remember(relative, path, _md5(path))
                written += 1
        self.restored = written
        if written:
            log.info("cargohold: restored %d file(s) into %s", written, self.folder)
        return written

    def _write_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".cargohold-{uuid.uuid4().hex}")
        try:
            with self.hold.open(key) as source, tmp.open("wb") as out:
                while chunk := source.read(1024 * 1024):
                    out.write(chunk)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _remember(self, relative: str, path: Path, md5: str) -> None:
        st = path.stat()
        self._seen[relative] = _Seen(st.st_size, st.st_mtime_ns, md5)

    # -- scan -------------------------------------------------------------------------

    def scan(self) -> ScanReport:
        """Push added and changed files, delete removed ones (into the Hold's journal)."""
        pushed = deleted = unchanged = 0
        skipped: dict[str, str] = {}
        with self._lock, _shutdown.journaling():  # never write-through: see the docstring
            present: set[str] = set()
            for path in self._files():
                relative = path.relative_to(self.folder).as_posix()
                try:
                    key = normalize_key(self.prefix + relative)
                except InvalidKey as exc:
                    skipped[relative] = str(exc)
                    continue
                present.add(relative)
                try:
                    st = path.stat()
                    seen = self._seen.get(relative)
                    if seen and (seen.size, seen.mtime_ns) == (st.st_size, st.st_mtime_ns):
                        unchanged += 1
                        continue
                    md5 = _md5(path)
                    if seen and seen.md5 == md5:
                        self._seen[relative] = _Seen(st.st_size, st.st_mtime_ns, md5)
                        unchanged += 1
                        continue
                    self.hold.put(key, path, metadata={"md5": md5})
                except FileNotFoundError:
                    present.discard(relative)  # removed while we looked
                    continue
                except PermissionError as exc:  # a file this user may not read: the others go on
                    skipped[relative] = str(
                        from_os_error(exc, f"read {path}", fix="make it readable by the app's user")
                    )
                    continue
                self._seen[relative] = _Seen(st.st_size, st.st_mtime_ns, md5)
                pushed += 1
            for relative in sorted(set(self._seen) - present - set(skipped)):
                self.hold.delete(self.prefix + relative)
                del self._seen[relative]
                deleted += 1
        if pushed or deleted:
            log.debug("cargohold: %s: %d pushed, %d deleted", self.folder, pushed, deleted)
        for relative, why in skipped.items():
            log.warning("cargohold: not persisting %s: %s", self.folder / relative, why)
        return ScanReport(pushed, deleted, unchanged, skipped)

    def _files(self) -> list[Path]:
        found = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if not d.startswith(".cargohold")]
            for name in files:
                if not any(fnmatch.fnmatch(name, pattern) for pattern in self.ignore):
                    found.append(Path(root) / name)
        return found


def persist_dir(
    hold: Hold, folder: str | Path, *, prefix: str | None = None, interval: float | None = None
) -> PersistedDir:
    """The behaviour behind :meth:`Hold.persist_dir`: restore ``folder`` now, then keep it
    in the remote, with its scans part of every flush of ``hold``."""
    persisted = PersistedDir(
        hold,
        Path(folder),
        prefix=prefix,
        interval=hold.settings.persist_interval if interval is None else interval,
    )
    hold.include_in_flush(persisted)
    persisted.start()
    return persisted


provide("persist_dir", persist_dir)
