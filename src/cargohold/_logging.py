"""The ``log_level`` setting applied to cargohold's own loggers, as a well-behaved library
does: never the app's root logger, never a second copy of a line the app already prints.

- Unset (the default): nothing is touched. The ``cargohold`` loggers follow the app's
  logging configuration; with none, Python's last-resort handler prints WARNING and above
  to stderr (the lines that need someone's attention: a waiter on a lease, a write that
  did not reach the remote).
- Set (``CARGOHOLD_LOG_LEVEL`` or ``log_level=``): the level goes on the ``cargohold``
  logger (and so on ``cargohold.memo``, ``cargohold.sync``, ...), and one stderr handler
  is added to it, which prints only while no handler of the app's would get the record
  (none on the root logger). So ``CARGOHOLD_LOG_LEVEL=debug`` shows DEBUG lines in an app
  that configured no logging, and in one that did (``logging.basicConfig``, uvicorn's
  root handler), each line comes out once, through the app's own handlers and format.

The logger is one per process: the latest Hold opened with an explicit level sets it.
"""

from __future__ import annotations

import logging
import sys

from .config import Settings

__all__ = ["apply_log_level"]

_LOGGER = "cargohold"


class _WhenNoOneElse(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to stderr only records no ancestor's handler will take."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        ours = logging.getLogger(_LOGGER)
        if any(handler is not self for handler in ours.handlers):
            return False  # the app put a handler of its own on "cargohold"
        logger: logging.Logger | None = ours.parent if ours.propagate else None
        while logger is not None:
            if logger.handlers:
                return False  # the app's handler prints it (propagation)
            if not logger.propagate:
                break
            logger = logger.parent
        return bool(super().filter(record))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # the stderr of now (pytest and apps swap it)
        super().emit(record)


def apply_log_level(settings: Settings) -> None:
    """Set ``settings.log_level`` on the ``cargohold`` logger if it was given (see the
    module docstring); when it was not, leave logging as the app configured it."""
    if settings.log_level is None:
        return
    logger = logging.getLogger(_LOGGER)
    logger.setLevel(settings.log_level.upper())
    if not any(isinstance(h, _WhenNoOneElse) for h in logger.handlers):
        logger.addHandler(_WhenNoOneElse())
