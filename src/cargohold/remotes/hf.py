"""``hf://datasets/OWNER/NAME[/PREFIX]`` - a Hugging Face dataset repo, written in commits.

Built on ``huggingface_hub`` (``pip install 'cargohold[hf]'``); this is the only module
that imports it, and :meth:`HfRemote._error` is the one place its errors are translated.
See docs/huggingface.md for the user's view.

URL: ``hf://datasets/OWNER/NAME[@BRANCH][/PREFIX][?revision=BRANCH&endpoint=URL]``. The
token is ``HF_TOKEN`` (else huggingface_hub's login), never logged; the endpoint is the
``endpoint`` parameter, else ``HF_ENDPOINT``, else https://huggingface.co. Both are read
when the remote is built, not when huggingface_hub was imported.

Writes. Every write is a commit, and commits are what the Hub rations, so:

- One commit per batch: ``apply`` (the syncer's journal batch), ``put_many`` and
  ``delete_many`` become commits of about 100 files each; single ``put`` and ``delete``
  calls made at once from many threads are gathered into shared commits too (a group
  commit: one thread commits what the others queued). Deletes are real deletions.
- Conditional deletes (``delete(key, if_match=etag)``, ``conditional_deletes``): planned
  only if the key has that etag at the commit's parent, so with ``parent_commit`` a
  delete decided on one version never removes a newer one another instance committed
  (else PreconditionFailed). The syncer sends its deletions this way.
- Compare-and-swap: every commit names its parent (``parent_commit``). The state a commit
  was planned on (which keys exist, with which etags) is read at that parent; if another
  writer moved the branch since, the Hub answers 412 and the batch is planned again on
  the new head. ``mode="create"`` and ``if_match`` are checked against that state, so they
  are as strong as on S3: of racing writers, in any number of processes, exactly one wins.
- Commit budget: a token bucket (:class:`CommitBudget`, ``hf_commits_per_hour``, with a
  burst of ten minutes' worth) spends one token per commit. While a commit waits for a
  token, writes keep queueing, so commits grow when the budget is short. A 429 answer
  pauses commits for as long as its ``RateLimit``/``Retry-After`` headers (or message) say,
  and slows the rate to what ``RateLimit-Policy`` allows (or halves it) for an hour.
  ``stats()`` shows the budget (``Hold.status().remote_stats``).
- Large files go through huggingface_hub's own upload path: Xet when ``hf_xet`` is
  installed, else Git LFS. ``HF_HUB_DISABLE_XET=1`` (read when the remote is built)
  selects plain Git LFS even if huggingface_hub was imported before it was set: the Hub
  keeps that path for legacy clients, and it is what a Hub stand-in or mirror can serve.

Layout. The Hub caps a folder at 10,000 entries, so keys are not stored at their own
path. Each key segment ``s`` goes into a shard folder named by the first byte of
``sha256(s)`` in hex (``XY``): files in ``XY/``, folders in ``XY.d/``, metadata records in
``XY.m/``. ``outputs/take_1.png`` is stored as ``PREFIX/7b.d/outputs/6f/take_1.png``.
Every folder then holds at most 768 shard folders, and a shard folder a 256th of one
folder's keys: no folder reaches 10,000 entries until a single folder of keys holds about
2.5 million, far past the 100,000 files the Hub recommends per repo. A key may also be
the folder of other keys (``a`` and ``a/b``). Files not laid out this way (a README, say)
are ignored.

Metadata and content types (the Hub stores neither) live in a small JSON record beside
the object, written in the same commit, only when there is metadata or the content type
is not the one guessed from the key. The record names the digests of the bytes it
describes, so a file replaced by another tool is not given stale metadata.

Reads, on huggingface_hub's own calls: the branch head is ``HfApi.dataset_info``, the
state of keys ``HfApi.get_paths_info`` (in chunks of this module's), listings
``HfApi.list_repo_tree``, the token's role ``HfApi.whoami``. Bytes come from the resolve
URL through a request of this module's own: no HfApi call returns bytes in memory or a
range (``hf_hub_download`` writes whole files into a cache folder; ``HfFileSystem`` would
add a second cache and its own retries to every read). ``get`` reads the resolve URL
(with a ``Range`` header for ranges). ``head`` and ``stream`` use paths-info (with each
path's last commit, so ``last_modified`` is exact) and read at that commit, so bytes and
info are always of one version. Batches (``fetch_many``, ``download_many``) and ``list``
read at one commit of the branch; ``list`` walks the repo tree, paged, and sorts by key
(the Hub's tree order is its own), holding the names under the prefix in memory. Listings carry the commit's date as
``last_modified`` (a bound: the object is no newer). Etags are the Hub's: the git blob id
of a small file, the sha256 of an LFS file.

Errors: a missing repo (or one the token cannot see) is a ConfigError that offers
``hf_create_repo``, which creates it, private, on first use; a read-only token, a gated
repo and a refused token are PermissionDenied saying which.

Retries: one policy, never two loops around one request. huggingface_hub retries some
calls itself (``http_backoff``: up to 5 retries on 408, 429, 500, 502, 503, 504, timeouts
and dropped connections, sleeping 1, 2, 4, 8, 8 s, or what a 429's ``RateLimit`` /
``Retry-After`` says plus 1 s), and cannot be told not to: each page of a listing, the
commit's preupload and LFS transfers. Those get no retry of this module's. The calls it
does not retry (``dataset_info``, ``get_paths_info``, the resolve GETs, the commit itself)
go through this module's one loop (:meth:`HfRemote._retrying`, and the commit loop with
its 412 replanning and commit budget): the same causes, with jittered backoff, for at
most ``retry_timeout`` seconds and ``max_retries`` retries; a 429 is waited out only if it
ends within that time. The commit loop retries a whole commit (``create_commit``), so a
preupload or transfer that failed after huggingface_hub's own retries is sent again as
part of the next attempt: the one place where its retries sit inside ours, since the
commit's POST has no retry of its own. Above both, the syncer retries a failed batch later.

How long one call can take. Each request, whoever sends it, has ``connect_timeout`` to
connect and ``request_timeout`` for each read or write (huggingface_hub's shared client
has no timeout: a hook gives its requests made from this module's threads this remote's
timeouts; requests from huggingface_hub's own worker threads, LFS uploads of several
files at once, keep its default). So a call of this module's loop takes at most about
``retry_timeout`` + ``request_timeout`` (defaults: 20 + 60 s); a call huggingface_hub
retries, up to 6 times ``request_timeout`` + 23 s plus the waits a 429 asks for; a listing
that many times its number of pages (1,000 entries each); a commit, its preupload, its
transfers and its POST, each bounded so, plus a wait for the commit budget.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import ipaddress
import json
import logging
import math
import os
import random
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx2
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    RepoFile,
    RepoFolder,
    get_session,
    get_token,
    hf_raise_for_status,
)
from huggingface_hub import __version__ as hf_version
from huggingface_hub.errors import (
    DisabledRepoError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .._fork import abandon, on_fork
from .._threads import signals_blocked
from .._version import __version__
from ..config import Settings
from ..errors import (
    AlreadyExists,
    CargoholdError,
    ConfigError,
    ConflictError,
    InvalidKey,
    NotFoundError,
    PermissionDenied,
    PreconditionFailed,
    RemoteError,
    RemoteUnavailable,
    from_os_error,
)
from ..keys import normalize_key
from ._base import (
    STREAM_CHUNK,
    ByteRange,
    Delete,
    DeleteResults,
    FetchResults,
    ObjectInfo,
    ObjectStream,
    PutRequest,
    PutResults,
    Remote,
    check_content_type,
)

__all__ = ["CommitBudget", "HfRemote"]

log = logging.getLogger("cargohold.remotes.hf")

DEFAULT_ENDPOINT = "https://huggingface.co"
COMMIT_FILES = 100  # files per commit: the Hub's advice for reliable commits
_PATHS_PER_REQUEST = 500  # paths-info takes at most 1,000 paths a request
_PATHS_PER_EXPANDED_REQUEST = 50
_MAX_CONFLICTS = 50  # 412s a batch may meet before it gives up (another writer never stops)
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SHARD = re.compile(r"[0-9a-f]{2}")
_RECORD_VERSION = 1
_T = TypeVar("_T")

# huggingface_hub logs two warnings that are expected here: the Xet fallback when
# uploads are routed through LFS on purpose, and the skipped empty commit when every
# file of a batch is already on the Hub. Dropped only for calls made by this module.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("cargohold_hf_quiet", default=False)
_EXPECTED_WARNINGS = ("not supported by Xet Storage", "No files have been modified")
_filter_lock = threading.Lock()
_filter_installed = False


class _ExpectedWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_QUIET.get() and any(t in record.getMessage() for t in _EXPECTED_WARNINGS))


def _install_log_filter() -> None:
    global _filter_installed
    with _filter_lock:
        if not _filter_installed:
            for name in ("huggingface_hub._commit_api", "huggingface_hub.hf_api"):
                logging.getLogger(name).addFilter(_ExpectedWarnings())
            _filter_installed = True


# huggingface_hub's shared HTTP client has no timeout (``timeout=None``): a server that
# takes a connection and never answers would hold a call for ever. This hook gives the
# requests this module makes through huggingface_hub the remote's own timeouts, and no
# others: it acts only while _TIMEOUTS is set, in the calling thread's context.
_TIMEOUTS: contextvars.ContextVar[dict[str, float | None] | None] = contextvars.ContextVar(
    "cargohold_hf_timeouts", default=None
)


def _give_timeouts(request: httpx2.Request) -> None:
    timeouts = _TIMEOUTS.get()
    if timeouts is not None:
        request.extensions = {**request.extensions, "timeout": timeouts}


# -- layout ---------------------------------------------------------------------------


def _shard(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:2]


def folder_path(base: str, segments: list[str]) -> str:
    """Where the logical folder ``segments`` lives in the repo, under ``base``."""
    parts = [base] if base else []
    for segment in segments:
        parts += [f"{_shard(segment)}.d", segment]
    return "/".join(parts)


def data_path(base: str, key: str) -> str:
    """The repo path of the object ``key`` (see the module docstring)."""
    *folders, name = key.split("/")
    return f"{folder_path(base, folders)}/{_shard(name)}/{name}".lstrip("/")


def record_path(base: str, key: str) -> str:
    """The repo path of ``key``'s metadata record. Its ``.json`` suffix keeps it out of
    the ``.gitattributes`` patterns that send ``*.png`` and the like to LFS: records go
    inline in the commit."""
    *folders, name = key.split("/")
    return f"{folder_path(base, folders)}/{_shard(name)}.m/{name}.json".lstrip("/")


def key_of(base: str, path: str) -> str | None:
    """The key stored at repo ``path``, or None for anything else (records, folders,
    files another tool put there)."""
    if base:
        if not path.startswith(base + "/"):
            return None
        path = path[len(base) + 1 :]
    parts = path.split("/")
    if len(parts) % 2:
        return None
    names = parts[1::2]
    for i, (shard, name) in enumerate(zip(parts[0::2], names, strict=True)):
        last = i == len(names) - 1
        if shard != (_shard(name) if last else f"{_shard(name)}.d"):
            return None
    return "/".join(names)


# -- the commit budget ------------------------------------------------------------------


class _Paused(Exception):
    def __init__(self, until: float, why: str) -> None:
        super().__init__(why)
        self.until = until
        self.why = why


class CommitBudget:
    """A token bucket of commits: ``per_hour`` tokens an hour, at most ``burst`` saved up
    (default: ten minutes' worth). Thread-safe; ``clock`` is injectable for tests.

    A 429 answer (:meth:`rate_limited`) empties the bucket, pauses until the Hub says
    commits may resume, and lowers the rate to what the Hub's policy allows (or halves
    it) for an hour, after which the configured rate returns.
    """

    def __init__(
        self,
        per_hour: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(per_hour, int | float) and per_hour > 0 and math.isfinite(per_hour)):
            raise ConfigError(
                f"hf_commits_per_hour must be a number > 0, not {per_hour!r}",
                hint="set CARGOHOLD_HF_COMMITS_PER_HOUR, e.g. 100",
            )
        if burst is not None and not (
            isinstance(burst, int | float) and burst >= 1 and math.isfinite(burst)
        ):
            raise ConfigError(  # under one token no commit could ever be paid for
                f"the commit burst must be a number >= 1, not {burst!r}",
                hint="leave commit_burst unset (ten minutes' worth of CARGOHOLD_HF_COMMITS_PER_HOUR)",
            )
        self.configured = float(per_hour)
        self.burst = float(burst) if burst is not None else max(1.0, per_hour / 6)
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = self.configured
        self._tokens = self.burst
        self._updated = clock()
        self._paused_until = 0.0
        self._slowed_until = 0.0
        self.spent = 0
        self.limited = 0
        self.last_rate_limit: str | None = None

    def _refill(self, now: float) -> None:
        if self._slowed_until and now >= self._slowed_until:
            self._rate, self._slowed_until = self.configured, 0.0
        start = max(self._updated, self._paused_until)
        if now > start:
            self._tokens = min(self.burst, self._tokens + (now - start) * self._rate / 3600)
        self._updated = max(self._updated, now)

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is now)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            if now < self._paused_until:
                return self._paused_until - now + max(0.0, 1 - self._tokens) * 3600 / self._rate
            return max(0.0, (1 - self._tokens) * 3600 / self._rate)

    def take(self, max_wait: float, stop: threading.Event) -> None:
        """Spend a token, waiting for one for at most ``max_wait`` seconds (``stop`` cuts
        the wait short). Raises ``_Paused`` if none can be had in time."""
        deadline = self._clock() + max_wait
        while True:
            wait = self.wait_time()
            if wait <= 0:
                with self._lock:
                    self._refill(self._clock())
                    if self._tokens >= 1:
                        self._tokens -= 1
                        self.spent += 1
                        return
                continue
            if self._clock() + wait > deadline or stop.is_set():
                until = time.time() + wait
                raise _Paused(until, self.last_rate_limit or "the commit budget is spent")
            stop.wait(min(wait, 1.0))

    def refund(self) -> None:
        """Give back a token that bought no commit."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1)
            self.spent -= 1

    def rate_limited(self, headers: Mapping[str, str], message: str) -> float:
        """Account for a 429 answer; returns the seconds to wait before the next commit."""
        wait, limit = _parse_rate_limit(headers, message)
        with self._lock:
            now = self._clock()
            self._refill(now)
            self.limited += 1
            self.last_rate_limit = _first_line(message) or "429 Too Many Requests"
            self._tokens = 0.0
            self._paused_until = max(self._paused_until, now + wait)
            slower = limit * 0.9 if limit is not None else self._rate / 2
            self._rate = max(min(self._rate, slower), 0.01)
            self._slowed_until = now + 3600
        return wait

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            now = self._clock()
            self._refill(now)
            paused = self._paused_until - now if now < self._paused_until else None
            summary = f"{self._rate:g} commits/h, {self._tokens:.1f} available now"
            if paused is not None:
                summary += f", paused for {paused:.0f} s by the Hub's rate limit"
            elif self.limited:
                summary += f" (slowed from {self.configured:g}/h by a 429)"
            return {
                "summary": summary,
                "commits_per_hour": round(self._rate, 3),
                "configured_per_hour": self.configured,
                "burst": self.burst,
                "available": round(self._tokens, 2),
                "commits": self.spent,
                "paused_for_seconds": round(paused, 1) if paused is not None else None,
                "rate_limited": self.limited,
                "last_rate_limit": self.last_rate_limit,
            }


def _parse_rate_limit(headers: Mapping[str, str], message: str) -> tuple[float, float | None]:
    """From a 429: (seconds until commits may resume, commits allowed per hour or None).
    Reads the IETF ``RateLimit``/``RateLimit-Policy`` headers the Hub sends, then
    ``Retry-After``, then the Hub's message ("... (128 per hour). ... in 43 minutes.")."""
    lowered = {k.lower(): v for k, v in headers.items()}
    wait: float | None = None
    limit: float | None = None
    if found := re.search(r"\bt\s*=\s*(\d+)", lowered.get("ratelimit", "")):
        wait = float(found[1])
    if (found := re.search(r"\bq\s*=\s*(\d+)", lowered.get("ratelimit-policy", ""))) and (
        window := re.search(r"\bw\s*=\s*(\d+)", lowered.get("ratelimit-policy", ""))
    ):
        limit = float(found[1]) * 3600 / max(1.0, float(window[1]))
    if wait is None and (retry := lowered.get("retry-after", "").strip()).isdigit():
        wait = float(retry)
    if wait is None and (found := re.search(r"in (\d+) (second|minute|hour)", message)):
        wait = float(found[1]) * {"second": 1, "minute": 60, "hour": 3600}[found[2]]
    if limit is None and (found := re.search(r"\((\d+) per hour\)", message)):
        limit = float(found[1])
    return (wait if wait is not None else 60.0), limit


# -- the group committer ---------------------------------------------------------------


@dataclass(eq=False)
class _Op:
    """One put (``request``) or delete (``request`` None, only if the key has etag
    ``if_match`` when one is given) waiting to be committed."""

    key: str
    request: PutRequest | None
    if_match: str | None = None
    result: ObjectInfo | CargoholdError | None = None
    done: bool = False
    spooled: Path | None = None  # a file object's bytes, copied once so retries can reread

    @property
    def files(self) -> int:
        if self.request is None:
            return 1
        return 2 if _wants_record(self.request) else 1


class _Committer:
    """Group commit: callers queue ops; one of them at a time (the leader) takes the
    queue in rounds of up to ``COMMIT_FILES`` files, one key at most once a round, and
    commits each round; the others wait for their results. Ops queued while the leader
    waits for the commit budget join its next round."""

    def __init__(self, commit: Callable[[list[_Op]], None], take_token: Callable[[], None]) -> None:
        self._commit = commit
        self._take_token = take_token
        self._cv = threading.Condition()
        self._queue: deque[_Op] = deque()
        self._leading = False

    def run(self, ops: list[_Op]) -> None:
        if not ops:
            return
        with self._cv:
            self._queue.extend(ops)
            while not all(op.done for op in ops):
                if not self._leading:
                    self._leading = True
                    break
                self._cv.wait()
            else:
                return
        try:
            while not all(op.done for op in ops):
                try:
                    self._take_token()
                except CargoholdError as error:
                    self._fail_queue(error)
                    break
                taken = self._round()
                if not taken:
                    break  # unreachable: a leader's unfinished ops are queued
                try:
                    self._commit(taken)
                except BaseException as exc:
                    # A bug must not leave the other callers waiting for ever.
                    log.exception("cargohold: committing to the Hub failed unexpectedly")
                    failed = RemoteError(f"committing failed unexpectedly: {exc!r}")
                    for op in taken:
                        if not op.done:
                            op.result, op.done = failed, True
                    raise
                finally:
                    with self._cv:
                        self._cv.notify_all()
        finally:
            with self._cv:
                self._leading = False
                self._cv.notify_all()

    def _round(self) -> list[_Op]:
        with self._cv:
            taken: list[_Op] = []
            keys: set[str] = set()
            files = 0
            left: deque[_Op] = deque()
            while self._queue:
                op = self._queue.popleft()
                if op.key in keys or (taken and files + op.files > COMMIT_FILES):
                    left.append(op)  # next round: once per key keeps each op's check exact
                    continue
                taken.append(op)
                keys.add(op.key)
                files += op.files
            self._queue = left
            return taken

    def _fail_queue(self, error: CargoholdError) -> None:
        with self._cv:
            for op in self._queue:
                op.result, op.done = error, True
            self._queue.clear()
            self._cv.notify_all()


# -- reading ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    """A key located in the repo: its info and the commits to read its bytes and record at."""

    info: ObjectInfo
    data_revision: str


class _HfStream(ObjectStream):
    def __init__(
        self, remote: HfRemote, key: str, response: httpx2.Response, info: ObjectInfo
    ) -> None:
        self._remote = remote
        self._key = key
        self._response = response
        self.info = info

    def __iter__(self) -> Iterator[bytes]:
        try:
            chunks = self._response.iter_bytes(STREAM_CHUNK)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except Exception as exc:  # noqa: BLE001 - translated in the one place
                    self._remote._raise(exc, self._key, "read")
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()


class _BytesStream(ObjectStream):
    def __init__(self, data: bytes, info: ObjectInfo) -> None:
        self._data = data
        self.info = info

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self._data), STREAM_CHUNK):
            yield self._data[start : start + STREAM_CHUNK]


def _wants_record(request: PutRequest) -> bool:
    return bool(request.metadata) or request.content_type != check_content_type(None, request.key)


def _digests(source: bytes | Path) -> tuple[str, str]:
    """(sha256, git blob id) of the bytes: the two etags the Hub may give them."""
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    if isinstance(source, bytes):
        sha256.update(source)
        git.update(source)
    else:
        with source.open("rb") as fh:
            while chunk := fh.read(STREAM_CHUNK):
                sha256.update(chunk)
                git.update(chunk)
    return sha256.hexdigest(), git.hexdigest()


def _etag(entry: RepoFile) -> str:
    """The Hub's etag of a file: the sha256 of an LFS (or Xet) file, else its git blob id."""
    return entry.lfs.sha256 if entry.lfs is not None else entry.blob_id


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def hub_endpoint(endpoint: str | None, env: Mapping[str, str]) -> str:
    """The Hub endpoint: ``endpoint``, else ``HF_ENDPOINT``, else https://huggingface.co.
    Plain http only to loopback: the token would cross the network in clear."""
    chosen = (endpoint or env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    parts = urlsplit(chosen)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"Hugging Face endpoint {chosen!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"Hugging Face endpoint {chosen!r} is plain http to a host that is not loopback",
            hint="use https",
        )
    return chosen


def record_contents(
    raw: bytes, key: str, field: str, etag: str
) -> tuple[dict[str, str], str] | None:
    """The metadata and content type in a metadata record, if its ``field`` names the
    bytes' ``etag``; None if it describes other bytes (replaced by another tool) or cannot
    be read (logged)."""
    try:
        record = json.loads(raw)
        if record[field] != etag:
            return None  # the bytes were replaced by another tool: the record is stale
        return dict(record.get("metadata") or {}), str(record["content_type"])
    except (ValueError, KeyError, TypeError):
        log.warning("cargohold: ignoring an unreadable metadata record for %r", key)
        return None


def hub_id(given: str, what: str) -> str:
    """``given`` if it is an ``OWNER/NAME`` id the Hub accepts, else ConfigError."""
    owner, _, name = given.partition("/")
    if not (_NAME.fullmatch(owner) and _NAME.fullmatch(name)):
        raise ConfigError(f"{given!r} is not {what} id", hint="use OWNER/NAME, e.g. ana/app-data")
    return given


def hub_url_parts(url: str, known: set[str]) -> tuple[list[str], dict[str, str], str]:
    """Of an ``hf://`` URL: its path segments, its query parameters (ConfigError for one
    not in ``known``) and its prefix (the segments after OWNER/NAME, as a key prefix)."""
    parts = urlsplit(url)
    segments = unquote(parts.path).strip("/").split("/")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - known)
    if unknown:
        raise ConfigError(
            f"unknown hf:// URL parameter {unknown[0]!r}", hint="known: " + ", ".join(sorted(known))
        )
    prefix = "/".join(segments[2:])
    if prefix:
        try:
            prefix = normalize_key(prefix)
        except CargoholdError as exc:
            raise ConfigError(f"bad prefix in {url!r}: {exc}") from None
    return segments, query, prefix


def hub_token(token: str | bool | None, env: Mapping[str, str]) -> tuple[str | None, str]:
    """The token to send (None: anonymous) and how to name it in messages: ``token``
    (False: explicitly anonymous, as in huggingface_hub), else ``HF_TOKEN``, else the
    logged-in token."""
    if token is False:
        return None, "an anonymous caller (no token)"
    if isinstance(token, str) and token:
        return token, "the token given"
    if env.get("HF_TOKEN"):
        return env["HF_TOKEN"], "the token in HF_TOKEN"
    found = get_token()
    return found, "the logged-in token" if found else "an anonymous caller (no token)"


# -- the remote -------------------------------------------------------------------------


_WriteResults = list[ObjectInfo | CargoholdError | None]


class HubRemoteBase(Remote):
    """What the Hub's remotes (dataset repos, buckets) share.

    Every write goes through :meth:`_write`: ``(key, put request)`` pairs (None for a
    delete) sent together, results in order. Single puts and deletes are batches of one;
    ``apply`` sends its puts and deletes as one. Errors are translated by
    :meth:`_translate`, which ends with :meth:`_other_error` for what is not the
    remote's own."""

    endpoint: str
    #: ``connect_timeout`` and ``request_timeout``, as httpx2 takes them (see _hub_timeouts).
    _timeouts: dict[str, float | None]

    @staticmethod
    def timeouts_of(settings: Settings) -> dict[str, float | None]:
        return httpx2.Timeout(settings.request_timeout, connect=settings.connect_timeout).as_dict()

    @contextlib.contextmanager
    def _hub_timeouts(self) -> Iterator[None]:
        """Within: the requests huggingface_hub makes on this thread carry this remote's
        timeouts (see ``_give_timeouts``)."""
        hooks = get_session().event_hooks["request"]
        if _give_timeouts not in hooks:
            with _filter_lock:
                if _give_timeouts not in hooks:
                    hooks.append(_give_timeouts)
        token = _TIMEOUTS.set(self._timeouts)
        try:
            yield
        finally:
            _TIMEOUTS.reset(token)

    def _write(self, ops: list[tuple[str, PutRequest | None]]) -> _WriteResults:
        raise NotImplementedError

    def _translate(self, exc: BaseException, key: str | None, action: str) -> CargoholdError:
        raise NotImplementedError

    def _raise(self, exc: BaseException, key: str | None, action: str) -> NoReturn:
        raise self._error(exc, key, action) from exc

    def _error(self, exc: BaseException, key: str | None, action: str) -> CargoholdError:
        """``exc`` as one of cargohold's errors, caused by it."""
        if isinstance(exc, CargoholdError):
            return exc
        error = self._translate(exc, key, action)
        error.__cause__ = exc
        return error

    def _other_error(
        self, exc: BaseException, key: str | None, action: str, where: str
    ) -> CargoholdError:
        """The errors every Hub remote translates alike: 429 and 5xx after the retries,
        other HTTP answers, dropped connections, local OS errors, the rest."""
        context: dict[str, Any] = {"key": key, "remote": self.url}
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            status, message = exc.response.status_code, _server_message(exc)
            if status in _RETRY_STATUS:
                return RemoteUnavailable(
                    f"cannot {action} {where}: the Hub answered {status} after retries ({message})",
                    hint="the Hub is busy or rate-limits this token; writes stay journaled",
                    **context,
                )
            return RemoteError(f"cannot {action} {where}: {status} {message}", **context)
        if _transient(exc):
            return RemoteUnavailable(
                f"cannot {action} {where}: {self.endpoint} did not answer after retries "
                f"({type(exc).__name__}: {_first_line(str(exc)) or 'no details'})",
                hint="check that the endpoint is up and reachable from this host",
                **context,
            )
        if isinstance(exc, OSError):
            return from_os_error(exc, f"{action} {where}", key=key, remote=self.url)
        return RemoteError(
            f"cannot {action} {where}: {type(exc).__name__}: {_first_line(str(exc))}", **context
        )

    def _put(self, request: PutRequest) -> ObjectInfo:
        [result] = self._write([(request.key, request)])
        if isinstance(result, CargoholdError):
            raise result
        assert isinstance(result, ObjectInfo)
        return result

    def _delete(self, key: str) -> None:
        [result] = self._write([(key, None)])
        if isinstance(result, CargoholdError):
            raise result

    def _put_many(self, requests: list[PutRequest], concurrency: int) -> PutResults:
        return self._write([(r.key, r) for r in requests])  # type: ignore[return-value]

    def _delete_many(self, keys: list[str], concurrency: int) -> DeleteResults:
        return self._write([(key, None) for key in keys])  # type: ignore[return-value]

    def _apply(
        self, requests: list[PutRequest], deletes: list[Delete], concurrency: int
    ) -> tuple[PutResults, DeleteResults]:
        # Unconditional deletes only: a remote with conditional deletes overrides this.
        results = self._write([(r.key, r) for r in requests] + [(d.key, None) for d in deletes])
        return results[: len(requests)], results[len(requests) :]  # type: ignore[return-value]


class HfRemote(HubRemoteBase):
    """A dataset repo on the Hugging Face Hub (or a server that speaks its API). See the
    module docstring for the layout, the guarantees and the commit budget."""

    key_can_be_folder = True
    conditional_deletes = True
    stores_metadata = False  # metadata and content types live in records (the module docstring)

    def __init__(
        self,
        repo_id: str,
        prefix: str = "",
        *,
        revision: str = "main",
        endpoint: str | None = None,
        token: str | bool | None = None,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        commits_per_hour: float | None = None,
        commit_burst: float | None = None,
        create_repo: bool | None = None,
    ) -> None:
        settings = settings or Settings.load()
        env = os.environ if environ is None else environ
        self.repo_id = hub_id(repo_id, "a dataset repo")
        self.prefix = prefix.strip("/")
        self.revision = revision
        self.endpoint = hub_endpoint(endpoint, env)
        self._token, self._who = hub_token(token, env)
        # Read here, not at huggingface_hub's import: see the module docstring.
        self._lfs_only = env.get("HF_HUB_DISABLE_XET", "").upper() in ("1", "ON", "YES", "TRUE")
        self._create = settings.hf_create_repo if create_repo is None else create_repo
        self._created = False
        self._settings = settings
        self._timeouts = self.timeouts_of(settings)
        self.budget = CommitBudget(
            settings.hf_commits_per_hour if commits_per_hour is None else commits_per_hour,
            commit_burst,
        )
        self._api = HfApi(
            endpoint=self.endpoint, token=self._token or False, library_name="cargohold"
        )
        self._http = self._new_http()
        self._closed = threading.Event()
        self._branch_head: str | None = None  # the branch head after this remote's last commit
        self._head_lock = threading.Lock()
        self._committer = _Committer(self._commit_round, self._take_token)
        _install_log_filter()
        on_fork(self._after_fork)

    def _new_http(self) -> httpx2.Client:
        settings = self._settings
        return httpx2.Client(
            timeout=httpx2.Timeout(settings.request_timeout, connect=settings.connect_timeout),
            follow_redirects=True,
            limits=httpx2.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def _after_fork(self) -> None:
        """In a child after fork(): the HTTP client's connections are the parent's, and
        locks another parent thread may have held stay held. huggingface_hub resets its own
        sessions after a fork; this remote makes a new client and new locks."""
        abandon(self._http)
        self._http = self._new_http()
        self._head_lock = threading.Lock()
        self._committer = _Committer(self._commit_round, self._take_token)
        self.budget._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> HfRemote:
        """Build from ``hf://datasets/OWNER/NAME[@BRANCH][/PREFIX][?revision=&endpoint=]``."""
        parts = urlsplit(url)
        hint = "use hf://datasets/OWNER/NAME[/PREFIX], e.g. hf://datasets/ana/app-data/outputs"
        if parts.netloc != "datasets":
            raise ConfigError(
                f"{url!r} names neither a dataset repo nor a bucket: only those hold "
                "cargohold data",
                hint=hint + ", or hf://buckets/OWNER/NAME[/PREFIX]",
            )
        segments, query, prefix = hub_url_parts(url, {"revision", "endpoint"})
        if len(segments) < 2 or not all(segments[:2]):
            raise ConfigError(f"{url!r} names no repo", hint=hint)
        name, _, branch = segments[1].partition("@")
        return cls(
            f"{segments[0]}/{name}",
            prefix,
            revision=query.get("revision") or branch or "main",
            endpoint=query.get("endpoint"),
            settings=settings,
        )

    @property
    def url(self) -> str:
        url = f"hf://datasets/{self.repo_id}/{self.prefix}".rstrip("/")
        query = []
        if self.revision != "main":
            query.append(f"revision={self.revision}")
        if self.endpoint != DEFAULT_ENDPOINT:
            query.append(f"endpoint={self.endpoint}")
        return url + ("?" + "&".join(query) if query else "")

    def stats(self) -> Mapping[str, object]:
        return {"repo": f"datasets/{self.repo_id}", "commit_budget": self.budget.snapshot()}

    def close(self) -> None:
        self._closed.set()
        self._http.close()

    # -- HTTP ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"user-agent": f"cargohold/{__version__}; huggingface_hub/{hf_version}"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        return headers

    # The one request this module still makes by hand: reading bytes. No HfApi call
    # returns an object's bytes in memory, a byte range or a stream: hf_hub_download writes
    # whole files into a cache folder (a second copy beside the local tier, and no range),
    # and HfFileSystem adds its own block cache and retries to every read. The GET is the
    # one they send (resolve/{revision}/{path}, Range, redirects followed).
    def _resolve_url(self, revision: str, path: str) -> str:
        return (
            f"{self.endpoint}/datasets/{self.repo_id}/resolve/"
            f"{quote(revision, safe='')}/{quote(path)}"
        )

    def _send(
        self, method: str, url: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx2.Response:
        """One resolve request, in :meth:`_retrying`. Raises huggingface_hub's errors
        (translated by callers); the caller closes a streamed response."""
        headers = {**self._headers(), **kwargs.pop("headers", {})}

        def send() -> httpx2.Response:
            request = self._http.build_request(method, url, headers=headers, **kwargs)
            response = self._http.send(request, stream=stream)
            if response.status_code >= 400:
                if stream:
                    response.read()  # the error's body, for its message
                    response.close()
                hf_raise_for_status(response)
            return response

        return self._retrying(send)

    def _retrying(self, call: Callable[[], _T]) -> _T:
        """Run ``call``, retried on 429, 5xx and dropped connections for at most
        ``retry_timeout`` seconds and ``max_retries`` retries: the remote's one retry loop,
        for the calls huggingface_hub does not retry itself (see the module docstring).
        A 429 is waited out only if its ``RateLimit``/``Retry-After`` ends in time."""
        deadline = time.monotonic() + self._settings.retry_timeout
        attempt = 0
        while True:
            try:
                return call()
            except Exception as exc:
                if not _transient(exc):
                    raise
                wait = None
                if isinstance(exc, HfHubHTTPError) and exc.response.status_code == 429:
                    wait = _parse_rate_limit(exc.response.headers, "")[0]
                    if time.monotonic() + wait >= deadline:
                        raise
                if not self._retry(attempt, deadline, wait):
                    raise
            attempt += 1

    def _backoff(self, attempt: int, wait: float | None, deadline: float) -> None:
        if wait is None:
            wait = random.uniform(0, min(5.0, 0.1 * 2**attempt))  # noqa: S311 - jitter
        self._closed.wait(max(0.0, min(wait, deadline - time.monotonic())))

    def _with_repo(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn``; if the repo is missing and ``hf_create_repo`` is on, create it
        (private) once and run ``fn`` again."""
        try:
            return fn()
        except RepositoryNotFoundError as exc:
            # GatedRepoError is a RepositoryNotFoundError too, for a repo that exists.
            if not self._create or self._created or isinstance(exc, GatedRepoError):
                raise
        self._create_repo()
        return fn()

    def _create_repo(self) -> None:
        self._api.create_repo(self.repo_id, repo_type="dataset", private=True, exist_ok=True)
        self._created = True
        log.info(
            "cargohold: created the private dataset repo %s at %s", self.repo_id, self.endpoint
        )

    # -- reads --------------------------------------------------------------------------

    def _snapshot(self) -> tuple[str, datetime]:
        """The branch head: its commit sha and date (``dataset_info``, which
        huggingface_hub does not retry: in :meth:`_retrying`)."""

        def read() -> tuple[str, datetime]:
            with self._hub_timeouts():
                info = self._api.dataset_info(
                    self.repo_id, revision=self.revision, expand=["sha", "lastModified"]
                )
            return str(info.sha), info.last_modified or datetime.now(UTC)

        return self._with_repo(lambda: self._retrying(read))

    def _paths_info(self, revision: str, paths: list[str], *, expand: bool) -> dict[str, RepoFile]:
        """The files among ``paths`` at ``revision`` (folders and missing paths left out).
        ``get_paths_info`` sends all its paths in one request and does not retry it: the
        chunks (the Hub takes at most 1,000 paths a request, fewer with ``expand``) and
        the retries are this remote's."""
        found: dict[str, RepoFile] = {}
        step = _PATHS_PER_EXPANDED_REQUEST if expand else _PATHS_PER_REQUEST

        def read(chunk: list[str]) -> list[RepoFile | RepoFolder]:
            with self._hub_timeouts():
                return self._api.get_paths_info(
                    self.repo_id, chunk, expand=expand, revision=revision, repo_type="dataset"
                )

        for start in range(0, len(paths), step):
            attempt = functools.partial(read, paths[start : start + step])
            entries = self._with_repo(functools.partial(self._retrying, attempt))
            for entry in entries:
                if isinstance(entry, RepoFile):
                    found[entry.path] = entry
        return found

    def _locate(self, keys: list[str]) -> dict[str, _Found]:
        """Find ``keys``: one at a time with its exact last commit; several at one commit
        of the branch. Missing keys are left out."""
        exact = len(keys) == 1
        if exact:
            revision, date = self.revision, None
        else:
            revision, date = self._snapshot()
        paths = {key: (data_path(self.prefix, key), record_path(self.prefix, key)) for key in keys}
        entries = self._paths_info(
            revision, [p for pair in paths.values() for p in pair], expand=exact
        )
        found: dict[str, _Found] = {}
        records: dict[str, tuple[str, RepoFile]] = {}
        for key, (data, record) in paths.items():
            entry = entries.get(data)
            if entry is None:
                continue
            data_revision, modified = revision, date
            if exact and entry.last_commit is not None:
                data_revision, modified = entry.last_commit.oid, entry.last_commit.date
            info = ObjectInfo(
                key=key,
                size=int(entry.size),
                etag=_etag(entry),
                last_modified=modified or datetime.now(UTC),
                metadata={},
                content_type=check_content_type(None, key),
            )
            found[key] = _Found(info, data_revision)
            if record in entries:
                last = entries[record].last_commit
                records[key] = (last.oid if exact and last is not None else revision, entry)
        if records:
            for key, loaded in zip(
                records, self._in_threads(self._read_record, list(records.items())), strict=True
            ):
                if loaded is not None:
                    metadata, content_type = loaded
                    info = replace(found[key].info, metadata=metadata, content_type=content_type)
                    found[key] = _Found(info, found[key].data_revision)
        return found

    def _read_record(
        self, item: tuple[str, tuple[str, RepoFile]]
    ) -> tuple[dict[str, str], str] | None:
        key, (revision, entry) = item
        response = self._with_repo(
            lambda: self._send("GET", self._resolve_url(revision, record_path(self.prefix, key)))
        )
        field = "sha256" if entry.lfs is not None else "git_oid"
        return record_contents(response.content, key, field, _etag(entry))

    def _found(self, key: str) -> _Found:
        found = self._locate([key]).get(key)
        if found is None:
            raise NotFoundError(f"no object {key!r} in {self.url}", key=key, remote=self.url)
        return found

    def _range_header(self, range: ByteRange | None) -> dict[str, str]:
        if range is None:
            return {}
        start, stop = range
        return {"Range": f"bytes={start}-{'' if stop is None else stop - 1}"}

    def _get(self, key: str, range: ByteRange | None) -> bytes:
        if range is not None and range[1] == range[0]:
            self._head(key)  # an empty range still needs the object to exist
            return b""
        try:
            response = self._with_repo(
                lambda: self._send(
                    "GET",
                    self._resolve_url(self.revision, data_path(self.prefix, key)),
                    headers=self._range_header(range),
                )
            )
        except HfHubHTTPError as exc:
            if range is not None and exc.response.status_code == 416:
                self._head(key)
                return b""  # the range starts past the end: like data[start:stop]
            self._raise(exc, key, "read")
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, key, "read")
        data = response.content
        if range is not None and response.status_code == 200:
            data = data[range[0] : range[1]]  # a server that ignored the range
        return data

    def _stream(self, key: str, range: ByteRange | None) -> ObjectStream:
        try:
            found = self._found(key)
        except CargoholdError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, key, "read")
        return self._open_stream(key, found, range)

    def _open_stream(self, key: str, found: _Found, range: ByteRange | None) -> ObjectStream:
        if range is not None and (range[1] == range[0] or range[0] >= found.info.size):
            return _BytesStream(b"", found.info)
        url = self._resolve_url(found.data_revision, data_path(self.prefix, key))
        try:
            response = self._send("GET", url, stream=True, headers=self._range_header(range))
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, key, "read")
        if range is not None and response.status_code == 200:
            data = response.read()[range[0] : range[1]]
            response.close()
            return _BytesStream(data, found.info)
        return _HfStream(self, key, response, found.info)

    def _head(self, key: str) -> ObjectInfo:
        try:
            return self._found(key).info
        except CargoholdError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, key, "read")

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder, _, _ = prefix.rpartition("/")
        where = folder_path(self.prefix, folder.split("/") if folder else [])
        try:
            sha, date = self._snapshot()
            found = []
            # list_repo_tree retries each page itself (huggingface_hub's http_backoff):
            # no retry of ours around it (see the module docstring).
            with self._hub_timeouts():
                tree = self._api.list_repo_tree(
                    self.repo_id,
                    where or None,
                    recursive=True,
                    expand=False,
                    revision=sha,
                    repo_type="dataset",
                )
                for entry in tree:
                    if not isinstance(entry, RepoFile):
                        continue
                    key = key_of(self.prefix, entry.path)
                    if key is not None and key.startswith(prefix):
                        found.append(ObjectInfo(key, int(entry.size), _etag(entry), date))
        except RemoteEntryNotFoundError:
            return  # no such folder: nothing under the prefix
        except CargoholdError:
            raise
        except Exception as exc:  # noqa: BLE001
            self._raise(exc, prefix or None, "list")
        found.sort(key=lambda info: info.key.encode())
        yield from found

    def _fetch_many(self, keys: list[str], concurrency: int) -> FetchResults:
        def fetch(item: tuple[str, _Found | None]) -> tuple[ObjectInfo, bytes]:
            key, found = item
            if found is None:
                raise NotFoundError(f"no object {key!r} in {self.url}", key=key, remote=self.url)
            with self._open_stream(key, found, None) as stream:
                return found.info, b"".join(stream)

        return self._batch_read(keys, fetch, concurrency)

    def _download_many(self, items: list[tuple[str, Path]], concurrency: int) -> PutResults:
        paths = dict(items)

        def download(item: tuple[str, _Found | None]) -> ObjectInfo:
            key, found = item
            if found is None:
                raise NotFoundError(f"no object {key!r} in {self.url}", key=key, remote=self.url)
            path = paths[key]
            with self._open_stream(key, found, None) as stream:
                try:
                    out = path.open("wb")
                except OSError as exc:
                    raise from_os_error(exc, f"write {path}", key=key) from exc
                with out:
                    for chunk in stream:
                        try:
                            out.write(chunk)
                        except OSError as exc:
                            raise from_os_error(exc, f"write {path}", key=key) from exc
            return found.info

        if len(paths) != len(items):  # one key twice: its own download each
            return super()._download_many(items, concurrency)
        return self._batch_read([key for key, _ in items], download, concurrency)

    def _batch_read(
        self, keys: list[str], read: Callable[[tuple[str, _Found | None]], _T], concurrency: int
    ) -> list[_T | CargoholdError]:
        try:
            located = self._locate(list(dict.fromkeys(keys)))
        except Exception as exc:  # noqa: BLE001 - translated in the one place
            return [self._error(exc, None, "read")] * len(keys)

        def one(key: str) -> _T | CargoholdError:
            try:
                return read((key, located.get(key)))
            except CargoholdError as error:
                return error
            except Exception as exc:  # noqa: BLE001
                return self._error(exc, key, "read")

        return self._in_threads(one, keys, concurrency)

    def _in_threads(
        self, fn: Callable[[Any], _T], items: list[Any], concurrency: int = 16
    ) -> list[_T]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(
            min(concurrency, len(items)), thread_name_prefix="cargohold-hf"
        ) as pool:
            with signals_blocked():  # the pool's threads start in map (see cargohold._threads)
                results = pool.map(fn, items)
            return list(results)

    # -- writes -------------------------------------------------------------------------

    def _write(self, ops: list[tuple[str, PutRequest | None]]) -> _WriteResults:
        return self._submit([_Op(key, request) for key, request in ops])

    def _delete_if_match(self, key: str, etag: str) -> None:
        [result] = self._submit([_Op(key, None, etag)])
        if isinstance(result, CargoholdError):
            raise result

    def _apply(
        self, requests: list[PutRequest], deletes: list[Delete], concurrency: int
    ) -> tuple[PutResults, DeleteResults]:
        results = self._submit(
            [_Op(r.key, r) for r in requests] + [_Op(d.key, None, d.if_match) for d in deletes]
        )
        return results[: len(requests)], results[len(requests) :]  # type: ignore[return-value]

    def _submit(self, ops: list[_Op]) -> list[ObjectInfo | CargoholdError | None]:
        try:
            for op in ops:
                if op.request is not None and not isinstance(
                    op.request.data, bytes | memoryview | Path
                ):
                    op.spooled = self._spool(op)
            self._committer.run([op for op in ops if not op.done])
        finally:
            for op in ops:
                if op.spooled is not None:
                    with contextlib.suppress(OSError):
                        op.spooled.unlink()
        return [op.result for op in ops]

    def _spool(self, op: _Op) -> Path:
        """Copy a file object's bytes (from its current position) to a temp file, so a
        commit retried after a conflict can read them again. Memory stays bounded."""
        assert op.request is not None
        directory = self._settings.temp_dir
        fd, name = tempfile.mkstemp(prefix="cargohold-hf-", dir=directory)
        with os.fdopen(fd, "wb") as out:
            for chunk in op.request.chunks():
                out.write(chunk)
        return Path(name)

    def _take_token(self) -> None:
        # Wait as long as the configured rate makes a commit wait; a pause the Hub
        # imposed beyond that fails now, naming when commits resume.
        max_wait = max(self._settings.retry_timeout, 3600 / self.budget.configured * 1.5)
        try:
            self.budget.take(max_wait, self._closed)
        except _Paused as paused:
            resume = datetime.fromtimestamp(paused.until, UTC).strftime("%H:%M:%S UTC")
            raise RemoteUnavailable(
                f"no commit to datasets/{self.repo_id} until {resume}: {paused.why}",
                hint="writes stay journaled and are sent then; lower the write rate or raise "
                "hf_commits_per_hour if the Hub allows more",
                remote=self.url,
            ) from None

    def _source(self, op: _Op) -> bytes | Path:
        assert op.request is not None
        if op.spooled is not None:
            return op.spooled
        data = op.request.data
        if isinstance(data, memoryview):
            return data.tobytes()
        assert isinstance(data, bytes | Path)
        return data

    def _addition(
        self, path: str, source: bytes | Path, stack: contextlib.ExitStack
    ) -> CommitOperationAdd:
        # With Xet off, hand huggingface_hub file objects: it sends those through Git LFS
        # (its documented fallback), even if it was imported before HF_HUB_DISABLE_XET was set.
        if self._lfs_only:
            fileobj = (
                io.BytesIO(source)
                if isinstance(source, bytes)
                else stack.enter_context(source.open("rb"))
            )
            return CommitOperationAdd(path_in_repo=path, path_or_fileobj=fileobj)
        return CommitOperationAdd(
            path_in_repo=path, path_or_fileobj=source if isinstance(source, bytes) else str(source)
        )

    def _head_sha(self) -> tuple[str, bool]:
        """The branch head to commit on, and whether it was read from the Hub just now
        (rather than remembered from this remote's last commit)."""
        with self._head_lock:
            if self._branch_head is not None:
                return self._branch_head, False
            self._branch_head = self._snapshot()[0]
            return self._branch_head, True

    def _commit_round(self, ops: list[_Op]) -> None:
        """Commit one round of ops (distinct keys), with compare-and-swap on the branch
        head; sets each op's result. Runs in the leader's thread only."""
        digests: dict[str, dict[str, tuple[str, str]]] = {}
        conflicts = 0
        deadline = time.monotonic() + self._settings.retry_timeout
        attempt = 0
        while True:
            with contextlib.ExitStack() as stack:
                try:
                    parent, fresh = self._head_sha()
                    operations, planned = self._plan(ops, parent, digests, stack)
                    if not fresh and any(isinstance(r, ConflictError) for _, r, _ in planned):
                        # Another writer may have moved the branch since our last commit:
                        # a condition that fails must fail on the current head.
                        with self._head_lock:
                            self._branch_head = None
                        continue
                    if not operations:
                        self.budget.refund()
                        self._finish(planned)
                        return
                    commit = functools.partial(
                        self._api.create_commit,
                        self.repo_id,
                        operations,
                        commit_message=_message(planned),
                        repo_type="dataset",
                        revision=self.revision,
                        parent_commit=parent,
                    )
                    with _quiet(), self._hub_timeouts():
                        info = self._with_repo(commit)
                except HfHubHTTPError as exc:
                    status = exc.response.status_code if exc.response is not None else None
                    if status == 412:
                        conflicts += 1
                        with self._head_lock:
                            self._branch_head = None
                        if conflicts <= _MAX_CONFLICTS:
                            continue
                        self._fail(
                            ops,
                            RemoteError(
                                f"gave up committing to datasets/{self.repo_id} after {conflicts} "
                                "conflicts with other writers",
                                hint="another writer commits without pause; writes stay journaled",
                                remote=self.url,
                            ),
                        )
                        return
                    if status == 429:
                        # The budget pauses for what the Hub asked; wait here only if that
                        # is short, else fail now and let the journal keep the writes.
                        wait = self.budget.rate_limited(exc.response.headers, _server_message(exc))
                        if wait <= self._settings.retry_timeout and self._retry(
                            attempt, None, wait
                        ):
                            attempt += 1
                            continue
                        self._fail(ops, self._error(exc, None, "write"))
                        return
                    if status in _RETRY_STATUS and self._retry(attempt, deadline):
                        attempt += 1
                        continue
                    self._fail(ops, self._error(exc, None, "write"))
                    return
                except Exception as exc:  # noqa: BLE001 - translated in the one place
                    if _transient(exc) and self._retry(attempt, deadline):
                        attempt += 1
                        continue
                    self._fail(ops, self._error(exc, None, "write"))
                    return
                if info.oid == parent or not _all_skipped(operations):
                    with self._head_lock:
                        self._branch_head = info.oid
                    self._finish(planned)
                    return
                # huggingface_hub made no commit: every file was already on the Hub, at a
                # head that moved since ``parent``. Right for plain puts; conditional ones
                # are checked again on that head.
                with self._head_lock:
                    self._branch_head = info.oid
                if not any(
                    op.request is not None and (op.request.mode == "create" or op.request.if_match)
                    for op in ops
                ):
                    self._finish(planned)
                    return
                conflicts += 1

    def _retry(self, attempt: int, deadline: float | None, wait: float | None = None) -> bool:
        """Wait before another attempt, if the retry budget allows one."""
        if attempt >= self._settings.max_retries or self._closed.is_set():
            return False
        if deadline is None:
            self._closed.wait(wait or 0.0)
            return not self._closed.is_set()
        if time.monotonic() >= deadline:
            return False
        self._backoff(attempt, wait, deadline)
        return True

    def _plan(
        self,
        ops: list[_Op],
        parent: str,
        digests: dict[str, dict[str, tuple[str, str]]],
        stack: contextlib.ExitStack,
    ) -> tuple[
        list[CommitOperationAdd | CommitOperationDelete],
        list[tuple[_Op, ObjectInfo | CargoholdError | None, CommitOperationAdd | None]],
    ]:
        """Decide each op against the repo at ``parent``: the commit's operations, and for
        each op its result (an error decided now) or the addition whose etag it returns."""
        paths = [
            p
            for op in ops
            if not op.done
            for p in (data_path(self.prefix, op.key), record_path(self.prefix, op.key))
        ]
        state = self._paths_info(parent, paths, expand=False)
        operations: list[CommitOperationAdd | CommitOperationDelete] = []
        planned: list[
            tuple[_Op, ObjectInfo | CargoholdError | None, CommitOperationAdd | None]
        ] = []
        for op in ops:
            if op.done:
                continue
            data, record = data_path(self.prefix, op.key), record_path(self.prefix, op.key)
            current, has_record = state.get(data), record in state
            request = op.request
            where = f"{op.key!r} in {self.url}"
            if (
                request is None
                and op.if_match is not None
                and (current is None or _etag(current) != op.if_match)
            ):
                # A conditional delete: decided on this parent, like if_match on a put, so a
                # write another instance committed since the caller's read survives it.
                what = "does not exist" if current is None else f"no longer has etag {op.if_match}"
                planned.append(
                    (op, PreconditionFailed(f"{where} {what}", key=op.key, remote=self.url), None)
                )
                continue
            if request is None:
                operations += [
                    CommitOperationDelete(p)
                    for p, there in ((data, current), (record, has_record))
                    if there
                ]
                planned.append((op, None, None))
                continue
            if request.mode == "create" and current is not None:
                planned.append(
                    (
                        op,
                        AlreadyExists(f"{where} already exists", key=op.key, remote=self.url),
                        None,
                    )
                )
                continue
            if request.if_match is not None and (
                current is None or _etag(current) != request.if_match
            ):
                what = (
                    "no longer exists"
                    if current is None
                    else f"no longer has etag {request.if_match}"
                )
                planned.append(
                    (op, PreconditionFailed(f"{where} {what}", key=op.key, remote=self.url), None)
                )
                continue
            try:
                planned_ops, info, addition = self._plan_put(
                    op, request, state, digests.setdefault(op.key, {}), stack
                )
            except ValueError as exc:  # huggingface_hub refused the path
                message = f"the Hub refuses key {op.key!r}: {exc}"
                planned.append((op, InvalidKey(message, key=op.key, remote=self.url), None))
                continue
            except OSError as exc:
                error = from_os_error(exc, f"read the bytes of {op.key!r}", key=op.key)
                planned.append((op, error, None))
                continue
            operations += planned_ops
            planned.append((op, info, addition))
        return operations, planned

    def _plan_put(
        self,
        op: _Op,
        request: PutRequest,
        state: Mapping[str, RepoFile],
        digests: dict[str, tuple[str, str]],
        stack: contextlib.ExitStack,
    ) -> tuple[
        list[CommitOperationAdd | CommitOperationDelete], ObjectInfo, CommitOperationAdd | None
    ]:
        """The operations of one put whose condition holds: its bytes unless the repo has
        them already, its metadata record (written, kept or deleted). Raises ValueError
        for a path huggingface_hub refuses, OSError for bytes that cannot be read."""
        data, record = data_path(self.prefix, op.key), record_path(self.prefix, op.key)
        current = state.get(data)
        source = self._source(op)
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        wants_record = _wants_record(request)
        if (wants_record or current is not None) and "data" not in digests:
            digests["data"] = _digests(source)  # kept for the round's retries
        sha256, git_oid = digests.get("data", ("", ""))
        unchanged = (
            current is not None
            and int(current.size) == size
            and _etag(current) in (sha256, git_oid)
        )
        operations: list[CommitOperationAdd | CommitOperationDelete] = []
        addition = None
        if not unchanged:  # the same bytes again cost no upload (and, alone, no commit)
            addition = self._addition(data, source, stack)
            operations.append(addition)
        if wants_record:
            body = json.dumps(
                {
                    "v": _RECORD_VERSION,
                    "key": op.key,
                    "sha256": sha256,
                    "git_oid": git_oid,
                    "size": size,
                    "metadata": request.metadata,
                    "content_type": request.content_type,
                },
                ensure_ascii=False,
                sort_keys=True,
            ).encode()
            existing = state.get(record)
            if existing is None or _etag(existing) not in _digests(body):
                operations.append(self._addition(record, body, stack))
        elif record in state:
            operations.append(CommitOperationDelete(record))
        etag = _etag(current) if unchanged and current is not None else ""
        info = ObjectInfo(
            op.key, size, etag, datetime.now(UTC), dict(request.metadata), request.content_type
        )
        return operations, info, addition

    def _finish(
        self,
        planned: list[tuple[_Op, ObjectInfo | CargoholdError | None, CommitOperationAdd | None]],
    ) -> None:
        for op, result, addition in planned:
            if isinstance(result, ObjectInfo) and addition is not None:
                result = replace(result, etag=_added_etag(addition))
            op.result, op.done = result, True

    def _fail(self, ops: list[_Op], error: CargoholdError) -> None:
        self.budget.refund()  # no commit was made with this round's token
        for op in ops:
            if not op.done:
                op.result, op.done = error, True

    # -- errors -------------------------------------------------------------------------

    def _translate(self, exc: BaseException, key: str | None, action: str) -> CargoholdError:
        """Translate a huggingface_hub or HTTP error: the one place this module does it."""
        context: dict[str, Any] = {"key": key, "remote": self.url}
        repo = f"datasets/{self.repo_id}"
        where = repo if key is None else f"{key!r} in {repo}"
        if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, Exception):
            exc = exc.__cause__  # huggingface_hub wraps LFS upload failures
        if isinstance(exc, GatedRepoError):
            return PermissionDenied(
                f"{repo} is gated and {self._who} has not been granted access",
                hint=f"accept its conditions at {self.endpoint}/{repo} with the token's user",
                **context,
            )
        if isinstance(exc, RepositoryNotFoundError):
            who = self._who
            return ConfigError(
                f"the dataset repo {self.repo_id!r} does not exist at {self.endpoint}, or it is "
                f"private and {who} cannot see it",
                hint=f"create it at {self.endpoint}/new-dataset, or set CARGOHOLD_HF_CREATE_REPO=true "
                "(hf_create_repo) to have cargohold create it as a private repo; check the name "
                "and HF_TOKEN",
                **context,
            )
        if isinstance(exc, DisabledRepoError):
            return PermissionDenied(f"{repo} is disabled on the Hub", **context)
        if isinstance(exc, RevisionNotFoundError):
            return ConfigError(
                f"{repo} has no branch {self.revision!r}",
                hint="create the branch, or drop ?revision= from the URL to use main",
                **context,
            )
        if isinstance(exc, RemoteEntryNotFoundError):
            return NotFoundError(f"no object {where}", **context)
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            message = _server_message(exc)
            if status == 401:
                if self._token is None:
                    return PermissionDenied(
                        f"cannot {action} {repo}: no Hugging Face token is set",
                        hint="set HF_TOKEN to a token with write access (huggingface.co/settings/tokens)",
                        **context,
                    )
                return PermissionDenied(
                    f"{self._who} was refused by {self.endpoint}: invalid or expired",
                    hint="set HF_TOKEN to a valid token (huggingface.co/settings/tokens)",
                    **context,
                )
            if status == 403:
                detail = self._token_role()
                return PermissionDenied(
                    f"{self._who}{detail} may not {action} {repo} ({message or 'forbidden'})",
                    hint="use a token with write access to this repo (a write token, or a "
                    "fine-grained token granted this repo)",
                    **context,
                )
        return self._other_error(exc, key, action, where)

    def _token_role(self) -> str:
        """`` (a read-only token)`` and the like, when the Hub says; else empty."""
        if self._token is None:
            return ""
        try:
            with self._hub_timeouts():
                who = self._api.whoami()
            role = who["auth"]["accessToken"]["role"]
        except Exception:  # noqa: BLE001 - only refines a message
            return ""
        return {"read": " (a read-only token)", "fineGrained": " (a fine-grained token)"}.get(
            str(role), ""
        )


# -- helpers for commits ------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def _message(planned: list[tuple[_Op, Any, Any]]) -> str:
    puts = sum(1 for op, _, _ in planned if op.request is not None)
    deletes = len(planned) - puts
    return f"cargohold: {puts} put(s), {deletes} delete(s)"


def _added_etag(addition: CommitOperationAdd) -> str:
    # After a commit, huggingface_hub knows how the Hub stored the file: its oid is the
    # file's sha256 for LFS (and Xet) files, its git blob id for small files: the etag
    # that paths-info reports.
    oid = addition._local_oid
    assert oid is not None
    return oid


def _all_skipped(operations: list[CommitOperationAdd | CommitOperationDelete]) -> bool:
    """Whether huggingface_hub dropped every operation as already on the Hub (and so
    made no commit)."""
    return all(
        isinstance(op, CommitOperationAdd)
        and op._remote_oid is not None
        and op._remote_oid == op._local_oid
        for op in operations
    )


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__
    if isinstance(exc, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError):
        return True
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in _RETRY_STATUS
    return False


def _server_message(exc: HfHubHTTPError) -> str:
    response = exc.response
    if response is None:
        return _first_line(str(exc))
    message = response.headers.get("X-Error-Message")
    if not message:
        with contextlib.suppress(Exception):
            message = str(response.json().get("error") or "")
    return _first_line(message or str(exc))
