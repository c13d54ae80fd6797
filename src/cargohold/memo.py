"""The generation cache: compute an expensive result once, share it everywhere.

``memo = hold.memo("sora", version="v2")`` names a namespace; ``memo.get_or_create(inputs,
build)`` returns the entry for ``inputs``, calling ``build(inputs, workdir)`` only when no
entry exists yet. ``@hold.memoize(...)`` does the same for a function's arguments.

Layout in the Hold (and so in the remote)::

    memo/<namespace>/<version>/<ab>/<digest>.json   the entry's record (JSON, see below)
    memo/blobs/<ab>/<sha256>                        result files, stored once per content

and in the data directory, beside the local tier's files::

    memo-files/<digest>/...                         result files handed out (hard links)
    memo-work/<namespace>-<random>/                 a running build's work directory

``digest`` is :func:`cargohold._canonical.entry_digest` of the namespace, version and
inputs. The record holds the inputs, created time, build duration, the kind of result,
its files (name, sha256, size, content type), small values inline, and the build's own
fields. A seed folder (committed with the app) holds entries as
``<seed>/<namespace>/<version>/<digest>/entry.json`` with the files beside it.

Guarantees:

- A hit never calls ``build``. Seed first, then the local tier, then the remote.
- A build that raises or dies leaves nothing visible: files go up before the record, and
  only a record makes an entry. Exceptions are not cached.
- Single-flight: one build per inputs across threads (a lock), and across processes and
  instances sharing the remote (a lease in the remote, see :mod:`cargohold._lease`).
  Waiters poll with backoff, log a WARNING naming the holder and since when, report to
  ``progress`` (:class:`MemoProgress`), and take over if the holder dies.
- Leases end with their holder: a build that raises, and a graceful stop of the Hold
  (SIGTERM, SIGINT, ``close()``), give the lease up at once, even while a build still runs
  on another thread (see :mod:`cargohold._lease` for why); only a killed holder keeps the
  others waiting for ``lease_ttl`` (the ``CARGOHOLD_LEASE_TTL`` setting).
- Results that are files: a build returns a ``Path`` (a file, or a folder of files). It
  writes them into its work directory, :func:`workdir` (also passed to ``build`` as its
  second argument): a folder of cargohold's own under ``memo-work/`` in the data
  directory, on the local tier's disk. Files returned from it are moved into the tier
  (a hard link, no copy); the folder is removed once the result is stored, and when the
  build raises, so nothing is left behind (a killed build's folder is swept later). A
  ``Path`` elsewhere is copied, and the original stays where the build left it.
- A ``str`` result naming an existing file (or, with a separator in it, a folder), alone
  or anywhere in a returned list, tuple or dict, is refused with :class:`InvalidInput`:
  stored as text, a hit after a redeploy would name a file that is gone. Return a
  ``Path``, or pass ``strings="as-text"`` to store such strings as the text they are.
  A ``Path`` inside a list or dict is refused too (only a ``Path`` returned alone is
  stored as files). The check covers the result, not a :class:`MemoResult`'s fields.
- File and directory results are served from ``memo-files/<digest>/``: second names
  (hard links) of the local tier's own files, so they cost no disk beyond the tier's
  ``local_max_bytes`` while the tier keeps those files. **A returned path stays valid for
  at least ``path_grace`` seconds (600 by default) after the call returned it**, even if
  the tier evicts its file meanwhile (the link keeps the bytes), and after that for as
  long as the tier keeps the file; only deleting the entry (:meth:`Memo.delete`, ``ttl``,
  ``max_bytes``) removes it sooner.
  Each call that returns the path extends it; the path is the same for every call, in
  every process sharing the data directory. Once the grace is over, a sweep (after every
  ``SWEEP_EVERY`` new folders, and in :func:`collect_garbage`) removes folders whose
  files only ``memo-files/`` still keeps, and the next call that asks for the entry
  links it anew (reading the file back from the remote if need be), at the same path,
  replacing each file by a rename so that no path handed out ever names a partial file.
  So ``memo-files/`` holds beyond the tier's bound only results handed out within the
  last ``path_grace`` seconds and at most ``SWEEP_EVERY`` others.
- Records and files are written through to the remote (``durable=True``), so another
  instance that sees a record finds its files. With the remote down, a miss is built here
  (without single-flight across instances, which needs the remote or the catalog), the
  entry is kept in the local journal and synced later, and a warning says so.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fcntl
import hashlib
import inspect
import json
import logging
import math
import mimetypes
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._canonical import canonical, digest_header, entry_digest
from ._io import read_whole
from ._keylocks import KeyedLocks
from ._lease import ExclusiveLease, exclusive_lease, require_single_flight
from .errors import (
    CargoholdError,
    CatalogUnavailable,
    InvalidInput,
    NotFoundError,
    RemoteError,
    RemoteUnavailable,
    TimedOut,
    from_os_error,
)
from .hold import provide
from .keys import normalize_key

if TYPE_CHECKING:
    from .hold import Hold

__all__ = [
    "Memo",
    "MemoEntry",
    "MemoFile",
    "MemoProgress",
    "MemoProgressCallback",
    "MemoResult",
    "MemoStats",
    "Strings",
    "workdir",
]

log = logging.getLogger("cargohold.memo")

#: What a memo lookup or lease may meet while the remote (or the catalog) is down.
_UNREACHABLE = (RemoteUnavailable, TimedOut, CatalogUnavailable)

Kind = Literal["bytes", "str", "json", "file", "dir"]
_T = TypeVar("_T")
RECORD_FORMAT = 1
_INLINE_VALUE_MAX = 64 * 1024
#: Seconds an entry found once is served from memory (see ``Memo._hot``).
HOT_SECONDS = 1.0
#: New folders under ``memo-files/`` between two sweeps of it (see the module docstring).
SWEEP_EVERY = 32
#: Seconds after which a staging folder (``.<digest>.*``) is a crashed process's leftover.
_STAGING_STALE = 3600.0
#: Seconds a path a call returned stays valid at least, even once the local tier has
#: evicted its file (``hold.memo(..., path_grace=)``; see the module docstring).
PATH_GRACE = 600.0
#: What a build's ``str`` result may be: ``no-paths`` refuses one naming an existing file
#: (a hit after a redeploy would name a file that is gone), ``as-text`` stores any as text.
Strings = Literal["no-paths", "as-text"]
#: The folder of the build running in this context (see :func:`workdir`).
_WORKDIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "cargohold_memo_workdir", default=None
)


def workdir() -> Path:
    """The work directory of the memo build running in this context: an empty folder of
    cargohold's own, in the Hold's data directory (on the local tier's disk), for a
    ``@hold.memoize`` function (or a ``build``) to write its result files into.

    Files the build returns from it are moved (not copied) into the local tier; the
    folder is removed once the result is stored, and also when the build raises, so
    nothing is left behind. Call it on the build's own thread (or in a context copied
    from it, as ``asyncio`` and ``contextvars.copy_context()`` do); outside a build it
    raises :class:`InvalidInput`."""
    folder = _WORKDIR.get()
    if folder is None:
        raise InvalidInput(
            "cargohold.memo.workdir() is only defined while a memo build runs: call it "
            "inside the @hold.memoize function (or the build given to get_or_create), on "
            "the thread the call runs on"
        )
    return folder


@dataclass(frozen=True, slots=True)
class MemoFile:
    """One file of a result: its name (relative, for a directory), digest, size, type."""

    name: str
    sha256: str
    size: int
    content_type: str


@dataclass(frozen=True)
class MemoResult:
    """What a build may return to add free-form fields (a seed, a model id, a cost) to the
    entry's record: ``MemoResult(path_or_value, fields={"seed": 7})``."""

    value: Any
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoEntry:
    """A cached result and its record. ``hit`` says whether this call built it.

    ``value`` is the result for bytes, str and JSON results; ``path`` is a local file (a
    file result) or folder (a directory result). Treat it as read-only. It stays valid
    for at least the memo's ``path_grace`` seconds (600 by default) after the call that
    returned it, whatever the local tier evicts meanwhile, unless the entry is deleted;
    after that, get the entry again for a path that is valid again (the same path). See
    the module docstring. A seed entry's path is in the seed folder and lasts with it.
    """

    namespace: str
    version: str
    digest: str
    inputs: dict[str, Any]
    created: datetime
    build_seconds: float
    kind: Kind
    files: tuple[MemoFile, ...]
    fields: dict[str, Any]
    hit: bool
    value: Any = None
    path: Path | None = None
    source: Literal["seed", "hold", "built"] = "built"

    @property
    def size(self) -> int:
        """Bytes of the result's files (inline values count their UTF-8 length)."""
        if self.files:
            return sum(f.size for f in self.files)
        return len(json.dumps(self.value).encode()) if self.value is not None else 0

    @property
    def result(self) -> Any:
        """The result as the build returned it: the value, or the local path."""
        return self.path if self.kind in ("file", "dir") else self.value

    def record(self) -> dict[str, Any]:
        """The JSON record (what is stored under the entry's key)."""
        return {
            "format": RECORD_FORMAT,
            "namespace": self.namespace,
            "version": self.version,
            "digest": self.digest,
            "inputs": self.inputs,
            "created": self.created.timestamp(),
            "build_seconds": self.build_seconds,
            "kind": self.kind,
            "files": [dataclasses.asdict(f) for f in self.files],
            "fields": self.fields,
            **(
                {"value": self.value}
                if self.kind == "json" or (self.kind == "str" and not self.files)
                else {}
            ),
        }


@dataclass(frozen=True, slots=True)
class MemoProgress:
    """What a :meth:`Memo.get_or_create` call is doing, for the app to show while its user
    waits. Passed to its ``progress`` callback (:data:`MemoProgressCallback`):

    - ``waiting``: another process or instance builds this entry (``holder`` says who and
      since when); sent at each poll, about every second or two;
    - ``building``: this call builds it, once, before ``build`` runs;
    - ``done``: the entry is here (built, or found after waiting), once.

    A hit found at once sends nothing. ``message`` is a line for a person; ``fraction`` is
    ``1.0`` when done, else None (a build's length is unknown), so a Gradio app can pass
    ``progress=lambda p: gr_progress(p.fraction, desc=p.message)``."""

    stage: Literal["waiting", "building", "done"]
    message: str
    #: Seconds since the call began.
    seconds: float
    holder: str | None = None

    @property
    def fraction(self) -> float | None:
        return 1.0 if self.stage == "done" else None


#: The progress callback :meth:`Memo.get_or_create` accepts. It runs on the caller's thread;
#: an exception it raises ends the call (and gives up the lease, if this call held it).
MemoProgressCallback = Callable[[MemoProgress], None]


@dataclass(frozen=True, slots=True)
class MemoStats:
    namespace: str
    version: str
    count: int
    bytes: int


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise InvalidInput(f"a memo {what} must be a non-empty str without '/', not {name!r}")
    normalize_key(name)  # the key rules: no control characters, no '..', ...
    if what == "namespace" and name == "blobs":
        # memo/blobs/ holds every namespace's result files: a namespace of that name would
        # have its records taken for blobs (garbage collection deletes them, listings hide it).
        raise InvalidInput(
            "'blobs' is reserved: memo/blobs/ holds the result files; choose another namespace"
        )
    return name


class Memo:
    """One namespace at one version of the generation cache. Made by :meth:`Hold.memo`."""

    def __init__(
        self,
        hold: Hold,
        namespace: str,
        *,
        version: str = "1",
        ttl: float | None = None,
        max_bytes: int | None = None,
        seed_dir: str | os.PathLike[str] | None = None,
        lease_ttl: float | None = None,
        strings: Strings = "no-paths",
        path_grace: float | None = None,
    ) -> None:
        """The defaults are resolved here, once: ``lease_ttl`` the Hold's ``lease_ttl``
        setting (a given one is range-checked as that setting), ``path_grace``
        :data:`PATH_GRACE`. ``seed_dir`` None means none (:meth:`Hold.memo` passes the
        ``memo_seed_dir`` setting).

        Raises ConfigError on a remote without conditional writes unless the Hold has a
        catalog: nothing else could keep a build to one instance."""
        if path_grace is None:
            path_grace = PATH_GRACE
        self.hold = hold
        self.namespace = _check_name(namespace, "namespace")
        self.version = _check_name(str(version), "version")
        require_single_flight(hold, f"the memo {self.namespace}/{self.version}")
        if strings not in ("no-paths", "as-text"):
            raise InvalidInput(
                f"a memo's strings must be 'no-paths' (the default) or 'as-text', not {strings!r}"
            )
        #: Whether a ``str`` result naming an existing file is refused (see :data:`Strings`).
        self.strings: Strings = strings
        if (
            isinstance(path_grace, bool)
            or not isinstance(path_grace, int | float)
            or not 0 <= path_grace < math.inf
        ):
            raise InvalidInput(
                f"a memo's path_grace must be a number of seconds >= 0, not {path_grace!r}"
            )
        #: Seconds a returned path stays valid at least (see the module docstring).
        self.path_grace = float(path_grace)
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.seed_dir = Path(seed_dir) if seed_dir is not None else None
        #: Seconds a builder's lease outlives its last renewal (see :mod:`cargohold._lease`).
        self.lease_ttl = (
            hold.settings.lease_ttl
            if lease_ttl is None
            else hold.settings.replace(lease_ttl=lease_ttl).lease_ttl  # range-checked
        )
        self._locks = KeyedLocks()  # one build per entry in this process; kept while in use
        self._offline = threading.local()  # .active: building while the remote is down
        self._files_root = hold.local_dir / "memo-files"
        self._work_root = hold.local_dir / "memo-work"  # builds' folders (see workdir())
        self._header = digest_header(self.namespace, self.version)
        # Entries found recently, kept for HOT_SECONDS: records never change once written,
        # and any delete through this Hold (or, with a catalog, another instance) empties
        # it, so this only delays seeing a deletion made by another process without a
        # catalog by that long.
        self._hot: OrderedDict[str, tuple[MemoEntry, str | None, float]] = OrderedDict()
        self._hot_deletions = hold.deletions
        self._hot_lock = threading.Lock()

    # -- keys -------------------------------------------------------------------------

    def digest(self, inputs: Mapping[str, Any]) -> str:
        """The digest naming ``inputs``' entry (stable across processes and versions)."""
        return entry_digest(self.namespace, self.version, inputs, header=self._header)

    def _record_key(self, digest: str) -> str:
        return f"memo/{self.namespace}/{self.version}/{digest[:2]}/{digest}.json"

    @staticmethod
    def _blob_key(sha256: str) -> str:
        return f"memo/blobs/{sha256[:2]}/{sha256}"

    # -- reading ----------------------------------------------------------------------

    def get(self, inputs: Mapping[str, Any]) -> MemoEntry | None:
        """The entry for ``inputs`` (seed, local tier, then remote), or None."""
        return self._find(self.digest(inputs))

    def _find(self, digest: str) -> MemoEntry | None:
        hot = self._hot_get(digest)
        if hot is not None:
            return hot
        found = self._find_cold(digest)
        if found is not None:
            self._hot_put(found)
        return found

    def _hot_get(self, digest: str) -> MemoEntry | None:
        with self._hot_lock:
            if self._hot_deletions != self.hold.deletions:
                self._hot.clear()
                self._hot_deletions = self.hold.deletions
            cached = self._hot.get(digest)
        if cached is None:
            return None
        entry, blob, expires = cached
        if time.monotonic() > expires or self._expired(entry):
            return None
        if blob is not None:  # a large bytes result: read it from the local tier's file
            try:
                return _with(entry, value=read_whole(blob))
            except FileNotFoundError:
                return None
        if entry.path is not None and not entry.path.exists():
            return None
        return entry

    def _hot_put(self, entry: MemoEntry) -> None:
        blob = None
        if entry.kind == "bytes" and entry.size > _INLINE_VALUE_MAX and entry.source != "seed":
            key = self._blob_key(entry.files[0].sha256)
            blob = str(self.hold.path(key, max_age=math.inf))
            entry = _with(entry, value=None)
        with self._hot_lock:
            self._hot[entry.digest] = (entry, blob, time.monotonic() + HOT_SECONDS)
            self._hot.move_to_end(entry.digest)
            while len(self._hot) > 1024:
                self._hot.popitem(last=False)

    def _find_cold(self, digest: str) -> MemoEntry | None:
        seeded = self._from_seed(digest)
        if seeded is not None:
            return seeded
        try:
            raw = self.hold.get(self._record_key(digest), max_age=math.inf)
        except NotFoundError:
            return None
        record = json.loads(raw)
        entry = self._entry(record, hit=True, source="hold")
        if self._expired(entry):
            self._delete_digest(digest)
            return None
        return self._materialize(entry)

    def _expired(self, entry: MemoEntry) -> bool:
        return self.ttl is not None and time.time() - entry.created.timestamp() > self.ttl

    def _entry(self, record: Mapping[str, Any], *, hit: bool, source: Any) -> MemoEntry:
        return MemoEntry(
            namespace=record["namespace"],
            version=record["version"],
            digest=record["digest"],
            inputs=record["inputs"],
            created=datetime.fromtimestamp(record["created"], UTC),
            build_seconds=record["build_seconds"],
            kind=record["kind"],
            files=tuple(MemoFile(**f) for f in record["files"]),
            fields=record.get("fields", {}),
            hit=hit,
            value=record.get("value"),
            source=source,
        )

    def _materialize(self, entry: MemoEntry) -> MemoEntry:
        """Fill ``value`` (bytes results) or ``path`` (file and directory results)."""
        if entry.kind == "json" or (entry.kind == "str" and not entry.files):
            return entry
        if entry.kind == "str":  # a long text, kept as a file
            blob = self.hold.get(self._blob_key(entry.files[0].sha256), max_age=math.inf)
            return dataclasses.replace(entry, value=blob.decode())
        if entry.kind == "bytes":
            return dataclasses.replace(
                entry, value=self.hold.get(self._blob_key(entry.files[0].sha256), max_age=math.inf)
            )
        folder = self._files_root / entry.digest
        # Kept at least path_grace from now (plus the time the hot cache may hand the
        # path out again without coming here): see _sweep_files.
        keep_until = time.time() + self.path_grace + (HOT_SECONDS if self.path_grace else 0)
        root = self._files_root
        with _files_lock(root, shared=True):  # no sweep removes it meanwhile
            linked = _linked(folder, entry.files)
            if linked:
                _keep(folder, keep_until)
        made = False
        if not linked:
            try:
                staging = self._stage_links(entry)  # may read through: outside the lock
            except _UNREACHABLE:
                with _files_lock(root, shared=True):
                    if not _complete(folder, entry.files):
                        raise
                    # The remote cannot give the tier its file back: serve the bytes
                    # this folder alone still keeps.
                    _keep(folder, keep_until)
            else:
                try:
                    with _files_lock(root, shared=True):
                        made = _install(staging, folder, entry.files)
                        _keep(folder, keep_until)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        if made:
            _count_new_folder(root)  # may sweep: outside the shared lock
        path = folder / entry.files[0].name if entry.kind == "file" else folder
        return dataclasses.replace(entry, path=path)

    def _stage_links(self, entry: MemoEntry) -> Path:
        """A staging folder (``memo-files/.<digest>.<random>/``) with second names (hard
        links) of the local tier's files of ``entry``, read through if the tier has
        evicted them; see :func:`_install`."""
        staging = self._files_root / f".{entry.digest}.{uuid.uuid4().hex}"
        try:
            for f in entry.files:
                target = staging.joinpath(*f.name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                source = self.hold.path(self._blob_key(f.sha256), max_age=math.inf)
                try:
                    os.link(source, target)  # no copy: the local tier's file, a second name
                except OSError:
                    shutil.copyfile(source, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _from_seed(self, digest: str) -> MemoEntry | None:
        if self.seed_dir is None:
            return None
        folder = self.seed_dir / self.namespace / self.version / digest
        try:
            record = json.loads((folder / "entry.json").read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise from_os_error(
                exc,
                f"read the seed entry {folder / 'entry.json'}",
                fix=(
                    "make the seed folder readable by the app's user (Dockerfile: COPY "
                    "--chown=user data/seed data/seed), or unset CARGOHOLD_MEMO_SEED_DIR"
                ),
            ) from exc
        entry = self._entry(record, hit=True, source="seed")
        if entry.kind == "dir":
            return dataclasses.replace(entry, path=folder / "files")
        if not entry.files:
            return entry  # a value inline in the record
        first = folder / entry.files[0].name
        if entry.kind == "file":
            return dataclasses.replace(entry, path=first)
        data = first.read_bytes()
        return dataclasses.replace(entry, value=data.decode() if entry.kind == "str" else data)

    def get_or_create(
        self,
        inputs: Mapping[str, Any],
        build: Callable[[dict[str, Any], Path], Any],
        *,
        progress: MemoProgressCallback | None = None,
    ) -> MemoEntry:
        """The entry for ``inputs``, building it with ``build(inputs, workdir)`` only if no
        instance has. ``workdir`` (also :func:`workdir` during the build) is an empty
        folder of cargohold's own for the build's files: files returned from it are moved
        into the local tier, and it is removed once the result is stored or the build
        raised. The build returns bytes, str, a JSON value, a file or folder ``Path``, or
        a :class:`MemoResult`; a str naming an existing file is refused unless the memo
        has ``strings="as-text"``. See the module docstring for the guarantees.

        ``progress`` is called with a :class:`MemoProgress` while this call waits for
        another instance's build, before its own build, and when the entry is here.
        While it waits on another holder it also logs a WARNING (who holds the lease, and
        since when) after 2 s and every 10 s after."""
        digest = self.digest(inputs)
        try:
            found = self._find(digest)
        except _UNREACHABLE as exc:
            with self._lock(digest):
                return self._build_alone(digest, json.loads(canonical(inputs)), build, exc)
        if found is not None:
            return found
        tell = _Teller(progress, self)
        canonical_inputs = json.loads(canonical(inputs))  # for a build's record
        with self._lock(digest):
            lease: ExclusiveLease | None = None
            try:
                found = self._find(digest)  # built by another thread while we waited
                if found is not None:
                    return tell.done(found)
                lease = self._lease(digest)
                waited = self._acquire_or_wait(lease, digest, tell)
                if waited is not None:
                    return tell.done(waited)
                found = self._find(digest)  # finished between our look and our lease
                if found is not None:
                    lease.release()
                    return tell.done(found)
            except _UNREACHABLE as exc:
                if lease is not None:
                    lease.release()
                return self._build_alone(digest, canonical_inputs, build, exc)
            except BaseException:
                # Anything else (a refused read, a corrupt record, Ctrl-C): never leave the
                # lease held and renewed, or other instances would wait on it for good.
                if lease is not None:
                    lease.release()
                raise
            try:
                tell("building", f"building {self.namespace}/{self.version}/{digest[:12]}")
                return tell.done(self._build(digest, canonical_inputs, build))
            finally:
                lease.release()  # also when the build raises: the next caller may start

    def _build_alone(
        self,
        digest: str,
        inputs: dict[str, Any],
        build: Callable[[dict[str, Any], Path], Any],
        exc: CargoholdError,
    ) -> MemoEntry:
        """The remote (or the catalog) cannot say whether another instance built this, nor
        lend a lease: build here rather than fail (the caller holds the thread lock), keep
        the entry in the local journal, and let the syncer send it when the remote is back.
        Nothing waits on the remote meanwhile: it has just failed."""
        hot = self._hot_get(digest)  # built by another thread while this one waited
        if hot is not None:
            return hot
        log.warning(
            "cargohold: memo %s/%s/%s: the remote or the catalog cannot be asked (%s); building it here "
            "without other instances' single-flight, and keeping it locally until the "
            "remote is back",
            self.namespace,
            self.version,
            digest[:12],
            exc,
        )
        outer = getattr(self._offline, "active", False)  # a build may call its own memo
        self._offline.active = True
        try:
            return self._build(digest, inputs, build)
        finally:
            self._offline.active = outer

    def _lease(self, digest: str) -> ExclusiveLease:
        """In the catalog's database when there is one (its clock decides expiry), else a
        lock object in the remote."""
        name = f"leases/memo/{self.namespace}/{self.version}/{digest}"
        purpose = f"memo {self.namespace}/{self.version}/{digest[:12]}"
        return exclusive_lease(self.hold, name, ttl=self.lease_ttl, purpose=purpose)

    def _lock(self, digest: str) -> contextlib.AbstractContextManager[None]:
        return self._locks.hold(digest)

    def _acquire_or_wait(
        self, lease: ExclusiveLease, digest: str, tell: _Teller
    ) -> MemoEntry | None:
        """Take the lease (None: build now) or wait for its holder's entry (returned)."""
        delay = 0.1
        started = time.monotonic()
        next_log = started + 2  # a short wait is normal; a longer one is said, every 10 s
        next_tell = started + 0.5
        holder: str | None = None
        while True:
            if lease.try_acquire():
                return None
            found = self._find(digest)
            if found is not None:
                return found
            now = time.monotonic()
            if now >= next_log:
                holder = lease.holder_info()
                log.warning(
                    "cargohold: waiting %.0fs for %s, being built by %s; if that process "
                    "was killed, its lease expires %gs after its last renewal "
                    "(CARGOHOLD_LEASE_TTL), and this call then builds it",
                    now - started,
                    lease.purpose,
                    holder,
                    self.lease_ttl,
                )
                next_log = now + 10
            if tell.wanted and now >= next_tell:
                holder = holder or lease.holder_info()
                tell(
                    "waiting",
                    f"waiting {now - started:.0f}s for {lease.purpose}, being built by {holder}",
                    holder=holder,
                )
                next_tell = now + 1
            time.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 1.5, 2.0)

    def _build(
        self, digest: str, inputs: dict[str, Any], build: Callable[[dict[str, Any], Path], Any]
    ) -> MemoEntry:
        with _work_folder(self._work_root, self.namespace) as work:
            token = _WORKDIR.set(work)
            try:
                started = time.monotonic()
                result = build(dict(inputs), work)
                seconds = time.monotonic() - started
            finally:
                _WORKDIR.reset(token)
            fields: dict[str, Any] = {}
            if isinstance(result, MemoResult):
                fields = json.loads(canonical(dict(result.fields)))
                result = result.value
            kind, value, files = self._store_result(result, work)
            entry = MemoEntry(
                namespace=self.namespace,
                version=self.version,
                digest=digest,
                inputs=inputs,
                created=datetime.now(UTC),
                build_seconds=seconds,
                kind=kind,
                files=tuple(files),
                fields=fields,
                hit=False,
                value=value if kind in ("str", "json") else None,
            )
            # The record last: until it lands, the entry does not exist anywhere.
            self._durable_put(
                self._record_key(digest),
                json.dumps(entry.record(), ensure_ascii=False).encode(),
                metadata={"namespace": self.namespace, "version": self.version},
            )
        if self.max_bytes is not None:
            self._keep_bound()
        materialized = self._materialize(entry)
        self._hot_put(dataclasses.replace(materialized, hit=True, source="hold"))
        return dataclasses.replace(materialized, hit=False, source="built")

    def _store_result(self, result: Any, work: Path) -> tuple[Kind, Any, list[MemoFile]]:
        if isinstance(result, bytes | bytearray | memoryview):
            return "bytes", None, [self._store_blob("value", bytes(result))]
        if isinstance(result, os.PathLike):
            path = Path(result)
            if path.is_dir():
                files = [
                    self._store_blob(p.relative_to(path).as_posix(), p, move=_inside(p, work))
                    for p in sorted(path.rglob("*"))
                    if p.is_file()
                ]
                return "dir", None, files
            if path.is_file():
                return "file", None, [self._store_blob(path.name, path, move=_inside(path, work))]
            raise InvalidInput(f"the build returned the path {str(path)!r}, which does not exist")
        if self.strings == "no-paths":
            _refuse_file_names(result, "the result")
        if isinstance(result, str):
            encoded_text = result.encode()
            if len(encoded_text) <= _INLINE_VALUE_MAX:
                return "str", result, []
            return "str", None, [self._store_blob("value.txt", encoded_text)]
        try:
            encoded = canonical({"v": result})
        except InvalidInput as exc:
            raise InvalidInput(
                f"the build returned a {type(result).__name__}: return bytes, str, a JSON "
                f"value, a file or folder Path, or a MemoResult ({exc.message})"
            ) from None
        if len(encoded) > _INLINE_VALUE_MAX:
            raise InvalidInput(
                "the build returned a value over 64 KiB as JSON: write it to a file in "
                "cargohold.memo.workdir() and return its Path"
            )
        return ("str" if isinstance(result, str) else "json"), result, []

    def _store_blob(self, name: str, data: bytes | Path, *, move: bool = False) -> MemoFile:
        """Store one file of a result once per content; ``move``: ``data`` is a file in
        the build's work directory, given to the Hold rather than copied."""
        digest = hashlib.sha256()
        if isinstance(data, bytes):
            digest.update(data)
            size = len(data)
        else:
            size = 0
            with data.open("rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
        sha = digest.hexdigest()
        content_type = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        key = self._blob_key(sha)
        transfer: Literal["copy", "move"] = "move" if move else "copy"
        if getattr(self._offline, "active", False):
            # Same bytes: harmless.
            self._durable_put(key, data, content_type=content_type, transfer=transfer)
            return MemoFile(name=name, sha256=sha, size=size, content_type=content_type)
        try:
            self.hold.head(key, max_age=math.inf)  # same bytes stored once
        except (NotFoundError, *_UNREACHABLE):
            # Unreachable: the remote went down during the build; keep the result anyway.
            self._durable_put(key, data, content_type=content_type, transfer=transfer)
        return MemoFile(name=name, sha256=sha, size=size, content_type=content_type)

    def _durable_put(self, key: str, data: bytes | Path, **kwargs: Any) -> None:
        if getattr(self._offline, "active", False):  # the remote is down: the journal keeps it
            self.hold.put(key, data, **kwargs)
            return
        try:
            self.hold.put(key, data, durable=True, **kwargs)
        except (TimedOut, RemoteError) as exc:
            # Kept in the local journal; the syncer sends it when the remote is back.
            log.warning("cargohold: %s is stored locally but not on the remote yet: %s", key, exc)

    # -- listing, stats, deleting -------------------------------------------------------

    def _records(self) -> Iterator[MemoEntry]:
        prefix = f"memo/{self.namespace}/{self.version}/"
        for info in self.hold.list(prefix):
            if info.key.endswith(".json"):
                with contextlib.suppress(NotFoundError, ValueError, KeyError):
                    record = json.loads(self.hold.get(info.key, max_age=math.inf))
                    yield self._entry(record, hit=True, source="hold")

    def entries(
        self,
        where: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
        before: datetime | None = None,
    ) -> list[MemoEntry]:
        """Entries whose inputs (or fields) match every item of ``where``, newest first.
        Page with ``limit`` and ``before`` (the ``created`` of the last entry seen).
        With a catalog this is one index query; without, the records are read."""
        catalog = self.hold.catalog
        if catalog is not None and catalog.available:
            try:
                records = catalog.docs(
                    f"memo/{self.namespace}/{self.version}/",
                    where=where,
                    limit=limit,
                    before=before,
                )
                return [self._entry(record, hit=True, source="hold") for record in records]
            except CatalogUnavailable:
                pass  # the catalog warned once; read the records instead
        matches = []
        for entry in self._records():
            if where and any(
                entry.inputs.get(name, entry.fields.get(name)) != value
                for name, value in where.items()
            ):
                continue
            if before is not None and entry.created >= before:
                continue
            matches.append(entry)
        matches.sort(key=lambda e: e.created, reverse=True)
        return matches[:limit] if limit is not None else matches

    def stats(self) -> MemoStats:
        """How many entries this namespace holds at this version, and their bytes."""
        count = size = 0
        for entry in self._records():
            count += 1
            size += entry.size
        return MemoStats(self.namespace, self.version, count, size)

    def delete(self, inputs: Mapping[str, Any]) -> bool:
        """Remove the entry for ``inputs``. True if there was one. Its files stay until
        :meth:`collect_garbage` finds no entry uses them."""
        return self._delete_digest(self.digest(inputs))

    def _delete_digest(self, digest: str) -> bool:
        with self._hot_lock:
            self._hot.pop(digest, None)
        key = self._record_key(digest)
        try:
            self.hold.head(key, max_age=math.inf)
        except NotFoundError:
            return False
        self.hold.delete(key)
        shutil.rmtree(self._files_root / digest, ignore_errors=True)
        return True

    def _keep_bound(self) -> None:
        """Delete the oldest entries until the namespace is under ``max_bytes``."""
        assert self.max_bytes is not None
        entries = self.entries()
        total = sum(e.size for e in entries)
        for entry in reversed(entries):  # oldest first
            if total <= self.max_bytes:
                break
            self._delete_digest(entry.digest)
            total -= entry.size

    def prune_versions(self) -> int:
        """Delete the entries of every other version of this namespace (after a version
        bump, once no instance runs the old version). Returns how many."""
        removed = 0
        for info in list(self.hold.list(f"memo/{self.namespace}/")):
            parts = info.key.split("/")
            if len(parts) == 5 and parts[2] != self.version and info.key.endswith(".json"):
                self.hold.delete(info.key)
                removed += 1
        return removed

    # -- seeds ------------------------------------------------------------------------

    def export(self, to: str | os.PathLike[str], where: Mapping[str, Any] | None = None) -> int:
        """Write the matching entries into the seed folder ``to``, in the layout
        ``<to>/<namespace>/<version>/<digest>/entry.json`` plus the result's files (a
        folder result under ``files/``), ready to commit. Returns how many were written."""
        try:
            return self._export(Path(to), where)
        except CargoholdError:
            raise
        except OSError as exc:
            raise from_os_error(
                exc,
                f"export memo entries into {to}",
                fix="export into a folder this user can write, on a disk with room",
            ) from exc

    def _export(self, to: Path, where: Mapping[str, Any] | None) -> int:
        written = 0
        for entry in self.entries(where):
            folder = to / self.namespace / self.version / entry.digest
            staging = folder.with_name(f".{entry.digest}.{uuid.uuid4().hex}")
            staging.mkdir(parents=True)
            base = staging / "files" if entry.kind == "dir" else staging
            for f in entry.files:
                target = base.joinpath(*f.name.split("/"))
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.hold.get(self._blob_key(f.sha256), max_age=math.inf))
            record = json.dumps(entry.record(), indent=2, ensure_ascii=False)
            (staging / "entry.json").write_text(record)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
            written += 1
        return written


class _Teller:
    """Sends one get_or_create call's :class:`MemoProgress` to its callback, if any."""

    def __init__(self, callback: MemoProgressCallback | None, memo: Memo) -> None:
        self.wanted = callback is not None
        self._callback = callback
        self._memo = memo
        self._started = time.monotonic()

    def __call__(
        self,
        stage: Literal["waiting", "building", "done"],
        message: str,
        *,
        holder: str | None = None,
    ) -> None:
        if self._callback is not None:
            self._callback(MemoProgress(stage, message, time.monotonic() - self._started, holder))

    def done(self, entry: MemoEntry) -> MemoEntry:
        memo = self._memo
        self("done", f"{memo.namespace}/{memo.version}/{entry.digest[:12]} is ready")
        return entry


@contextlib.contextmanager
def _work_folder(root: Path, namespace: str) -> Iterator[Path]:
    """A build's work directory under ``root`` (``memo-work/`` in the data directory, on
    the local tier's disk so its files move in by a link), removed on exit whatever
    happened. The build holds a lock on it, so a sweep tells a dead process's leftover
    from a live build however long it runs (see :func:`_sweep_workdirs`)."""
    try:
        root.mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{namespace[:40]}-", dir=root))
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise from_os_error(
            exc,
            f"make a build folder in {root}",
            fix="free space in the data directory, or set CARGOHOLD_DATA_DIR to a "
            "writable directory on a disk with room",
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def _sweep_workdirs(root: Path) -> None:
    """Remove the work directories under ``root`` that no live build holds (left by a
    process that was killed mid-build)."""
    try:
        folders = list(root.iterdir())
    except FileNotFoundError:
        return
    recent = time.time() - 60  # made, but maybe not locked yet
    for folder in folders:
        try:
            if folder.stat().st_mtime > recent:
                continue
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a build holds it
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


def _inside(path: Path, work: Path) -> bool:
    """Whether ``path`` is a regular file of the build's work directory (moved in, not
    copied). A symlink is copied: its target may be the app's own file."""
    try:
        return not path.is_symlink() and path.resolve().is_relative_to(work.resolve())
    except OSError:
        return False


def _names_a_file(text: str) -> bool:
    """Whether ``text`` is the name (absolute, or relative to the working directory) of an
    existing file or folder."""
    if not text or len(text) > 4096 or "\0" in text or "\n" in text:
        return False
    try:
        # A folder only with a separator in its name: "." or a word naming a folder of
        # the working directory is much more likely text.
        path = Path(text)
        return path.is_file() or (os.sep in text and path.is_dir())
    except (OSError, ValueError):
        return False


def _refuse_file_names(value: Any, where: str) -> None:
    """Refuse a result (or a str, list or dict in it) that is, or holds, the name of an
    existing file as a str, or a Path inside a list or dict: stored as text, a hit after
    a redeploy would name a file that is gone (see :data:`Strings`)."""
    if isinstance(value, str):
        if _names_a_file(value):
            raise InvalidInput(
                f"the build returned {value!r} as {where}: a str is stored as text, and "
                f"this one names a file here, which a hit after a restart or on another "
                f"instance would not find. Return pathlib.Path({value!r}) to store the "
                f"file itself (write it into cargohold.memo.workdir() and it is moved, "
                f"not copied), or pass strings='as-text' to hold.memo() or "
                f"hold.memoize() to store such strings as text"
            )
    elif isinstance(value, os.PathLike) and where != "the result":
        raise InvalidInput(
            f"the build returned a Path as {where}: files are stored only for a Path "
            f"returned alone (a file or a folder). Return one folder Path holding the "
            f"files (written into cargohold.memo.workdir()), and put the other values in "
            f"MemoResult(path, fields={{...}})"
        )
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _refuse_file_names(item, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_file_names(item, f"{where}[{key!r}]")


def _install(staging: Path, folder: Path, files: tuple[MemoFile, ...]) -> bool:
    """Make ``folder`` (``memo-files/<digest>/``) hold the staged files; True if this
    made it. A folder that is there already (its files evicted from the tier, or some
    missing) has each file replaced in place, by a rename: a path handed out earlier
    names a complete file at every moment."""
    if folder.exists():
        for f in files:
            parts = f.name.split("/")
            folder.joinpath(*parts).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging.joinpath(*parts), folder.joinpath(*parts))
        return False
    try:
        staging.rename(folder)
    except OSError:
        return False  # another thread or process got there first
    return True


def _linked(folder: Path, files: tuple[MemoFile, ...]) -> bool:
    """Whether ``folder`` has every file, each still a name of a local tier's file (more
    than one link: this name alone would keep evicted bytes outside the tier's bound)."""
    try:
        return all(os.lstat(folder.joinpath(*f.name.split("/"))).st_nlink > 1 for f in files)
    except OSError:
        return False


def _complete(folder: Path, files: tuple[MemoFile, ...]) -> bool:
    """Whether ``folder`` has every file of the result (linked or not)."""
    return all(folder.joinpath(*f.name.split("/")).is_file() for f in files)


_new_folders: dict[Path, int] = {}  # by memo-files root: folders made since its last sweep
_new_folders_lock = threading.Lock()


def _count_new_folder(root: Path) -> None:
    with _new_folders_lock:
        count = _new_folders.get(root, 0) + 1
        _new_folders[root] = 0 if count >= SWEEP_EVERY else count
    if count >= SWEEP_EVERY:
        _sweep_files(root)


def _sweep_files(root: Path) -> int:
    """Remove the folders under ``root`` (a ``memo-files/``) holding a file that the local
    tier no longer has (its only name is here) once no call's ``path_grace`` covers them
    (their mtime, set by ``_keep``, is past), staging folders a crashed process left, and
    dead builds' work directories. Returns how many result folders were removed; a later
    lookup links them again, at the same path."""
    _sweep_workdirs(root.parent / "memo-work")
    try:
        folders = list(root.iterdir())
    except FileNotFoundError:
        return 0
    removed = 0
    now = time.time()
    stale = now - _STAGING_STALE
    for folder in folders:
        name = folder.name
        try:
            if name.startswith("."):
                if folder.is_dir() and folder.stat().st_mtime < stale:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            if folder.stat().st_mtime >= now or not _orphaned(folder):
                continue
            with _files_lock(root, shared=False) as locked:  # no lookup is handing it out
                if locked and folder.stat().st_mtime < time.time() and _orphaned(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
        except FileNotFoundError:
            continue  # removed meanwhile (by another thread or process)
    return removed


def _keep(folder: Path, until: float) -> None:
    """Mark ``folder`` as handed out: no sweep removes it before ``until``. Its mtime
    holds that moment (in the future), so every process sharing the data directory sees
    it, and a later call's shorter ``path_grace`` never shortens an earlier promise."""
    with contextlib.suppress(OSError):
        if os.stat(folder).st_mtime < until:
            os.utime(folder, (until, until))


@contextlib.contextmanager
def _files_lock(root: Path, *, shared: bool) -> Iterator[bool]:
    """``memo-files/.lock``: lookups handing a folder out (shared, waiting: each holds it
    for a few file operations) against a sweep's removal (exclusive, not waiting: a busy
    folder is left to the next sweep, and no lookup waits behind a sweep), across
    threads and processes (a lock per open file: each use opens its own). Yields
    whether the lock is held."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield shared  # a read-only or full disk: the folder's own errors will say so
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def _orphaned(folder: Path) -> bool:
    for parent, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                if (Path(parent) / name).lstat().st_nlink <= 1:
                    return True
    return False


def collect_garbage(hold: Hold, *, older_than: float = 3600.0) -> int:
    """Delete result files no entry of any namespace or version uses any more (and that
    are older than ``older_than`` seconds, so a build in progress keeps its files).
    Returns how many were deleted. Also sweeps ``memo-files/`` of what the local tier
    evicted (see the module docstring), whatever the remote answers.

    Never deletes on an incomplete view: if any record cannot be read (the remote fails
    or times out, a record is corrupt), nothing is deleted and the error is raised, naming
    the record in ``.key``: the same class as the read's error (``RemoteUnavailable`` on a
    flaky network), or ``RemoteError`` for a record that is not a record. A record deleted
    between the listing and its read claims nothing, and is skipped.
    """
    try:
        return _collect_garbage(hold, older_than)
    finally:
        _sweep_files(hold.local_dir / "memo-files")


def _collect_garbage(hold: Hold, older_than: float) -> int:
    used: set[str] = set()
    blobs: list[tuple[str, datetime]] = []
    unreadable: list[tuple[str, BaseException]] = []
    for info in hold.list("memo/"):
        if info.key.startswith("memo/blobs/"):
            blobs.append((info.key, info.last_modified))
        elif info.key.endswith(".json"):
            try:
                record = json.loads(hold.get(info.key, max_age=math.inf))
                used.update(f["sha256"] for f in record["files"])
            except NotFoundError:
                continue  # deleted since it was listed
            except (CargoholdError, ValueError, KeyError, TypeError) as exc:
                unreadable.append((info.key, exc))
    if unreadable:
        raise _incomplete_view(hold, unreadable)
    cutoff = time.time() - older_than
    removed = 0
    for key, modified in blobs:
        if key.rsplit("/", 1)[-1] not in used and modified.timestamp() < cutoff:
            hold.delete(key)
            removed += 1
    return removed


def _incomplete_view(hold: Hold, unreadable: list[tuple[str, BaseException]]) -> CargoholdError:
    """The error for a collection that read not every record: it deleted nothing."""
    key, exc = unreadable[0]
    more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
    message = (
        f"memo garbage collection deleted nothing: the record {key!r}{more} could not be "
        f"read ({exc}), so which result files are in use is unknown"
    )
    if isinstance(exc, CargoholdError):
        hint = "run it again once the remote answers" if isinstance(exc, _UNREACHABLE) else None
        error = type(exc)(message, key=key, remote=hold.remote.url, hint=hint)
    else:
        error = RemoteError(
            message,
            key=key,
            remote=hold.remote.url,
            hint="the record is not a memo record: delete it (or restore it) and run gc again",
        )
    error.__cause__ = exc
    return error


def _with(entry: MemoEntry, **changes: Any) -> MemoEntry:
    """``dataclasses.replace(entry, **changes)`` at a tenth of its cost (it binds every
    field through ``__init__``): a hit makes one per call. MemoEntry has no checks in
    ``__init__`` to skip."""
    copied = object.__new__(MemoEntry)
    copied.__dict__.update(entry.__dict__, **changes)
    return copied


def memoize(
    hold: Hold,
    namespace: str | None,
    *,
    ignore: Iterable[str] = (),
    progress: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """The decorator behind :meth:`Hold.memoize`: arguments (bound to the function's
    signature, defaults filled in) are the inputs; the function's result is the value.

    ``ignore``: parameters left out of the inputs (as joblib.Memory's ``ignore``): a
    logger, a verbosity flag. ``progress``: a parameter whose argument is told what the
    call is doing, as ``arg(fraction, desc=message)`` (a :class:`MemoProgress` turned
    into the call Gradio's ``gr.Progress`` and tqdm-like callables take; ``fraction`` is
    None until done); it is left out of the inputs too. A parameter whose default is a
    Gradio ``Progress`` (the way Gradio injects one) is taken as ``progress`` without
    being named."""

    def decorate(fn: Callable[..., _T]) -> Callable[..., _T]:
        # Through hold.memo: its defaults (the memo_seed_dir setting, ...) apply here too.
        memo = hold.memo(namespace or fn.__qualname__.replace("<", "").replace(">", ""), **options)
        signature = inspect.signature(fn)
        reporter = progress or _gradio_progress_parameter(signature)
        ignored = [ignore] if isinstance(ignore, str) else list(ignore)  # one name, or names
        left_out = {*ignored, *([reporter] if reporter else [])}
        unknown = sorted(left_out - set(signature.parameters))
        if unknown:
            raise InvalidInput(
                f"memoize: {fn.__qualname__} has no parameter {', '.join(map(repr, unknown))}",
                hint="ignore= and progress= name parameters of the decorated function",
            )
        bind = _binder(signature)

        def wrapper(*args: Any, **kwargs: Any) -> _T:
            inputs = bind(args, kwargs)
            told = inputs.get(reporter) if reporter else None
            for name in left_out:
                inputs.pop(name, None)
            entry = memo.get_or_create(
                inputs,
                lambda _inputs, _work: fn(*args, **kwargs),
                progress=None if told is None else _tell_progress(told),
            )
            return entry.result  # type: ignore[no-any-return]

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        wrapper.__doc__ = fn.__doc__
        wrapper.__name__ = fn.__name__
        wrapper.memo = memo  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _gradio_progress_parameter(signature: inspect.Signature) -> str | None:
    """The parameter whose default is a ``gradio.Progress``, found without importing
    Gradio (only ``cargohold.gradio`` does)."""
    for name, parameter in signature.parameters.items():
        kind = type(parameter.default)
        if kind.__name__ == "Progress" and kind.__module__.split(".")[0] == "gradio":
            return name
    return None


def _tell_progress(told: Any) -> MemoProgressCallback:
    def tell(update: MemoProgress) -> None:
        told(update.fraction, desc=update.message)

    return tell


def _binder(
    signature: inspect.Signature,
) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """Arguments as a dict of parameter names (defaults filled in), as
    ``Signature.bind`` gives, but without its cost on every call for plain signatures."""
    params = list(signature.parameters.values())
    plain = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)

    def slow(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    if not plain:
        return slow
    positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    names = {p.name for p in params}
    defaults = {p.name: p.default for p in params if p.default is not p.empty}

    def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(positional) or not names.issuperset(kwargs):
            return slow(args, kwargs)  # let inspect raise the usual TypeError
        bound = dict(zip(positional, args, strict=False))
        if any(k in bound for k in kwargs):
            return slow(args, kwargs)
        bound.update(kwargs)
        for name, value in defaults.items():
            bound.setdefault(name, value)
        if len(bound) != len(params):
            return slow(args, kwargs)  # a missing argument: the usual TypeError
        return bound

    return fast


def versions(hold: Hold, namespace: str) -> list[str]:
    """The versions of ``namespace`` with at least one entry, sorted."""
    _check_name(namespace, "namespace")
    found: set[str] = set()
    for info in hold.list(f"memo/{namespace}/"):
        parts = info.key.split("/")
        if len(parts) == 5 and info.key.endswith(".json"):
            found.add(parts[2])
    return sorted(found)


def list_entries(
    hold: Hold,
    namespace: str,
    *,
    version: str | None = None,
    where: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> list[MemoEntry]:
    """A namespace's entries, newest first: what ``cargohold memo ls`` and
    ``GET /api/memo/{namespace}`` show. With ``version`` those of that version (as
    :meth:`Memo.entries`); without, those of **every** version that has entries, each
    labelled by its ``.version``, so a listing never looks empty while entries exist
    under a version the caller did not name."""
    if version is not None:
        return Memo(hold, namespace, version=version).entries(where, limit=limit)
    found = [
        entry
        for each in versions(hold, namespace)
        for entry in Memo(hold, namespace, version=each).entries(where, limit=limit)
    ]
    found.sort(key=lambda e: e.created, reverse=True)
    return found[:limit] if limit is not None else found


def namespaces(hold: Hold) -> list[tuple[str, str]]:
    """Every (namespace, version) with at least one entry, sorted."""
    found: set[tuple[str, str]] = set()
    for info in hold.list("memo/"):
        parts = info.key.split("/")
        if len(parts) == 5 and parts[1] != "blobs" and info.key.endswith(".json"):
            found.add((parts[1], parts[2]))
    return sorted(found)


def _hold_memo(
    hold: Hold, namespace: str, *, seed_dir: str | os.PathLike[str] | None = None, **options: Any
) -> Memo:
    """The behaviour behind :meth:`Hold.memo`: a :class:`Memo` whose seed folder defaults
    to the ``memo_seed_dir`` setting (one made directly, to list entries, has none)."""
    return Memo(
        hold,
        namespace,
        seed_dir=seed_dir if seed_dir is not None else hold.settings.memo_seed_dir,
        **options,
    )


provide("memo", _hold_memo)
provide("memoize", memoize)
