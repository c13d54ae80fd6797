"""Retention: delete what no restore within the window needs (docs/design/sqlite.md).

A restore at time ``t`` reads the newest generation whose earliest snapshot is not after
``t``, that generation's latest snapshot not after ``t``, and the segments after it. So
every ``t`` from ``now - retention`` on is served by the records from the **base** on:
the latest snapshot made at or before the cutoff, in the generation a restore at the
cutoff would read. Everything before the base goes: whole older generations, and, when
the base is in the newest generation, that generation's records before it.

The base's own generation is cut only when it is the newest one: an older generation may
hold a deposed writer's late records, which only its successor's snapshot 0 tells apart,
and that snapshot is kept until the older generation is deleted whole. Older generations
go first and oldest first, so a run cut short leaves nothing a restore within the
window needs. Only the writer (the lease holder) prunes.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from ..errors import NotFoundError
from ..keys import InternalKey
from ..remotes import Remote
from ._records import generations

__all__ = ["prune"]

log = logging.getLogger("cargohold.sqlite")


def prune(remote: Remote, name: str, *, retention: float, now: datetime) -> int:
    """Delete ``name``'s records that no restore at or after ``now - retention`` needs.
    Returns how many were deleted. Times are the remote's ``last_modified``: a record is
    made (its header's ``time``) before the remote stamps it, so a restore's choice by
    header time never needs a record this deletes."""
    every = generations(remote, name)  # one listing
    found = {t: g for t, g in every.items() if g.snapshots}
    if not found:
        return 0
    cutoff = now - timedelta(seconds=retention)
    # The generation a restore at the cutoff reads: the newest begun by then.
    begun = [t for t, g in found.items() if g.made[g.snapshots[min(g.snapshots)]] <= cutoff]
    if not begun:
        return 0  # every generation began inside the window: all of it is needed
    base_token = max(begun)
    doomed: list[InternalKey] = []
    for token in sorted(every):
        if token < base_token:
            doomed += every[token].keys()
    base = found[base_token]
    if base_token == max(found):
        before = [s for s, k in base.snapshots.items() if base.made[k] <= cutoff]
        base_seq = max(before)
        doomed += [k for s, k in base.snapshots.items() if s < base_seq]
        doomed += [k for s, k in base.segments.items() if s < base_seq]
    deleted = 0
    for error in remote.delete_many(doomed):
        if error is None or isinstance(error, NotFoundError):
            deleted += 1
        else:
            raise error
    if deleted:
        log.info(
            "cargohold: deleted %d record(s) of SQLite %r older than its retention (%g s)",
            deleted,
            name,
            retention,
        )
    return deleted
