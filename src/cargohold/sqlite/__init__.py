"""``Hold.sqlite``: an SQLite database restored on boot and replicated transaction by
transaction, with one writer at a time (docs/design/sqlite.md has the design).

- :mod:`._wal` reads SQLite's WAL file: whole transactions with a valid checksum chain.
- :mod:`._records` is the layout on the remote and the record format.
- :mod:`._restore` rebuilds a database from a snapshot and segments, verified.
- :mod:`._fence` is the writer's lease and its fencing token.
- :mod:`._retention` deletes what no restore within retention needs.
- :mod:`._replica` ships, checkpoints, snapshots and stops.
- :mod:`._follower` restores and follows read-only, never writing to the remote.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..errors import ConfigError, InvalidInput, NotFoundError
from ..hold import provide
from ..remotes import Remote
from ._follower import Follower
from ._records import check_name, generations, names
from ._replica import Replica, SqliteStatus
from ._restore import RestoreReport, restore

if TYPE_CHECKING:
    from ..hold import Hold

__all__ = [
    "RestoreReport",
    "SqliteStatus",
    "list_databases",
    "restore",
    "sqlite",
    "sqlite_status",
]


class _Replicas:
    """The databases one Hold replicates, by name (its extension, see Hold.extension)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_name: dict[str, Replica | Follower] = {}


def sqlite(
    hold: Hold,
    name: str,
    *,
    path: str | Path | None = None,
    wait: float | None = None,
    interval: float = 1.0,
    mode: Literal["write", "follow"] = "write",
) -> Path:
    """The behaviour behind :meth:`Hold.sqlite`: restore ``name`` if ``path`` is missing,
    then replicate it (or, ``mode="follow"``, follow it read-only) until ``hold`` closes.
    Returns the database's path.

    A writer is refused with ConfigError, before anything is read or written, on a remote
    that cannot enforce create-only and if-match puts: the writer's lease and the shipped
    segments are such puts, and the catalog does not stand in for them."""
    check_name(name)
    if mode not in ("write", "follow"):
        raise InvalidInput(f"mode must be 'write' or 'follow', not {mode!r}")
    if mode == "write" and not hold.remote.conditional_writes:
        # The writer's lease and every segment are conditional puts on the remote itself;
        # the catalog's leases cannot stand in for them (unlike memo's and fetch's). A
        # follower only reads: it may follow from such a remote.
        raise ConfigError(
            f"SQLite replication needs create-only and if-match puts, which "
            f"{hold.remote.url} cannot enforce (no conditional writes)",
            hint="replicate to a remote that has them: the same bucket through its S3 "
            "gateway (hf-s3://OWNER/NAME with S3 keys generated from a token), "
            "s3://, file:// or hf://datasets/",
            remote=hold.remote.url,
        )
    if not interval > 0:
        raise InvalidInput(f"interval must be above 0 seconds, not {interval!r}")
    where = (hold.local_dir / "sqlite" / name if path is None else Path(path)).absolute()
    replicas = hold.extension(_Replicas)
    with replicas.lock:
        known = replicas.by_name.get(name)
        if known is not None:
            if known.path != where:
                raise InvalidInput(
                    f"SQLite {name!r} is already replicated from {known.path}, not {where}",
                    hint="use one path per name",
                )
            return known.path
        replica: Replica | Follower
        if mode == "follow":
            replica = Follower(hold.remote, name, where, interval=interval)
        else:
            replica = Replica(
                hold,
                name,
                where,
                interval=interval,
                wait=2 * hold.settings.lease_ttl if wait is None else wait,
            )
        replica.start()
        replicas.by_name[name] = replica
    hold.include_in_flush(replica)
    return where


def sqlite_status(hold: Hold, name: str) -> SqliteStatus:
    """The behaviour behind :meth:`Hold.sqlite_status`."""
    replica = hold.extension(_Replicas).by_name.get(name)
    if replica is None:
        raise NotFoundError(
            f"this Hold does not replicate an SQLite database called {name!r}",
            key=name,
            hint="call hold.sqlite(name) first",
        )
    if isinstance(replica, Follower):
        return SqliteStatus(
            name=name,
            path=replica.path,
            writer=False,
            generation=replica.generation,
            shipped_segments=replica.segments,
            pending_transactions=0,
            lag_seconds=0.0,
            loss_window_seconds=replica.interval,
            last_shipped=None,
            last_error=replica.last_error,
        )
    return replica.status()


def list_databases(remote: Remote) -> list[tuple[str, int, datetime | None]]:
    """Each database replicated to ``remote``: its name, newest generation and the time
    its newest record was made (None when it has no complete generation)."""
    found = []
    for name in names(remote):
        gens = generations(remote, name)
        newest = max((t for t, g in gens.items() if g.snapshots), default=0)
        when = None
        if newest:
            gen = gens[newest]
            last = max(
                [gen.segments[s] for s in gen.segments] + list(gen.snapshots.values()),
                key=lambda k: k.rsplit("/", 1)[-1],
            )
            info = remote.head(last)
            when = info.last_modified
        found.append((name, newest, when))
    return found


provide("sqlite", sqlite)
provide("sqlite_status", sqlite_status)
