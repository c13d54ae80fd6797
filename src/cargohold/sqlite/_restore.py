"""Restore a replicated database: a snapshot, then its generation's segments in order.

Guarantees: the destination appears whole or not at all (a temp file beside it, renamed
at the end); every record's SHA-256 and every segment's checksum chain is verified, and
consecutive segments must continue each other's chain; a generation's segments past what
its successor's snapshot took from it (a deposed writer's late ones) are never applied;
the result passes ``PRAGMA integrity_check`` and has the size the last record says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import IntegrityError, InvalidInput, NotFoundError
from ..remotes import Remote
from ._records import Generation, Header, decode, generations
from ._wal import Position, apply_frames, verify_frames

__all__ = ["Plan", "RestoreReport", "plan", "restore"]

log = logging.getLogger("cargohold.sqlite")


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore wrote: the database at ``path`` as of generation ``generation``'s
    segment ``segments - 1`` (``transactions`` commits applied after its snapshot)."""

    path: Path
    db_id: str
    generation: int
    segments: int
    transactions: int
    pages: int
    #: When the last record applied was made (Unix seconds).
    as_of: float


@dataclass(frozen=True, slots=True)
class Plan:
    """Which generation a restore reads, and the segments it may apply (below ``limit``)."""

    generation: Generation
    limit: int | None
    db_id: str


def _header(remote: Remote, key: str) -> Header:
    """A record's header line alone (a ranged read of its first bytes)."""
    head = remote.get(key, range=(0, 4096)).partition(b"\n")[0]
    try:
        header = json.loads(head)
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise IntegrityError(f"{key} on the remote has no readable header", key=key)
    return header


def plan(remote: Remote, name: str, *, at: float | None = None) -> Plan:
    """The generation to restore ``name`` from: the newest whose first snapshot is not
    after ``at`` (Unix seconds; None: the newest of all). NotFoundError if there is none."""
    found = generations(remote, name)
    usable = sorted(token for token, gen in found.items() if gen.snapshots)
    if not usable:
        raise NotFoundError(
            f"the remote {remote.url} holds no replicated database called {name!r}",
            key=name,
            hint="check the name with `cargohold sqlite ls`",
        )
    # Each generation's earliest snapshot left (retention may have deleted the ones before).
    starts = {t: _header(remote, found[t].snapshots[min(found[t].snapshots)]) for t in usable}
    chosen = [t for t in usable if at is None or float(starts[t]["time"]) <= at]
    if not chosen:
        oldest = datetime.fromtimestamp(float(starts[usable[0]]["time"]), UTC)
        raise NotFoundError(
            f"{name!r} has no state that old: its oldest is from {oldest:%Y-%m-%d %H:%M:%S} "
            "UTC (history older than the retention window, CARGOHOLD_SQLITE_RETENTION, is "
            "deleted from the remote)",
            key=name,
            hint="pass a later --at; to keep more history, raise CARGOHOLD_SQLITE_RETENTION "
            "(the setting sqlite_retention) on the instance that writes the database",
        )
    token = chosen[-1]
    # A later generation's first snapshot names how much of its parent it took: the
    # parent's segments from there on were written by a deposed writer, never applied.
    limit = None
    for later in usable:
        # Only a generation's snapshot 0 names its parent; once retention deleted it, it
        # deleted every older generation too (see _retention), so none is left to limit.
        parent = starts[later].get("parent") if found[later].first == 0 else None
        if later > token and parent and parent[0] == token:
            limit = int(parent[1]) if limit is None else min(limit, int(parent[1]))
    return Plan(found[token], limit, str(starts[token]["db_id"]))


def restore(
    remote: Remote, name: str, dest: Path, *, at: float | None = None, replace: bool = False
) -> RestoreReport:
    """Write ``name``'s latest state (or its state at ``at``, Unix seconds) to ``dest``.

    ``dest`` must not exist unless ``replace``; its stale ``-wal`` and ``-shm`` files go
    (they belong to a database that is no longer there). IntegrityError, with nothing
    written, if a record is damaged or the result fails its checks."""
    if dest.exists() and not replace:
        raise InvalidInput(
            f"{dest} already exists",
            hint="pass another path with --to, or remove it first",
        )
    chosen = plan(remote, name, at=at)
    generation = chosen.generation
    starts = sorted(s for s in generation.snapshots if chosen.limit is None or s <= chosen.limit)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.cargohold-{uuid.uuid4().hex[:12]}")
    try:
        header, seq = _snapshot(remote, generation, starts, tmp, at)
        page_size = int(header["page_size"])
        pages, as_of = int(header["db_pages"]), float(header["time"])
        position: Position | None = None
        transactions = 0
        while seq in generation.segments and (chosen.limit is None or seq < chosen.limit):
            key = generation.segments[seq]
            record, frames = decode(key, remote.get(key))
            if at is not None and float(record["time"]) > at:
                break
            position, commits, pages = _check_segment(key, record, frames, position, generation)
            apply_frames(tmp, frames, page_size)
            transactions += commits
            as_of = float(record["time"])
            seq += 1
        later = [s for s in generation.segments if s > seq]
        if later and (chosen.limit is None or min(later) < chosen.limit) and at is None:
            raise IntegrityError(
                f"segment {seq} of generation {generation.token} of {name!r} is missing from "
                f"the remote, but later ones are there",
                key=name,
                hint="restore a time before it with --at",
            )
        _check_database(tmp, pages * page_size, name)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{dest}{suffix}").unlink()
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    log.info(
        "cargohold: restored %s (generation %d, %d transaction(s) after its snapshot) to %s",
        name,
        generation.token,
        transactions,
        dest,
    )
    return RestoreReport(dest, chosen.db_id, generation.token, seq, transactions, pages, as_of)


def _snapshot(
    remote: Remote, generation: Generation, starts: list[int], tmp: Path, at: float | None
) -> tuple[Header, int]:
    """Write the latest usable snapshot (not after ``at``) to ``tmp``; its header and seq."""
    for seq in reversed(starts):
        key = generation.snapshots[seq]
        if at is not None and seq and float(_header(remote, key)["time"]) > at:
            continue
        header, payload = decode(key, remote.get(key))
        if int(header["token"]) != generation.token or int(header["seq"]) != seq:
            raise IntegrityError(f"{key} says it is another record", key=key)
        with tmp.open("wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        return header, seq
    raise NotFoundError(f"generation {generation.token} has no snapshot", key=str(generation.token))


def _check_segment(
    key: str, record: Header, frames: bytes, previous: Position | None, generation: Generation
) -> tuple[Position, int, int]:
    """Verify one segment and return its end position, commits and database pages."""
    if int(record["token"]) != generation.token:
        raise IntegrityError(f"{key} belongs to generation {record['token']}", key=key)
    start = Position(*record["start"])
    if previous is not None:
        same_log = (previous.salt1, previous.salt2) == (start.salt1, start.salt2)
        # Within one log a segment starts where the one before ended; a restarted log
        # (new salts) starts at its first frame.
        if (same_log and previous != start) or (not same_log and start.frames != 0):
            raise IntegrityError(f"{key} does not continue the segment before it", key=key)
    try:
        end, commits, pages = verify_frames(frames, start)
    except ValueError as exc:
        raise IntegrityError(f"{key} on the remote is damaged: {exc}", key=key) from exc
    if [end.frames, end.s0, end.s1] != record["end"][4:] or pages != int(record["db_pages"]):
        raise IntegrityError(f"{key} does not hold what its header says", key=key)
    return end, commits, pages


def _check_database(path: Path, size: int, name: str) -> None:
    """``PRAGMA integrity_check`` and the size the remote says the database has."""
    if path.stat().st_size != size:
        raise IntegrityError(
            f"the restored {name!r} has {path.stat().st_size} bytes, the remote says {size}",
            key=name,
        )
    con = sqlite3.connect(path)
    try:
        result = [row[0] for row in con.execute("PRAGMA integrity_check")]
    finally:
        con.close()
    if result != ["ok"]:
        raise IntegrityError(
            f"the restored {name!r} fails SQLite's integrity check: {'; '.join(result[:5])}",
            key=name,
            hint="restore an earlier time with --at",
        )
