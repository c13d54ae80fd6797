"""Who holds a lease, in words: shared by the remote's lock objects (:mod:`cargohold._lease`)
and the catalog's lease rows (:mod:`cargohold.catalog`), which sit in different layers."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = ["describe_holder", "describe_record", "holder_name"]


def holder_name() -> str:
    """Who takes a lease: ``host:pid:random`` (the random part tells apart two leases of
    one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def describe_holder(holder: str, since: float | None) -> str:
    """``host:pid:random since 2026-12-07 17:02:11 UTC (42 s ago)``: what a waiter logs."""
    if since is None:
        return holder
    moment = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{holder} since {moment} ({max(0.0, time.time() - since):.0f} s ago)"


def describe_record(content: Mapping[str, object]) -> str:
    """:func:`describe_holder` for a lease object's JSON content (``holder`` and
    ``since``); what cannot be read is shown as ``?``."""
    since = content.get("since")
    return describe_holder(
        str(content.get("holder", "?")),
        float(since) if isinstance(since, int | float) and since > 0 else None,
    )
