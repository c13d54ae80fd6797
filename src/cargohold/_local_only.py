"""The local tier seen alone, for features that keep a cache of their own in it.

:attr:`cargohold.Hold.local_only` is one of these. It gives the few local-tier operations
a feature needs beside the Hold's reads and writes (which ask the remote on a miss and
send every write to it): the download cache reads what this data directory holds without
a remote request, and keeps copies the remote never gets. Everything else about the local
tier (its journal, its index, how it evicts) stays the Hold's own business.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from .local import Entry, LocalTier
from .remotes import ObjectInfo

__all__ = ["LocalOnly"]

#: After a kept copy takes the tier past its bound, eviction brings it down to this share
#: of the bound (the same margin as the Hold's own writes).
_EVICT_TO = 0.9


class LocalOnly:
    """What this data directory's local tier holds, read and written without the remote."""

    __slots__ = ("_max_bytes", "_tier")

    def __init__(self, tier: LocalTier, *, max_bytes: int) -> None:
        self._tier = tier
        self._max_bytes = max_bytes

    def change_stamp(self) -> bytes | None:
        """A value that differs after any change to the local tier's index, by any process
        sharing the data directory (None when it cannot be read). Costs no lookup: a cache
        of what is stored compares two stamps instead of looking again."""
        return self._tier.change_stamp()

    def entry(self, key: str) -> Entry | None:
        """The local tier's record of ``key`` (a deleted one included), or None: no remote
        request. ``entry.pending`` is true while the remote does not have it yet."""
        return self._tier.entry(key)

    def data(self, entry: Entry) -> bytes | None:
        """The bytes of ``entry`` (from :meth:`entry`), or None once they are gone
        (evicted, or replaced since the entry was read)."""
        return self._tier.data(entry)

    def path(self, key: str) -> Path | None:
        """The local file with ``key``'s bytes, or None when the local tier does not have
        them: no remote request. The file is never written in place (a new version is a
        new file), so a reader that opened it keeps a whole version."""
        return self._tier.path(key)

    def keep(
        self,
        key: str,
        data: bytes | Path,
        *,
        etag: str,
        metadata: Mapping[str, str],
        content_type: str,
    ) -> None:
        """Store ``data`` under ``key`` in the local tier only: a clean entry the syncer
        never sends, evicted like any other once the tier passes ``local_max_bytes``.
        Atomic (a reader sees the old bytes or the new). A Path must be a complete file
        in a folder under :attr:`Hold.local_dir <cargohold.Hold.local_dir>` (the same
        file system): it is moved in, not copied.
        Replaces what the tier has for ``key``, so do not use it for a key with a pending
        write (see :meth:`entry`): that write would reach the remote stale."""
        tier = self._tier
        staged = tier.stage_file(key, data) if isinstance(data, Path) else tier.stage(key, data)
        info = ObjectInfo(
            key=key,
            size=staged.size,
            etag=etag,
            last_modified=datetime.now(UTC),
            metadata=dict(metadata),
            content_type=content_type,
        )
        tier.commit_clean(staged, info)
        if tier.estimate().local_bytes > self._max_bytes:
            tier.evict(int(self._max_bytes * _EVICT_TO))
