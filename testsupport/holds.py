"""Helpers for tests that open Holds."""

from __future__ import annotations

import uuid

from cargohold import Hold
from cargohold.keys import internal_key

__all__ = ["settled"]


def settled(hold: Hold) -> Hold:
    """Return ``hold`` once its syncer has done its start-up upkeep.

    That upkeep (``LocalTier.remove_orphans``) can remove the ``named/`` link that
    ``hold.path()`` (and so ``hold.fetch()``) made a moment earlier, if the link appeared
    after the upkeep read which files are in use: the returned path then vanishes. Tests that
    keep a returned path open their Holds through this until that is fixed in local.py.
    A flushed write is one the syncer sent, and it sends only after its upkeep.
    """
    key = internal_key(f"settle/{uuid.uuid4().hex}")
    hold.put(key, b"")
    hold.flush()
    hold.delete(key)
    hold.flush()
    return hold
