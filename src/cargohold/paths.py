"""Writable places: probe, don't assume.

A directory counts as usable only after a real write, fsync, rename and file lock in it
succeeded and its disk has more than a floor of free space. The data directory (the local
tier and its SQLite index) must also be on a file system where file locks and ``fsync``
hold: a candidate on a network or FUSE mount (a Hugging Face bucket volume among them) is
passed over, and an explicit ``data_dir`` there must pass :func:`probe_locking` or is
refused with a :class:`~cargohold.errors.ConfigError`. Caches may still go there. :func:`data_dir`,
:func:`cache_dir` and :func:`temp_dir` try candidates in order and return the first that
passes, saying whether it is RAM-backed and whether it persists, with the reason each other
candidate was turned down in :attr:`DirChoice.rejected`. :func:`configure_ml_caches` points
the cache variables of the usual ML libraries at such places.

Nothing is read at import. This module needs only :mod:`cargohold.config`,
:mod:`cargohold.errors` and :mod:`cargohold.platform`, so every layer (the Hold's embedded
default included) can use it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import platformdirs
from filelock import FileLock, Timeout

from .config import Settings
from .errors import ConfigError, PermissionDenied, StorageFull
from .platform import (
    _OBJECT_STORE_FUSE,
    Mount,
    Platform,
    Volume,
    detect,
    mount_for,
    read_mounts,
    volume_of,
)

__all__ = [
    "DEFAULT_MIN_FREE_BYTES",
    "CacheVar",
    "DirChoice",
    "cache_dir",
    "configure_ml_caches",
    "data_dir",
    "probe_dir",
    "probe_locking",
    "temp_dir",
]

log = logging.getLogger("cargohold.paths")

#: A candidate with less free space than this is turned down: a nearly full disk passes a
#: probe and then fails in the middle of a real write.
DEFAULT_MIN_FREE_BYTES = 64 * 1024**2

_SHARED_MODE = 0o700  # our directories inside the shared system temp directory
_OWN_MODE = 0o755  # elsewhere: readable by others (a shared model cache), never writable


@dataclass(frozen=True, slots=True)
class DirChoice:
    """The chosen directory, why it was chosen, and why each other candidate tried was not.

    ``tmpfs``: the directory is RAM-backed (a tmpfs or ramfs mount, or a host whose whole
    disk is memory, such as Cloud Run): what is written there spends memory.
    ``persistent``: it survives a restart or redeploy (a detected volume, or any disk of a
    local machine other than the temp directory).
    ``free_bytes``: free space when it was probed.
    """

    path: Path
    source: str
    rejected: list[tuple[Path, str, str]] = field(default_factory=list)
    tmpfs: bool = False
    persistent: bool = False
    free_bytes: int | None = None


class _Candidate(NamedTuple):
    path: Path | None  # None: could not even be named (no home directory); see `why`
    source: str
    explicit: bool = False  # the user's own setting: honoured even when RAM-backed
    shared: bool = False  # inside the world-writable temp dir: must be ours and private
    why: str = ""


def probe_dir(path: Path, *, mode: int = _OWN_MODE) -> str | None:
    """Create ``path`` if needed and prove it usable. Returns None if it is, else the reason.

    Missing directories are created with ``mode`` (0o755 by default) whatever the umask
    gives parents, so a probe never leaves a world-writable directory behind.
    """
    try:
        _make_dirs(path, mode)
        probe = path / f".cargohold-probe-{os.getpid()}-{uuid.uuid4().hex}"
        with probe.open("wb") as fh:
            fh.write(b"probe")
            fh.flush()
            os.fsync(fh.fileno())
        renamed = probe.with_name(probe.name + ".renamed")
        os.replace(probe, renamed)
        try:
            with FileLock(str(renamed) + ".lock", timeout=2, is_singleton=False):
                pass
        finally:
            renamed.unlink()
            with contextlib.suppress(FileNotFoundError):
                Path(str(renamed) + ".lock").unlink()
    except Timeout:
        return "a file lock could not be taken"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


# -- file locks -----------------------------------------------------------------------------

# Seconds the second process may take: a hung network mount must not hang open() for long.
_PROBE_TIMEOUT = 10.0

# Run by a second Python process while the first holds both kinds of lock on the renamed
# file. It prints "ok" or what went wrong. -I -S keep its start cheap and independent of the
# app's environment.
_SECOND_PROCESS = """
import errno, fcntl, os, sys
folder, name, old = sys.argv[1:4]
def main():
    listing = os.listdir(folder)
    if old in listing:
        return "a renamed file still shows under its old name to another process"
    if name not in listing:
        return "a renamed file does not show under its new name to another process"
    fd = os.open(os.path.join(folder, name), os.O_RDWR)
    try:
        if os.read(fd, 16) != b"probe":
            return "another process reads other bytes than were written and fsynced"
        for how, flag in (("flock", 0), ("fcntl", 1)):
            try:
                if flag:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    continue
                return "another process could not test a " + how + " lock: " + str(exc)
            return "another process took an " + how + " lock that this one held"
    finally:
        os.close(fd)
    return "ok"
print(main())
"""

# Directory -> what probe_locking found. No lock guards it: a dict's get and set are atomic,
# two threads that race only probe twice, and a lock held at a fork() would hang the child.
_lock_probes: dict[Path, str | None] = {}


def probe_locking(path: Path) -> str | None:
    """Prove that file locks and renames in the existing directory ``path`` hold between
    processes. Returns None if they do, else what failed.

    This process writes and fsyncs a file, renames it, and takes an exclusive ``flock`` and
    an exclusive ``fcntl`` lock (SQLite's kind) on it; a second process must then see the
    file under its new name only, read its bytes, and be refused both locks. It leaves
    nothing behind. The answer is cached per directory for the life of the process: the
    second process costs a Python start-up (tens of milliseconds), so it runs once.

    A pass proves locking on this machine only; no probe can prove that ``fsync`` reached
    a server, or that other machines mounting the same files see these locks.
    """
    key = path.resolve()
    if key in _lock_probes:
        return _lock_probes[key]
    result = _lock_probes[key] = _probe_locking(key)
    if result is not None:
        log.info("cargohold: file locks in %s do not hold: %s", key, result)
    return result


def _probe_locking(folder: Path) -> str | None:
    token = f".cargohold-lockprobe-{os.getpid()}-{uuid.uuid4().hex}"
    old, new = folder / token, folder / f"{token}.renamed"
    try:
        with old.open("wb") as fh:
            fh.write(b"probe")
            fh.flush()
            os.fsync(fh.fileno())
        _rename(old, new)
        fd = os.open(new, os.O_RDWR)
        try:
            try:
                _hold_locks(fd)
            except OSError as exc:
                return f"a file lock could not be taken: {exc.strerror or exc}"
            return _second_process(folder, new.name, old.name)
        finally:
            os.close(fd)  # which releases both locks
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    finally:
        for leftover in (old, new):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _rename(source: Path, target: Path) -> None:
    os.replace(source, target)


def _hold_locks(fd: int) -> None:
    import fcntl  # POSIX only; no mount table (so nothing to probe) elsewhere

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _second_process(folder: Path, name: str, old: str) -> str | None:
    if not _can_spawn_python():
        # In a frozen app (PyInstaller) or under an embedding server (uWSGI) sys.executable
        # is the app itself: running it with "-c" would start the app again, not the probe.
        return (
            f"no second process can test file locks: {sys.executable or 'the executable'} "
            "is not a Python interpreter (a frozen or embedded app); put data_dir on the "
            "container's own disk, or set CARGOHOLD_DATA_DIR to a local path"
        )
    command = [sys.executable, "-I", "-S", "-c", _SECOND_PROCESS, str(folder), name, old]
    try:
        # On timeout, run() kills the child by its PID and reaps it. The child starts no
        # process of its own, so no group of its own is needed to kill all it started.
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"a second process testing file locks took over {_PROBE_TIMEOUT:g} s"
    except (OSError, ValueError) as exc:
        return f"no second process could be started to test file locks: {exc}"
    answer = done.stdout.strip()
    if answer == "ok":
        return None
    if answer:
        return answer
    last = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    return f"the second process testing file locks failed: {last[0]}"


def _can_spawn_python() -> bool:
    name = Path(sys.executable or "").name.lower()
    return not getattr(sys, "frozen", False) and name.startswith("python")


def data_dir(
    settings: Settings | None = None,
    *,
    app: str = "cargohold",
    min_free_bytes: int | None = None,
    mounts: str | os.PathLike[str] = "/proc/mounts",
    host: Platform | None = None,
) -> DirChoice:
    """Where cargohold keeps its local tier (and the embedded default remote).

    Candidates, in order: the ``data_dir`` setting (``CARGOHOLD_DATA_DIR``), ``.{app}`` on
    each persistent mount the host reveals, the user data directory
    (``~/.local/share/{app}`` on Linux), ``.{app}`` in the working directory, and
    ``{app}-{uid}`` in the system temp directory. A RAM-backed candidate is used only when no
    disk-backed one passes (or when it is the setting). A candidate on a volume where file
    locks and fsync cannot be trusted (:attr:`Volume.lockable` False) is passed over
    untouched when it is a bucket (hf-mount, gcsfuse, s3fs, ...) or a network share below
    the root, and used on any other (a FUSE mount, a 9p container root) only if
    :func:`probe_locking` passes there (cached per directory per process). Raises
    :class:`PermissionDenied` if none is usable (:class:`StorageFull` if all failed only for space), listing each
    candidate and why, and :class:`ConfigError`, naming the fix, if the setting is on a
    bucket volume or on a network or FUSE mount that fails :func:`probe_locking`.
    """
    settings = settings or Settings.load()
    host = host if host is not None else detect(mounts=mounts)
    candidates: list[_Candidate] = []
    if settings.data_dir is not None:
        candidates.append(
            _Candidate(settings.data_dir, "the data_dir setting (CARGOHOLD_DATA_DIR)", True)
        )
    candidates += _on_mounts(host, Path(f".{app}"))
    candidates.append(
        _user_dir(platformdirs.user_data_dir(app, appauthor=False), "the user data directory")
    )
    candidates += _in_cwd(Path(f".{app}"))
    candidates.append(_in_temp(f"{app}-{_uid()}"))
    floor = settings.min_free_bytes if min_free_bytes is None else min_free_bytes
    return _choose("data", candidates, floor, read_mounts(mounts), host)


def cache_dir(
    settings: Settings | None = None,
    *,
    app: str | None = "cargohold",
    path: str | os.PathLike[str] | None = None,
    min_free_bytes: int | None = None,
    mounts: str | os.PathLike[str] = "/proc/mounts",
    host: Platform | None = None,
) -> DirChoice:
    """A cache directory for ``app``; with ``app=None``, the shared cache root that other
    tools' caches go under (what ``XDG_CACHE_HOME`` names).

    Candidates, in order: ``path`` (an explicit choice), ``.cache`` on each persistent mount,
    the user cache directory (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux), ``.cache`` in
    the working directory, and a private directory in the system temp directory; ``/{app}``
    is appended to each. Same guarantees and errors as :func:`data_dir`. What is cached
    here may be deleted by the host or the user at any time. ``path`` defaults to the
    ``cache_dir`` setting (``CARGOHOLD_CACHE_DIR``).
    """
    settings = settings or Settings.load()
    path = settings.cache_dir if path is None else path
    min_free_bytes = settings.min_free_bytes if min_free_bytes is None else min_free_bytes
    host = host if host is not None else detect(mounts=mounts)
    sub = Path(app) if app else Path()
    candidates: list[_Candidate] = []
    if path is not None:
        candidates.append(_Candidate(Path(path).expanduser() / sub, "the explicit path", True))
    candidates += _on_mounts(host, Path(".cache") / sub)
    candidates.append(
        _user_dir(platformdirs.user_cache_dir(app, appauthor=False), "the user cache directory")
    )
    candidates += _in_cwd(Path(".cache") / sub)
    candidates.append(_in_temp(f"{app}-{_uid()}-cache" if app else f"cache-{_uid()}"))
    return _choose("cache", candidates, min_free_bytes, read_mounts(mounts), host)


def temp_dir(
    settings: Settings | None = None,
    *,
    app: str = "cargohold",
    path: str | os.PathLike[str] | None = None,
    min_free_bytes: int | None = None,
    mounts: str | os.PathLike[str] = "/proc/mounts",
    host: Platform | None = None,
) -> DirChoice:
    """A private directory for temporary files of ``app``.

    Candidates, in order: ``path`` (an explicit choice), ``{app}-{uid}-tmp`` in the system
    temp directory (``$TMPDIR``, created 0700 and refused if another user owns it), the
    user cache directory's ``{app}/tmp``, and ``.{app}/tmp`` in the working directory.
    Persistent mounts are left out on purpose: temporary files would cost durable (often
    network) space and outlive a crash there. A RAM-backed temp dir (tmpfs ``/tmp``) is
    passed over for a disk-backed candidate when one works, as large scratch files would
    otherwise spend memory. Same errors as :func:`data_dir`. ``path`` defaults to the
    ``temp_dir`` setting (``CARGOHOLD_TEMP_DIR``).
    """
    settings = settings or Settings.load()
    path = settings.temp_dir if path is None else path
    min_free_bytes = settings.min_free_bytes if min_free_bytes is None else min_free_bytes
    host = host if host is not None else detect(mounts=mounts)
    candidates: list[_Candidate] = []
    if path is not None:
        candidates.append(_Candidate(Path(path).expanduser(), "the explicit path", True))
    candidates.append(_in_temp(f"{app}-{_uid()}-tmp"))
    user_cache = platformdirs.user_cache_dir(app, appauthor=False)
    candidates.append(_user_dir(user_cache, "the user cache directory", Path("tmp")))
    candidates += _in_cwd(Path(f".{app}") / "tmp")
    return _choose("temp", candidates, min_free_bytes, read_mounts(mounts), host)


# -- candidates ---------------------------------------------------------------------------


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _on_mounts(host: Platform, relative: Path) -> list[_Candidate]:
    return [
        _Candidate(mount / relative, f"the persistent mount {mount} (found on {host.name})")
        for mount in host.persistent_mounts
    ]


def _user_dir(located: str, source: str, relative: Path = Path()) -> _Candidate:
    # With HOME unset and no passwd entry (arbitrary-uid containers), "~" does not expand
    # and the result is relative: it would land in the working directory under a "~" folder.
    where = Path(located)
    if not where.is_absolute():
        return _Candidate(None, source, why="the home directory is unknown (HOME is unset)")
    return _Candidate(where / relative, source)


def _in_cwd(relative: Path) -> list[_Candidate]:
    try:
        return [_Candidate(Path.cwd() / relative, "the working directory")]
    except OSError:
        return [_Candidate(None, "the working directory", why="it no longer exists")]


def _in_temp(name: str) -> _Candidate:
    return _Candidate(Path(tempfile.gettempdir()) / name, "the system temp directory", shared=True)


# -- choosing -----------------------------------------------------------------------------


class _Usable(NamedTuple):
    candidate: _Candidate
    path: Path
    tmpfs: bool
    free: int


def _choose(
    kind: str,
    candidates: Sequence[_Candidate],
    min_free_bytes: int,
    table: tuple[Mount, ...],
    host: Platform,
) -> DirChoice:
    rejected: list[tuple[Path, str, str]] = []
    space_only = True  # every rejection so far was for free space
    in_ram: list[tuple[int, _Usable]] = []  # usable but RAM-backed, with their place in line
    seen: set[Path] = set()
    for cand in candidates:
        if cand.path is not None and cand.path in seen:
            continue
        usable, reason = None, cand.why
        if cand.path is not None:
            seen.add(cand.path)
            usable, reason = _assess(kind, cand, cand.path, min_free_bytes, table, host)
        if usable is None:
            _reject(kind, cand, reason, rejected)
            space_only = space_only and reason.startswith("only ")
        elif usable.tmpfs and not cand.explicit:
            in_ram.append((len(rejected), usable))  # keep looking for a disk-backed one
        else:
            return _chosen(kind, usable, _with_ram(kind, rejected, in_ram), host)
    if in_ram:
        first = in_ram[0][1]
        return _chosen(kind, first, _with_ram(kind, rejected, in_ram[1:]), host)
    listing = "; ".join(f"{p} ({s}): {why}" for p, s, why in rejected)
    error = StorageFull if space_only and rejected else PermissionDenied
    raise error(
        f"no usable {kind} directory: {listing}",
        hint="set the directory explicitly to one this user can write, on a disk with room",
    )


def _reject(kind: str, cand: _Candidate, why: str, rejected: list[tuple[Path, str, str]]) -> None:
    where = cand.path if cand.path is not None else Path("~")
    rejected.append((where, cand.source, why))
    # A setting the user made and cargohold could not honour deserves more than INFO.
    level = logging.WARNING if cand.explicit else logging.INFO
    log.log(level, "cargohold: not using %s for %s (%s): %s", where, kind, cand.source, why)


def _assess(
    kind: str,
    cand: _Candidate,
    path: Path,
    min_free_bytes: int,
    table: tuple[Mount, ...],
    host: Platform,
) -> tuple[_Usable | None, str]:
    # The local tier's SQLite index (WAL mode) and its file locks need a local file system.
    # Decided before anything is written: on a bucket volume a probe file is an upload.
    volume = _unlockable(path, table, host) if kind == "data" else None
    if volume is not None and _passed_over(volume, cand):
        return None, f"it is on {volume.why}; the local tier needs a local disk"
    if volume is not None and volume.kind == "hf-mount":
        raise _refused(path, cand, volume, None)
    reason = None
    if cand.shared and os.path.lexists(path):
        reason = _ensure_private(path)  # before writing a byte into someone else's folder
    if reason is None:
        reason = probe_dir(path, mode=_SHARED_MODE if cand.shared else _OWN_MODE)
    if reason is None and cand.shared:
        reason = _ensure_private(path)  # it may have been made by someone else meanwhile
    if reason is not None:
        return None, reason
    if volume is not None:
        problem = probe_locking(path)
        if problem is not None and cand.explicit:
            raise _refused(path, cand, volume, problem)
        if problem is not None:
            return None, f"it is on {volume.why}, and a probe found that {problem}"
        # The user's own choice on a shared file system deserves the reminder every time;
        # a default that passed (a gVisor 9p root, an sshfs home) only a note.
        log.log(
            logging.WARNING if cand.explicit else logging.INFO,
            "cargohold: using %s for the local tier (%s), on %s; file locks held between "
            "processes here, but let no other machine use this directory",
            path,
            cand.source,
            volume.why,
        )
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return None, f"its free space is unknown: {exc.strerror or exc}"
    if free < min_free_bytes:
        return None, f"only {free} bytes free, below the floor of {min_free_bytes}"
    return _Usable(cand, path, _ram_backed(path, table, host), free), ""


def _passed_over(volume: Volume, cand: _Candidate) -> bool:
    """Whether a default candidate on ``volume`` (not lockable) is refused untouched.

    A bucket volume (hf-mount, gcsfuse, s3fs, ...) is: a probe file there is an upload,
    and its locks would pass while fsync does not. So is a network share mounted below the root (NFS, SMB, EFS): other
    machines may mount it too, and a probe on this one cannot see theirs. Anything else (a
    FUSE mount, a container root on 9p as gVisor shows it) gets :func:`probe_locking`.
    The user's own setting is always probed, bar the bucket volume.
    """
    if volume.kind == "hf-mount":
        return not cand.explicit
    if cand.explicit:
        return False
    bucket = volume.fstype in _OBJECT_STORE_FUSE  # gcsfuse, s3fs, ...: as hf-mount
    return bucket or (volume.kind == "network" and volume.path != Path("/"))


def _unlockable(path: Path, table: tuple[Mount, ...], host: Platform) -> Volume | None:
    """The volume holding ``path`` if file locks and fsync cannot be trusted there."""
    mount = mount_for(path, table)
    if mount is None:
        return None
    volume = volume_of(mount, host.name)
    return None if volume.lockable else volume


# The fix for a local tier on a bucket volume (hf-mount): the two tiers where they belong.
_BUCKET_VOLUME_FIX = (
    "keep the local tier on the container's own disk (unset CARGOHOLD_DATA_DIR, or point it "
    "at a local directory) and use the bucket as the remote: "
    "CARGOHOLD_REMOTE=hf-s3://OWNER/NAME"
)
_SHARED_FS_FIX = (
    "point CARGOHOLD_DATA_DIR at a local disk (or unset it), and keep what must be shared "
    "in the remote: a bucket (s3://...) or this volume as a file:// remote"
)


def _refused(path: Path, cand: _Candidate, volume: Volume, problem: str | None) -> ConfigError:
    found = f"; a probe found that {problem}" if problem else ""
    return ConfigError(
        f"{path} ({cand.source}) cannot hold the local tier: it is on {volume.why}{found}",
        hint=_BUCKET_VOLUME_FIX if volume.kind == "hf-mount" else _SHARED_FS_FIX,
    )


def _ensure_private(path: Path) -> str | None:
    """In a directory every user can write, a folder with our name may have been planted by
    someone else (to read our files or swap in a symlink): use it only if it is ours."""
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode):
            return "it is not a directory (a symlink?)"
        if info.st_uid != _uid():
            return f"it belongs to user {info.st_uid}, not to us"
        if stat.S_IMODE(info.st_mode) & 0o077:
            path.chmod(_SHARED_MODE)  # ours, left open by an older version: close it
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def _ram_backed(path: Path, table: tuple[Mount, ...], host: Platform) -> bool:
    on_volume = any(_within(path, m) for m in host.persistent_mounts)
    if host.memory_disk and not on_volume:
        return True
    mount = mount_for(path, table)
    return mount is not None and mount.ram_backed


def _persists(path: Path, tmpfs: bool, host: Platform) -> bool:
    if tmpfs:
        return False
    if any(_within(path, m) for m in host.persistent_mounts):
        return True
    # A local machine keeps its disks, except the temp directory (often emptied at boot).
    return host.name == "local" and not _within(path, Path(tempfile.gettempdir()))


def _within(path: Path, parent: Path) -> bool:
    path, parent = path.resolve(), parent.resolve()
    return path == parent or parent in path.parents


def _with_ram(
    kind: str, rejected: list[tuple[Path, str, str]], in_ram: list[tuple[int, _Usable]]
) -> list[tuple[Path, str, str]]:
    """``rejected`` with the RAM-backed candidates that were passed over put back in line."""
    merged = list(rejected)
    for place, usable in reversed(in_ram):
        why = "RAM-backed (tmpfs); a disk-backed candidate was preferred"
        merged.insert(place, (usable.path, usable.candidate.source, why))
        log.info("cargohold: not using %s for %s: %s", usable.path, kind, why)
    return merged


def _chosen(
    kind: str, usable: _Usable, rejected: list[tuple[Path, str, str]], host: Platform
) -> DirChoice:
    cand = usable.candidate
    persistent = _persists(usable.path, usable.tmpfs, host)
    notes = (", RAM-backed" if usable.tmpfs else "") + (
        ", persistent" if persistent else ", not persistent"
    )
    level = logging.WARNING if usable.tmpfs and cand.explicit else logging.INFO
    log.log(level, "cargohold: %s directory %s (%s%s)", kind, usable.path, cand.source, notes)
    return DirChoice(
        path=usable.path,
        source=cand.source,
        rejected=rejected,
        tmpfs=usable.tmpfs,
        persistent=persistent,
        free_bytes=usable.free,
    )


def _make_dirs(path: Path, mode: int) -> None:
    """``mkdir -p`` that gives every directory it creates ``mode`` (less the umask), where
    ``Path.mkdir(parents=True)`` gives parents 0o777 less the umask: 0o777 under umask 0."""
    missing: list[Path] = []
    at = path
    while not at.exists() and not at.is_symlink() and at != at.parent:
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            directory.mkdir(mode=mode)
    if not path.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(path))


# -- ML library caches --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheVar:
    """What :func:`configure_ml_caches` did with one variable.

    ``action``: ``kept`` (it was set and works, or nothing needed setting), ``set`` (it was
    unset), ``replaced`` (its directory was not usable; ``previous`` holds the old value),
    ``extended`` (a search path with no writable entry got one in front), or ``failed`` (no
    usable directory was found for it; left as it was).
    """

    name: str
    value: str | None
    action: Literal["kept", "set", "replaced", "extended", "failed"]
    reason: str
    previous: str | None = None


# Variable -> (base it derives from, sub-directory). The base "cache" is the shared cache
# root, "temp" the temp directory; other bases are variables resolved earlier in this list.
_ML_VARS: tuple[tuple[str, str, str], ...] = (
    ("XDG_CACHE_HOME", "cache", ""),
    ("HF_HOME", "cache", "huggingface"),
    ("HF_HUB_CACHE", "HF_HOME", "hub"),
    ("HF_XET_CACHE", "HF_HOME", "xet"),
    ("HF_DATASETS_CACHE", "HF_HOME", "datasets"),
    # sentence-transformers downloads through the hub into this folder, in the hub's layout:
    # pointing it at the hub cache shares the files with transformers instead of a 2nd copy.
    ("SENTENCE_TRANSFORMERS_HOME", "HF_HUB_CACHE", ""),
    ("TORCH_HOME", "cache", "torch"),
    ("TRITON_CACHE_DIR", "cache", "triton"),
    ("NUMBA_CACHE_DIR", "cache", "numba"),
    ("MPLCONFIGDIR", "cache", "matplotlib"),
    ("NLTK_DATA", "cache", "nltk_data"),
    ("GRADIO_TEMP_DIR", "temp", "gradio"),
)
# Older names the libraries still read when the new one is unset.
_LEGACY = {"HF_HUB_CACHE": "HUGGINGFACE_HUB_CACHE"}
# Variables transformers 5 no longer reads: the hub cache (HF_HUB_CACHE) replaced them.
_IGNORED = ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE")
# Libraries that read a variable once, at import: setting it after that changes nothing.
_READ_AT_IMPORT = {
    "HF_HOME": "huggingface_hub",
    "HF_HUB_CACHE": "huggingface_hub",
    "HF_XET_CACHE": "huggingface_hub",
    "HF_DATASETS_CACHE": "datasets",
    "MPLCONFIGDIR": "matplotlib",
    "NUMBA_CACHE_DIR": "numba",
    "NLTK_DATA": "nltk",
}


def configure_ml_caches(
    *,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    mounts: str | os.PathLike[str] = "/proc/mounts",
    host: Platform | None = None,
) -> tuple[CacheVar, ...]:
    """Point the cache variables of Hugging Face, PyTorch, Triton, Numba, Matplotlib, NLTK
    and Gradio at usable directories. Call it first thing, before those libraries are
    imported: several read their variable only once, at import (that is logged).

    Guarantees: a variable that is set and names a usable directory is never changed
    (``NLTK_DATA``, a search path, counts as usable when any entry is); an unset one is set
    under the shared cache root (:func:`cache_dir` with ``app=None``: a persistent mount
    when the host has one), Hugging Face's derived ones under the final ``HF_HOME``, and
    ``GRADIO_TEMP_DIR`` under :func:`temp_dir`; an unusable one is replaced, with a warning
    naming the old value. Directories are created 0o755 (0o700 inside the shared temp
    directory), never 0o777. Idempotent: a second call keeps everything. ``TRANSFORMERS_CACHE``
    and its older spellings are left alone but warned about: transformers 5 ignores them.
    Raises :class:`PermissionDenied` only when no candidate directory at all is usable.
    """
    host = host if host is not None else detect(mounts=mounts)
    roots: dict[str, Path] = {}

    def root(kind: str) -> Path:
        # Chosen on first need only: when every variable is set and usable, nothing is probed.
        if kind not in roots:
            if kind == "cache":
                choice = cache_dir(
                    app=None, min_free_bytes=min_free_bytes, mounts=mounts, host=host
                )
            else:
                choice = temp_dir(min_free_bytes=min_free_bytes, mounts=mounts, host=host)
            roots[kind] = choice.path
        return roots[kind]

    def target(derive_from: str, sub: str) -> Path:
        if derive_from in ("cache", "temp"):
            return root(derive_from) / sub
        parent = _current(derive_from)  # a variable resolved earlier in the list
        return (Path(parent) if parent else root("cache")) / sub

    results = [
        _configure_one(name, functools.partial(target, derive_from, sub))
        for name, derive_from, sub in _ML_VARS
    ]
    _warn_ignored()
    _warn_late([r for r in results if r.action in ("set", "replaced", "extended")])
    return tuple(results)


def _current(name: str) -> str | None:
    return os.environ.get(name) or os.environ.get(_LEGACY.get(name, ""), "") or None


def _configure_one(name: str, locate: Callable[[], Path]) -> CacheVar:
    current = _current(name)
    via = name if os.environ.get(name) else _LEGACY.get(name, name)
    if current and name == "NLTK_DATA":
        entries = [Path(e) for e in current.split(os.pathsep) if e]
        if any(probe_dir(e) is None for e in entries):
            return CacheVar(name, current, "kept", "an entry of the search path is usable")
    elif current and probe_dir(Path(current)) is None:
        return CacheVar(name, current, "kept", f"{via} is set and usable")
    place = locate()
    mode = _SHARED_MODE if _within(place, Path(tempfile.gettempdir())) else _OWN_MODE
    problem = probe_dir(place, mode=mode)
    if problem is not None:
        log.warning("cargohold: no usable directory for %s: %s: %s", name, place, problem)
        return CacheVar(name, current, "failed", f"{place}: {problem}", current)
    value = str(place)
    action: Literal["set", "replaced", "extended"]
    if current and name == "NLTK_DATA":
        value = f"{place}{os.pathsep}{current}"  # the data already there stays readable
        action, reason = "extended", "no entry of the search path is usable"
    elif current:
        action, reason = "replaced", f"{via}={current} is not usable"
    else:
        action, reason = "set", "it was unset"
    os.environ[name] = value
    level = logging.WARNING if action == "replaced" else logging.INFO
    log.log(level, "cargohold: %s=%s (%s)", name, value, reason)
    return CacheVar(name, value, action, reason, current)


def _warn_ignored() -> None:
    for name in _IGNORED:
        if os.environ.get(name):
            log.warning(
                "cargohold: %s=%s is set, but transformers 5 ignores it and uses the hub "
                "cache (HF_HUB_CACHE=%s): remove it, and set HF_HUB_CACHE instead if that "
                "place matters",
                name,
                os.environ[name],
                os.environ.get("HF_HUB_CACHE", ""),
            )


def _warn_late(changed: list[CacheVar]) -> None:
    late: dict[str, list[str]] = {}
    for var in changed:
        module = _READ_AT_IMPORT.get(var.name)
        if module and module in sys.modules:
            late.setdefault(module, []).append(var.name)
    for module, names in late.items():
        log.warning(
            "cargohold: %s set after %s was imported, which reads them only at import: call "
            "configure_ml_caches() before importing %s (or anything that imports it)",
            ", ".join(names),
            module,
            module,
        )
