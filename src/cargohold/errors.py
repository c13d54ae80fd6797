"""The exceptions cargohold raises, drawn once.

Every error derives from :class:`CargoholdError` and also from the builtin a caller
already catches, so ``except FileNotFoundError`` keeps working around a Hold::

    CargoholdError
    ├── InvalidInput (ValueError)            bad input from the caller; nothing was changed
    │   ├── InvalidKey                       a key broke a rule in cargohold.keys
    │   └── InvalidMetadata                  metadata names or sizes a remote cannot store
    ├── ConfigError (ValueError)             a setting, URL or missing extra; says what to set or install
    ├── NotFoundError (FileNotFoundError)    no object under that key
    ├── ConflictError                        a conditional write lost
    │   ├── AlreadyExists (FileExistsError)  create-only put, but the key exists
    │   └── PreconditionFailed               if-match put, but the object changed
    ├── PermissionDenied (PermissionError)   credentials refused or a path not writable
    ├── RemoteError                          the remote failed in a way not listed here
    │   ├── RemoteUnavailable (ConnectionError)  unreachable after bounded retries
    │   └── CatalogUnavailable (ConnectionError) the shared catalog's database is down;
    │                                        callers fall back to the remote
    ├── TimedOut (TimeoutError)              an operation ran past its deadline
    ├── IntegrityError (OSError)             bytes did not match their digest
    ├── StorageFull (OSError)                a local disk or a configured byte bound is full
    └── HoldClosed (RuntimeError)            the object was used after close()

Extra context lives in attributes: ``.key`` (the key involved, if any), ``.remote`` (the
remote's URL with secrets removed) and ``.hint`` (what to do about it, also part of the
message). The cause, when there is one, is chained with ``raise ... from exc``.

Nothing above ``cargohold.remotes`` catches an SDK's exception types: each remote module
translates its SDK's errors into these in one place.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "CargoholdError",
    "CatalogUnavailable",
    "ConfigError",
    "ConflictError",
    "HoldClosed",
    "IntegrityError",
    "InvalidInput",
    "InvalidKey",
    "InvalidMetadata",
    "NotFoundError",
    "PermissionDenied",
    "PreconditionFailed",
    "RemoteError",
    "RemoteUnavailable",
    "StorageFull",
    "TimedOut",
]


class CargoholdError(Exception):
    """Root of every error cargohold raises.

    ``str(err)`` is one line a user can act on: what went wrong and, when known, the fix.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        remote: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.key = key
        self.remote = remote
        self.hint = hint
        full = f"{message}: {hint}" if hint else message
        # OSError subclasses treat a 2-tuple of args as (errno, strerror); pass one string.
        super().__init__(full)

    def __str__(self) -> str:
        return self.args[0] if self.args else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the keyword-only context when an error crosses a process boundary.
        return (
            _rebuild,
            (type(self), self.message, self.key, self.remote, self.hint),
        )


def _rebuild(
    cls: type[CargoholdError],
    message: str,
    key: str | None,
    remote: str | None,
    hint: str | None,
) -> CargoholdError:
    return cls(message, key=key, remote=remote, hint=hint)


class InvalidInput(CargoholdError, ValueError):
    """The caller passed something cargohold cannot accept. Nothing was changed."""


class InvalidKey(InvalidInput):
    """A key broke one of the rules in :mod:`cargohold.keys`; the message names the rule."""


class InvalidMetadata(InvalidInput):
    """Metadata that a remote cannot store faithfully (a bad name or too many bytes)."""


class ConfigError(CargoholdError, ValueError):
    """A setting, URL or missing optional extra. The message says what to set or install."""


class NotFoundError(CargoholdError, FileNotFoundError):
    """No object under this key."""


class ConflictError(CargoholdError):
    """A conditional write found the object in a state other than the one it required."""


class AlreadyExists(ConflictError, FileExistsError):
    """A create-only write found the key already taken."""


class PreconditionFailed(ConflictError):
    """An if-match write found that the object changed (or vanished) since its etag was read.

    It has no builtin base: no builtin means "someone else changed it first". Catch
    :class:`ConflictError` to handle both kinds of lost race together.
    """


class PermissionDenied(CargoholdError, PermissionError):
    """Credentials were refused, or a path is not writable. The message says which."""


class RemoteError(CargoholdError):
    """The remote failed in a way that has no more specific error here."""


class RemoteUnavailable(RemoteError, ConnectionError):
    """The remote could not be reached, after bounded retries."""


class CatalogUnavailable(RemoteError, ConnectionError):
    """The shared catalog's database cannot be reached. Inside cargohold callers fall back
    to the remote; it reaches users only from catalog-only operations (``rebuild``)."""


class TimedOut(CargoholdError, TimeoutError):
    """An operation did not finish within its deadline."""


class IntegrityError(CargoholdError, OSError):
    """Bytes did not match the digest they were expected to have; nothing was stored."""


class StorageFull(CargoholdError, OSError):
    """A local disk, or a byte bound that cargohold was configured with, is full."""


class HoldClosed(CargoholdError, RuntimeError):
    """An object was used after ``close()``."""


def from_os_error(
    exc: OSError,
    doing: str,
    *,
    key: str | None = None,
    remote: str | None = None,
    fix: str | None = None,
) -> CargoholdError:
    """Translate an error of the local file system (``doing``: "write /data/x", say).

    Used wherever cargohold touches local disks, so a full or read-only disk reads the same
    everywhere: PermissionDenied for a path this user may not write (or a read-only file
    system), StorageFull for a full disk or quota, CargoholdError for the rest, each with
    ``fix`` (what the feature's user should do; a generic fix when None) as its hint. The
    caller chains it: ``raise from_os_error(exc, ...) from exc``.
    """
    import errno

    where = {"key": key, "remote": remote}
    if isinstance(exc, CargoholdError):
        return exc  # already translated
    if isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the file system is read-only" if exc.errno == errno.EROFS else "permission denied"
        return PermissionDenied(
            f"cannot {doing}: {why}", hint=fix or "use a directory this user can write", **where
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(
            f"cannot {doing}: the disk is full",
            hint=fix or "free space or use a larger volume",
            **where,
        )
    return CargoholdError(f"cannot {doing}: {exc.strerror or exc}", hint=fix, **where)
