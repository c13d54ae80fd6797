"""The writer's lease of one replicated database, with a fencing token.

One object, ``.cargohold/sqlite/<name>/lease``, written only by conditional puts, so of
racing takers exactly one wins each change:

- **take**: ``put(mode="create")`` when it is missing; else, when it is released or its
  holder stopped renewing it (its etag unchanged for ``ttl`` seconds by this machine's
  monotonic clock, so no two clocks must agree), ``put(if_match=<its etag>)``. Either
  way the new content's ``token`` is one more than the lease's and than any generation
  on the remote: tokens only grow, and each names one writer's generation.
- **renew**: every ``ttl / 3`` seconds (:class:`~cargohold._heartbeat.Heartbeat`), a put
  ``if_match`` the holder's own last etag. One that fails means another took it over:
  ``lost`` is set and the replicator stops shipping.
- **give up**: a put ``if_match`` marking it released (the token stays, so the next
  taker's is larger); never a delete.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from .._heartbeat import Heartbeat
from .._holder import describe_record, holder_name
from .._lease import rewrite_if_ours
from ..errors import ConflictError, NotFoundError, TimedOut
from ..remotes import Remote
from ._records import generations, lease_key

__all__ = ["WriterLease"]

log = logging.getLogger("cargohold.sqlite")


class WriterLease:
    """The right to write one database's history; see the module docstring."""

    def __init__(self, remote: Remote, name: str, *, ttl: float) -> None:
        self.remote = remote
        self.name = name
        self.key = lease_key(name)
        self.ttl = ttl
        self.holder = holder_name()
        self.token = 0
        self.etag: str | None = None
        self._beats = 0
        self._since = 0.0
        self._heartbeat = Heartbeat(
            ttl=ttl, purpose=f"writing SQLite {name!r}", thread_name="cargohold-sqlite-lease"
        )

    @property
    def lost(self) -> bool:
        """Another instance took the lease over while this one held it."""
        return self._heartbeat.lost

    def _content(self, *, released: bool = False) -> bytes:
        self._beats += 1
        return json.dumps(
            {
                "holder": self.holder,
                "token": self.token,
                "beat": self._beats,
                "ttl": self.ttl,
                "since": self._since,
                "released": released,
            }
        ).encode()

    def acquire(self, wait: float) -> int:
        """Take the lease within ``wait`` seconds and return its token. TimedOut, naming
        the holder, when another instance keeps it that long."""
        deadline = time.monotonic() + wait
        seen: tuple[str, float] | None = None  # (etag, monotonic time first seen)
        told = False
        while True:
            try:
                with self.remote.stream(self.key) as stream:
                    etag, current = stream.info.etag, _parse(stream.read_all())
            except NotFoundError:
                etag, current = None, {}
            now = time.monotonic()
            if seen is None or seen[0] != etag:
                seen = (etag or "", now)
            free = etag is None or current.get("released") is True or now - seen[1] > self.ttl
            if free and self._take(etag, current):
                return self.token
            if now >= deadline:
                raise TimedOut(
                    f"SQLite {self.name!r} is written by another instance: {describe_record(current)}",
                    key=self.name,
                    hint="stop that instance (it gives the lease up at once), wait for its "
                    f"lease to expire ({self.ttl:.0f} s after its last renewal), or pass a "
                    "longer wait",
                )
            if not told:
                told = True
                log.info(
                    "cargohold: waiting for the writer of SQLite %r (%s) to stop",
                    self.name,
                    describe_record(current),
                )
            time.sleep(min(1.0, self.ttl / 4, max(0.01, deadline - now)))

    def _take(self, etag: str | None, current: dict[str, Any]) -> bool:
        known = max(generations(self.remote, self.name), default=0)
        self.token = max(int(current.get("token", 0)), known) + 1
        self._since = time.time()
        try:
            if etag is None:
                self.etag = self.remote.put(self.key, self._content(), mode="create").etag
            else:
                self.etag = self.remote.put(self.key, self._content(), if_match=etag).etag
        except (ConflictError, NotFoundError):
            return False  # another taker won
        if etag is not None and current.get("released") is not True:
            log.warning(
                "cargohold: took over writing SQLite %r from %s, which stopped renewing its lease",
                self.name,
                describe_record(current),
            )
        self._heartbeat.start(self._renew)
        return True

    def _renew(self) -> bool:
        etag = rewrite_if_ours(self.remote, self.key, self._content(), self.etag)
        if etag is None:
            return False  # another instance took it over
        self.etag = etag
        return True

    def release(self) -> None:
        """Stop renewing and mark the lease released if it is still ours. Idempotent."""
        self._heartbeat.end(self._give_up)

    def _give_up(self) -> None:
        etag, self.etag = self.etag, None
        if etag is not None:
            # Taken over meanwhile (a conflict): nothing of ours is left to give up.
            with contextlib.suppress(ConflictError, NotFoundError):
                self.remote.put(self.key, self._content(released=True), if_match=etag)


def _parse(data: bytes) -> dict[str, Any]:
    try:
        content = json.loads(data)
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}
