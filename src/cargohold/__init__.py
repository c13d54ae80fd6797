"""cargohold: storage for apps on ephemeral hosts, fast like a local disk and durable like a bucket."""

from __future__ import annotations

from ._version import __version__
from .config import Settings
from .doctor import DoctorReport, diagnose
from .errors import (
    AlreadyExists,
    CargoholdError,
    ConfigError,
    ConflictError,
    HoldClosed,
    IntegrityError,
    InvalidInput,
    InvalidKey,
    InvalidMetadata,
    NotFoundError,
    PermissionDenied,
    PreconditionFailed,
    RemoteError,
    RemoteUnavailable,
    StorageFull,
    TimedOut,
)
from .fetch import FetchProgress
from .hold import Hold, HoldStatus, HydrateReport, Progress, SyncActivity, open
from .local import Refusal
from .memo import Memo, MemoEntry, MemoFile, MemoProgress, MemoResult, MemoStats
from .persist import PersistedDir
from .remotes import ObjectInfo, Remote, open_remote
from .scratch import Scratch
from .sqlite import SqliteStatus

__all__ = [
    "AlreadyExists",
    "CargoholdError",
    "ConfigError",
    "ConflictError",
    "DoctorReport",
    "FetchProgress",
    "Hold",
    "HoldClosed",
    "HoldStatus",
    "HydrateReport",
    "IntegrityError",
    "InvalidInput",
    "InvalidKey",
    "InvalidMetadata",
    "Memo",
    "MemoEntry",
    "MemoFile",
    "MemoProgress",
    "MemoResult",
    "MemoStats",
    "NotFoundError",
    "ObjectInfo",
    "PermissionDenied",
    "PersistedDir",
    "PreconditionFailed",
    "Progress",
    "Refusal",
    "Remote",
    "RemoteError",
    "RemoteUnavailable",
    "Scratch",
    "Settings",
    "SqliteStatus",
    "StorageFull",
    "SyncActivity",
    "TimedOut",
    "__version__",
    "diagnose",
    "open",
    "open_remote",
]
