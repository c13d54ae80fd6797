"""What a replicated database leaves on the remote (see docs/design/sqlite.md).

Under ``.cargohold/sqlite/<name>/``: ``lease``, and per generation ``g/<token>/snap/<seq>``
(snapshots) and ``g/<token>/wal/<seq>`` (segments of WAL frames). Every record is one JSON
header line, then its payload; the header carries the payload's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import IntegrityError, InvalidInput
from ..keys import InternalKey, internal_key, internal_prefix
from ..remotes import Remote

__all__ = [
    "Generation",
    "Header",
    "check_name",
    "decode",
    "encode",
    "generations",
    "lease_key",
    "names",
    "record_key",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RECORD = re.compile(r"g/(\d{10})/(snap|wal)/(\d{12})")
_ROOT = "sqlite/"


def check_name(name: str) -> str:
    """A database's name on the remote: a file name of letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"{name!r} is not a database name cargohold can replicate",
            hint="use a file name of letters, digits, '.', '_' and '-' (such as 'app.db')",
        )
    return name


def lease_key(name: str) -> InternalKey:
    return internal_key(f"{_ROOT}{name}/lease")


def record_key(name: str, token: int, kind: str, seq: int) -> InternalKey:
    return internal_key(f"{_ROOT}{name}/g/{token:010d}/{kind}/{seq:012d}")


Header = dict[str, Any]


def encode(header: Header, payload: bytes) -> bytes:
    """One record: the header (with the payload's digest added) as a JSON line, then the payload."""
    full = {**header, "sha256": hashlib.sha256(payload).hexdigest()}
    return json.dumps(full, sort_keys=True).encode() + b"\n" + payload


def decode(key: str, data: bytes) -> tuple[Header, bytes]:
    """Split a record and check its digest; IntegrityError (naming ``key``) if damaged."""
    line, sep, payload = data.partition(b"\n")
    try:
        header = json.loads(line) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise IntegrityError(
            f"{key} on the remote is not a cargohold SQLite record (no header)",
            key=key,
            hint="the object was damaged or written by something else: restore an earlier "
            "time with --at, or remove the generation it belongs to",
        )
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise IntegrityError(
            f"{key} on the remote does not match its SHA-256: it is damaged",
            key=key,
            hint="restore an earlier time with --at (before this object was made)",
        )
    return header, payload


@dataclass(slots=True)
class Generation:
    """One writer's records, by sequence number, and when the remote says each was made.

    Retention deletes a generation's oldest records, so its first snapshot may be gone:
    ``first`` is its earliest snapshot left (None: it has none, and cannot be restored)."""

    token: int
    snapshots: dict[int, InternalKey] = field(default_factory=dict)
    segments: dict[int, InternalKey] = field(default_factory=dict)
    made: dict[InternalKey, datetime] = field(default_factory=dict)

    @property
    def first(self) -> int | None:
        return min(self.snapshots, default=None)

    def keys(self) -> list[InternalKey]:
        """Every record, snapshots before segments of the same sequence number."""
        both = [(s, 0, k) for s, k in self.snapshots.items()]
        both += [(s, 1, k) for s, k in self.segments.items()]
        return [k for _, _, k in sorted(both)]


def generations(remote: Remote, name: str) -> dict[int, Generation]:
    """Every generation of ``name`` on the remote, by token (one listing)."""
    prefix = internal_prefix(f"{_ROOT}{name}/g/")
    found: dict[int, Generation] = {}
    for info in remote.list(prefix):
        match = _RECORD.fullmatch(info.key[len(prefix) - 2 :])
        if match is None:
            continue
        token, seq = int(match[1]), int(match[3])
        generation = found.setdefault(token, Generation(token))
        target = generation.snapshots if match[2] == "snap" else generation.segments
        target[seq] = InternalKey(info.key)
        generation.made[InternalKey(info.key)] = info.last_modified
    return found


def names(remote: Remote) -> Iterator[str]:
    """The names of the databases replicated to ``remote``, in order."""
    prefix = internal_prefix(_ROOT)
    seen: set[str] = set()
    for info in remote.list(prefix):
        name = info.key[len(prefix) :].split("/", 1)[0]
        if name not in seen:
            seen.add(name)
            yield name
