"""Find SQLite databases on a volume, for ``cargohold doctor``.

A bucket volume can be large and slow to list (hf-mount lists it from the Hub), so the walk
is bounded in depth and in entries, and a file's first bytes are read only when its name
looks like a database's: the scan costs a few listings, not a crawl.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["database_url_path", "sqlite_files"]

_HEADER = b"SQLite format 3\x00"
_SUFFIXES = (".sqlite", ".sqlite3", ".db", ".db3", ".s3db", ".sl3")
# Beside a database in use: its rollback journal or its write-ahead log.
_SIDECARS = ("-journal", "-wal")
_MAX_DEPTH = 4
_MAX_ENTRIES = 5000


def sqlite_files(
    root: Path, *, max_depth: int = _MAX_DEPTH, max_entries: int = _MAX_ENTRIES
) -> list[Path]:
    """SQLite databases under ``root``, at most ``max_depth`` folders down, looking at no
    more than ``max_entries`` entries in all. A file counts when its name ends like a
    database's (``.sqlite``, ``.db``, ...) or a journal or WAL lies beside it, and its
    first bytes are SQLite's header (or cannot be read). Never raises: an unreadable folder
    is skipped."""
    found: list[Path] = []
    budget = max_entries
    pending = [(root, 0)]
    while pending and budget > 0:
        folder, depth = pending.pop(0)
        try:
            with os.scandir(folder) as listing:
                entries = [e for _, e in zip(range(budget), listing, strict=False)]
        except OSError:
            continue
        budget -= len(entries)
        names = {e.name for e in entries}
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if depth < max_depth:
                    pending.append((Path(entry.path), depth + 1))
            elif _looks_like_database(entry.name, names) and _has_header(Path(entry.path)):
                found.append(Path(entry.path))
    return found


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
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_HEADER))
    except OSError:
        return True  # cannot tell: its name says database, so say so
    # An empty file is what sqlite3.connect() leaves before the first table.
    return head == _HEADER or head == b""
