"""Find SQLite databases on a volume, for ``cargohold doctor``.

A bucket volume can be large and slow to list (hf-mount lists it from the Hub), so the walk
is bounded in depth, entries, folders and time, and a file's first bytes are read only when
its name looks like a database's: the scan costs a few listings, not a crawl.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = ["Scan", "database_url_path", "sqlite_files"]

_HEADER = b"SQLite format 3\x00"
_SUFFIXES = (".sqlite", ".sqlite3", ".db", ".db3", ".s3db", ".sl3")
# Beside a database in use: its rollback journal or its write-ahead log.
_SIDECARS = ("-journal", "-wal")
_MAX_DEPTH = 4
_MAX_ENTRIES = 5000
_MAX_LISTINGS = 200
_DEADLINE = 3.0  # seconds: a hung mount must not hang doctor


class Scan(NamedTuple):
    """What :func:`sqlite_files` found, and why it stopped early (None: it looked at all
    it meant to)."""

    found: list[Path]
    cut_short: str | None = None


def sqlite_files(
    root: Path,
    *,
    max_depth: int = _MAX_DEPTH,
    max_entries: int = _MAX_ENTRIES,
    max_listings: int = _MAX_LISTINGS,
    deadline: float = _DEADLINE,
) -> Scan:
    """SQLite databases under ``root``, at most ``max_depth`` folders down, looking at no
    more than ``max_entries`` entries and ``max_listings`` folders in all, for no more than
    ``deadline`` seconds (checked between files and folders; one slow read can overrun it).
    A file counts when it is a regular file (a symlink, FIFO or device never is: a symlink
    may point off the volume, and opening a FIFO waits for a writer), its name ends like a
    database's (``.sqlite``, ``.db``, ...) or a journal or WAL lies beside it, and its
    first bytes are SQLite's header (or cannot be read). Never raises: an unreadable folder
    is skipped. ``cut_short`` says which bound stopped the scan, if one did."""
    found: list[Path] = []
    budget, listings = max_entries, max_listings
    stop_at = time.monotonic() + deadline
    pending = [(root, 0)]
    while pending:
        cut = _bound_hit(budget, listings, stop_at, max_entries, max_listings, deadline)
        if cut is not None:
            return Scan(found, cut)
        folder, depth = pending.pop(0)
        listings -= 1
        try:
            with os.scandir(folder) as listing:
                entries = [e for _, e in zip(range(budget), listing, strict=False)]
        except OSError:
            continue
        budget -= len(entries)
        names = {e.name for e in entries}
        for entry in sorted(entries, key=lambda e: e.name):
            if time.monotonic() >= stop_at:
                return Scan(found, f"it took over {deadline:g} s")
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_file = entry.is_file(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if depth < max_depth:
                    pending.append((Path(entry.path), depth + 1))
            elif (
                is_file
                and _looks_like_database(entry.name, names)
                and _has_header(Path(entry.path))
            ):
                found.append(Path(entry.path))
    # A spent budget may have cut the last listing off (it reads no more than is left).
    return Scan(found, None if budget > 0 else f"it looked at {max_entries} entries")


def _bound_hit(
    budget: int, listings: int, stop_at: float, entries: int, folders: int, deadline: float
) -> str | None:
    if time.monotonic() >= stop_at:
        return f"it took over {deadline:g} s"
    if budget <= 0:
        return f"it looked at {entries} entries"
    if listings <= 0:
        return f"it listed {folders} folders"
    return None


def database_url_path(environ: Mapping[str, str]) -> Path | None:
    """The file a ``DATABASE_URL`` of the ``sqlite:`` kind names (Django, SQLAlchemy and
    most frameworks read it), or None. It may not exist yet."""
    url = environ.get("DATABASE_URL", "").strip()
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme.lower().startswith("sqlite"):
        return None
    # sqlite:////data/app.db and sqlite:///data/app.db (SQLAlchemy: four slashes for an
    # absolute path, three for a relative one); sqlite:/data/app.db also occurs.
    path = rest.split("?", 1)[0]
    if path.startswith("///"):
        path = path[3:]
    elif path.startswith("//"):
        path = path[2:]
    if not path or path == ":memory:":
        return None
    return Path(path) if Path(path).is_absolute() else Path.cwd() / path


def _looks_like_database(name: str, siblings: set[str]) -> bool:
    return name.lower().endswith(_SUFFIXES) or any(name + s in siblings for s in _SIDECARS)


def _has_header(path: Path) -> bool:
    # O_NOFOLLOW and O_NONBLOCK: should the regular file become a symlink or a FIFO between
    # the listing and this open, the open fails or returns at once instead of waiting.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        # ELOOP: a symlink (not on the volume); ENXIO: a FIFO or socket. Else, cannot tell:
        # its name says database, so say so.
        return exc.errno not in (errno.ELOOP, errno.ENXIO)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, len(_HEADER))
    except OSError:
        return True
    finally:
        os.close(fd)
    # An empty file is what sqlite3.connect() leaves before the first table.
    return head == _HEADER or head == b""
