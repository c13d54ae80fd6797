"""A Hugging Face Hub stand-in on loopback, for tests of the ``hf://`` remote.

This is a stand-in, not the Hub, and it says so. Nothing installable implements the
Hub's write API (../shared/TEST-SERVERS.md), so this module serves the endpoints that
``huggingface_hub`` (2.x) calls, written from what that library sends and expects. It is
a real HTTP server on 127.0.0.1 (a free port), started and stopped by the tests, with
repos in memory and LFS blobs in a temporary folder.

What it models, as huggingface_hub speaks it:

- Repos: dataset repos, public, private or gated, created with ``POST /api/repos/create``
  (or :meth:`HubStandIn.create_repo`), each starting with an "initial commit" holding
  ``.gitattributes`` as the Hub's do. Repo info with ``expand`` (``sha``,
  ``lastModified``, ...), ``whoami-v2``. Only what huggingface_hub sends in cargohold's
  flows is served, in the shape it sends it (paths-info as a form, booleans as httpx
  writes them: anything else is 400), so the stand-in cannot accept a request the client
  would never make.
- Tokens: ``Authorization: Bearer`` tokens with a read or write role for one user.
  Anonymous callers read public repos; an unknown token gets 401 "Invalid credentials in
  Authorization header"; a private repo the caller cannot see is 404 ``RepoNotFound``
  (401 when anonymous), as the Hub hides it; a gated repo's files are 403 ``GatedRepo``
  until the user is let in; a write without write access is 403.
- Commits: ``POST .../preupload/{rev}`` (``lfs`` for files over 10 MB, binary samples or
  the default ``.gitattributes`` patterns; the existing file's oid), the Git LFS batch API
  (basic transfer: upload to a presigned-style URL, verify), and ``POST .../commit/{rev}``
  with an NDJSON body of ``header``, ``file`` (base64), ``lfsFile``, ``deletedFile`` and
  ``deletedFolder`` lines. A ``parentCommit`` that is not the branch head is 412; a deleted
  file that does not exist is 404 ``EntryNotFound``; a path that would be both a file and
  a folder, or a folder with more than ``folder_limit`` (10,000) entries, is 400. Every
  commit's tree is kept (a persistent tree: unchanged folders are shared), so reads at
  any commit sha are real.
- Reads: ``paths-info`` (``expand`` adds each path's last commit), ``tree`` (recursive or
  not, 1000 entries a page or 50 with ``expand``, cursor paging through ``Link: rel="next"``
  pinned to the commit of the first page; folders first, then files, by name, which is
  not byte order), ``resolve`` (``ETag``, ``X-Repo-Commit``, single ``Range`` with 206/416,
  and for LFS files a 302 to a CDN-style URL, as the Hub redirects to its CDN).
- Limits and faults: an optional commit rate limit per repo (``commit_limit=(count,
  seconds)``: 429 with ``RateLimit``, ``RateLimit-Policy`` and ``Retry-After`` headers and
  the Hub's message text), and injected faults (:class:`Fault`: a status, headers, body or
  delay for requests a predicate picks). :meth:`HubStandIn.kill` drops the listening
  socket and every open connection (an outage); :meth:`HubStandIn.start` brings it back on
  the same port with the same data.

Storage Buckets (the native bucket API) are served on the same port by
:mod:`testsupport.hubbuckets` (``hub.buckets``), with Xet on a ``local://`` CAS.

What it does not model for dataset repos: Xet (the CAS protocol behind ``hf_xet``: tests
run with ``HF_HUB_DISABLE_XET=1``, the path the Hub keeps for legacy LFS clients), LFS multipart
transfers, branches other than ``main``, tags, pull requests, copies, ``.gitignore``,
organisations, per-endpoint API rate limits (inject them), and texts or status codes the
Hub does not document: those marked "assumed" below are plausible, not checked.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .hubbuckets import BucketStandIn

__all__ = [
    "OTHER_TOKEN",
    "READ_TOKEN",
    "WRITE_TOKEN",
    "Fault",
    "HubStandIn",
]

#: Tokens every stand-in knows: user ``tester`` with write and read roles, user ``other``.
WRITE_TOKEN = "hf_standin_write_tester"
READ_TOKEN = "hf_standin_read_tester"
OTHER_TOKEN = "hf_standin_write_other"

LFS_THRESHOLD = 10_000_000  # the Hub stores files over 10 MB with LFS
# A subset of the .gitattributes the Hub writes into a new dataset repo.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.npy",
    "*.npz", "*.onnx", "*.parquet", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors",
    "*.tar", "*.tgz", "*.xz", "*.zip", "*.zst", "*.mp3", "*.wav", "*.ogg", "*.flac",
    "*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif", "*.mp4", "*.webm", "*.mov",
)  # fmt: skip
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
_PAGE = 1000
_PAGE_EXPANDED = 50


class HubError(Exception):
    """An error answer: status, message, and the Hub's ``X-Error-Code`` when it has one."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class _File:
    oid: str  # git blob id (of the LFS pointer, for LFS files)
    size: int
    sha256: str | None = None  # LFS files only
    content: bytes | None = None  # regular files only; LFS bytes live in the blob store


Tree = dict[str, "Tree | _File"]


@dataclass(slots=True)
class _Commit:
    oid: str
    parent: str | None
    title: str
    date: datetime
    root: Tree


@dataclass
class _Repo:
    repo_id: str
    owner: str
    private: bool
    gated: bool
    commits: list[_Commit] = field(default_factory=list)
    by_oid: dict[str, _Commit] = field(default_factory=dict)
    head: str = ""
    allowed: set[str] = field(default_factory=set)  # users let through the gate
    commit_times: deque[float] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Fault:
    """Answer the next ``times`` requests that ``match(method, path)`` with ``status``
    (and ``headers``, ``body``) instead of serving them; with ``status=None``, serve them
    after ``delay`` seconds. ``path`` is the request path with its query."""

    status: int | None
    times: int = 1
    match: Callable[[str, str], bool] = field(default=lambda method, path: True)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error": "injected fault"}'
    delay: float = 0.0


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _iso(date: datetime) -> str:
    return date.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise HubError(400, f"Invalid path in commit: {path!r}")  # assumed text
    return path


def _walk(root: Tree, path: str) -> Tree | _File | None:
    node: Tree | _File = root
    for part in path.split("/") if path else []:
        if not isinstance(node, dict):
            return None
        child = node.get(part)
        if child is None:
            return None
        node = child
    return node


def _tree_oid(node: Tree) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    for name in sorted(node):
        child = node[name]
        digest.update(name.encode() + b"\0")
        digest.update((child.oid if isinstance(child, _File) else _tree_oid(child)).encode())
    return digest.hexdigest()


class _Staged:
    """A commit being applied: copies folders on write, so older commits keep theirs."""

    def __init__(self, root: Tree) -> None:
        self.root: Tree = dict(root)
        self._copied = {id(self.root)}
        self.touched: list[list[str]] = []

    def _folder(self, parts: list[str]) -> Tree:
        node = self.root
        for i, name in enumerate(parts):
            child = node.get(name)
            if child is None:
                child = {}
                node[name] = child
                self._copied.add(id(child))
            elif isinstance(child, _File):
                where = "/".join(parts[: i + 1])
                raise HubError(400, f"{where!r} is a file, it cannot hold other files")  # assumed
            elif id(child) not in self._copied:
                child = dict(child)
                node[name] = child
                self._copied.add(id(child))
            node = child
        return node

    def get(self, path: str) -> Tree | _File | None:
        return _walk(self.root, path)

    def add(self, path: str, file: _File) -> None:
        parts = _check_path(path).split("/")
        folder = self._folder(parts[:-1])
        if isinstance(folder.get(parts[-1]), dict):
            raise HubError(400, f"{path!r} is a folder, it cannot be a file")  # assumed
        folder[parts[-1]] = file
        self.touched.append(parts[:-1])

    def delete(self, path: str, *, folder: bool) -> None:
        existing = self.get(path.rstrip("/"))
        if existing is None or isinstance(existing, dict) != folder:
            what = "folder" if folder else "file"
            raise HubError(404, f"A {what} with this name doesn't exist: {path}", "EntryNotFound")
        parts = path.rstrip("/").split("/")
        del self._folder(parts[:-1])[parts[-1]]
        self.touched.append(parts[:-1])

    def finish(self, limit: int) -> Tree:
        """Remove folders left empty (git keeps no empty trees) and check the entry cap."""
        for parts in sorted(self.touched, key=len, reverse=True):
            for depth in range(len(parts), 0, -1):
                node = _walk(self.root, "/".join(parts[:depth]))
                if isinstance(node, dict) and not node:
                    parent = _walk(self.root, "/".join(parts[: depth - 1]))
                    assert isinstance(parent, dict)
                    parent.pop(parts[depth - 1], None)
        for parts in self.touched:
            for depth in range(len(parts) + 1):
                node = _walk(self.root, "/".join(parts[:depth]))
                if isinstance(node, dict) and len(node) > limit:
                    where = "/".join(parts[:depth]) or "(root)"
                    raise HubError(  # assumed text: the Hub documents the cap, not the error
                        400, f"Too many entries in folder {where!r}: a folder holds at most {limit}"
                    )
        return self.root


class HubStandIn:
    """The stand-in server. ``with HubStandIn() as hub:`` starts it; see the module docstring."""

    def __init__(
        self,
        *,
        folder_limit: int = 10_000,
        commit_limit: tuple[int, float] | None = None,
    ) -> None:
        self.folder_limit = folder_limit
        self.commit_limit = commit_limit
        self.tokens: dict[str, tuple[str, str]] = {
            WRITE_TOKEN: ("tester", "write"),
            READ_TOKEN: ("tester", "read"),
            OTHER_TOKEN: ("other", "write"),
        }
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self.port = 0
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self._workdir = Path(tempfile.mkdtemp(prefix="cargohold-hubstandin-"))
        self._blobs = self._workdir / "lfs"
        self._blobs.mkdir()
        self._uploads: dict[str, tuple[str, int]] = {}  # upload secret -> (oid, size)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: Storage Buckets (the native bucket API), served on the same port.
        self.buckets = BucketStandIn(self)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, token: str | None = WRITE_TOKEN) -> dict[str, str]:
        """Variables that point huggingface_hub (and cargohold) at this stand-in."""
        env = {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
        }
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def start(self) -> Self:
        server = _Server(("127.0.0.1", self.port), _handler(self))
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="hub-standin", kwargs={"poll_interval": 0.05}
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def kill(self) -> None:
        """An outage: stop listening and drop every open connection. Data is kept."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if self._thread is not None:
            self._thread.join(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self._workdir, ignore_errors=True)
        self.buckets.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- set-up and inspection for tests --------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def create_repo(self, repo_id: str, *, private: bool = False, gated: bool = False) -> str:
        """Create the dataset repo ``owner/name`` (an initial commit with .gitattributes)."""
        owner = repo_id.split("/", 1)[0]
        with self._lock:
            if repo_id in self._repos:
                raise HubError(409, "You already created this dataset repo")
            repo = _Repo(repo_id, owner, private, gated)
            attributes = GITATTRIBUTES.encode()
            root: Tree = {
                ".gitattributes": _File(
                    _git_blob_oid(attributes), len(attributes), None, attributes
                )
            }
            self._append_commit(repo, "initial commit", root)
            self._repos[repo_id] = repo
        return repo_id

    def allow(self, repo_id: str, user: str) -> None:
        """Let ``user`` through a gated repo's gate."""
        self._repo(repo_id).allowed.add(user)

    def files(self, repo_id: str) -> dict[str, bytes]:
        """Every file at the head of ``main``, with its bytes."""
        repo = self._repo(repo_id)
        with repo.lock:
            root = repo.by_oid[repo.head].root
        return {path: self._read(f) for path, f in _files(root, "")}

    def commit_count(self, repo_id: str) -> int:
        return len(self._repo(repo_id).commits)

    def largest_folder(self, repo_id: str) -> int:
        """The most entries any folder holds at the head of ``main``."""
        repo = self._repo(repo_id)
        with repo.lock:
            root = repo.by_oid[repo.head].root

        def biggest(node: Tree) -> int:
            return max([len(node)] + [biggest(c) for c in node.values() if isinstance(c, dict)])

        return biggest(root)

    # -- the model ------------------------------------------------------------------------

    def _repo(self, repo_id: str) -> _Repo:
        repo = self._repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _append_commit(self, repo: _Repo, title: str, root: Tree) -> _Commit:
        parent = repo.head or None
        oid = hashlib.sha1(
            f"{repo.repo_id}{parent}{time.time_ns()}{uuid.uuid4()}".encode(), usedforsecurity=False
        ).hexdigest()
        commit = _Commit(oid, parent, title, datetime.now(UTC), root)
        repo.commits.append(commit)
        repo.by_oid[oid] = commit
        repo.head = oid
        return commit

    def _commit_at(self, repo: _Repo, revision: str) -> _Commit:
        if revision == "main":
            return repo.by_oid[repo.head]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            for commit in reversed(repo.commits):
                if commit.oid.startswith(revision):
                    return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _read(self, file: _File) -> bytes:
        if file.content is not None:
            return file.content
        assert file.sha256 is not None
        return (self._blobs / file.sha256).read_bytes()

    def _last_commit(self, repo: _Repo, commit: _Commit, path: str) -> _Commit:
        """The commit that last changed ``path``, walking back from ``commit``."""
        node = _walk(commit.root, path)
        oid = node.oid if isinstance(node, _File) else None
        while commit.parent is not None:
            parent = repo.by_oid[commit.parent]
            before = _walk(parent.root, path)
            if not isinstance(before, _File) or before.oid != oid:
                break
            commit = parent
        return commit

    def _entry(self, repo: _Repo, commit: _Commit, path: str, *, expand: bool) -> dict[str, Any]:
        node = _walk(commit.root, path)
        assert node is not None
        entry: dict[str, Any]
        if isinstance(node, _File):
            entry = {"type": "file", "oid": node.oid, "size": node.size, "path": path}
            if node.sha256 is not None:
                pointer = len(_lfs_pointer(node.sha256, node.size))
                entry["lfs"] = {"oid": node.sha256, "size": node.size, "pointerSize": pointer}
        else:
            entry = {"type": "directory", "oid": _tree_oid(node), "size": 0, "path": path}
        if expand:
            last = self._last_commit(repo, commit, path)
            entry["lastCommit"] = {"id": last.oid, "title": last.title, "date": _iso(last.date)}
        return entry

    def _can_read(self, repo: _Repo, user: str | None) -> None:
        if repo.private and user != repo.owner:
            # The Hub hides private repos: 401 for anonymous callers, 404 otherwise.
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")

    def _can_write(self, repo: _Repo, user: str | None, role: str | None) -> None:
        self._can_read(repo, user)
        if user is None:
            raise HubError(401, "You must be authenticated to write", "RepoNotFound")  # assumed
        if role != "write" or user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo.repo_id}")  # assumed

    def _preupload_mode(self, path: str, size: int, sample: bytes) -> str:
        name = path.rsplit("/", 1)[-1]
        if size > LFS_THRESHOLD or b"\0" in sample:
            return "lfs"
        return "lfs" if any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS) else "regular"

    def _rate_limited(self, repo: _Repo) -> None:
        if self.commit_limit is None:
            return
        count, window = self.commit_limit
        now = time.monotonic()
        while repo.commit_times and repo.commit_times[0] <= now - window:
            repo.commit_times.popleft()
        if len(repo.commit_times) >= count:
            wait = max(1, int(repo.commit_times[0] + window - now + 0.999))
            minutes = max(1, wait // 60)
            per = "hour" if window == 3600 else f"{window:g} seconds"
            raise HubError(
                429,
                f"You have exceeded the rate limit for repository commits ({count} per {per}). "
                f"You can retry this action in {minutes} minutes.",
                headers={
                    "RateLimit": f'"commits";r=0;t={wait}',
                    "RateLimit-Policy": f'"fixed window";"commits";q={count};w={window:g}',
                    "Retry-After": str(wait),
                },
            )

    # -- endpoints ------------------------------------------------------------------------

    def create_repo_api(
        self, user: str | None, role: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        if user is None or role != "write":
            raise HubError(
                401 if user is None else 403, "You must use a write token to create repos"
            )
        if body.get("type") != "dataset":
            raise HubError(400, "this stand-in only holds dataset repos")
        namespace = body.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        repo_id = f"{namespace}/{body['name']}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.create_repo(repo_id, private=private)
        return {"url": f"{self.endpoint}/datasets/{repo_id}", "name": repo_id, "id": repo_id}

    def repo_info(self, repo: _Repo, revision: str, expand: list[str]) -> dict[str, Any]:
        with repo.lock:
            commit = self._commit_at(repo, revision)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.owner,
            "sha": commit.oid,
            "lastModified": _iso(commit.date),
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": [{"rfilename": path} for path, _ in _files(commit.root, "")],
        }
        if expand:
            return {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return info

    def preupload(self, repo: _Repo, revision: str, body: dict[str, Any]) -> dict[str, Any]:
        with repo.lock:
            commit = self._commit_at(repo, revision)
        files = []
        for item in body.get("files", []):
            path = item["path"]
            sample = base64.b64decode(item.get("sample", ""))
            mode = self._preupload_mode(path, int(item["size"]), sample)
            existing = _walk(commit.root, path)
            oid = None
            if isinstance(existing, _File):
                oid = existing.sha256 if existing.sha256 is not None else existing.oid
            files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return {"files": files, "commitOid": commit.oid}

    def lfs_batch(self, repo: _Repo, body: dict[str, Any]) -> dict[str, Any]:
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not (self._blobs / oid).is_file():
                secret = uuid.uuid4().hex
                with self._lock:
                    self._uploads[secret] = (oid, size)
                entry["actions"] = {
                    "upload": {"href": f"{self.endpoint}/_lfs/upload/{secret}", "header": {}},
                    "verify": {"href": f"{self.endpoint}/_lfs/verify", "header": {}},
                }
            objects.append(entry)
        return {"transfer": "basic", "objects": objects}

    def lfs_upload(self, secret: str, chunks: Iterator[bytes]) -> None:
        with self._lock:
            expected = self._uploads.pop(secret, None)
        if expected is None:
            raise HubError(403, "upload URL expired or unknown")
        oid, size = expected
        digest = hashlib.sha256()
        received = 0
        tmp = self._blobs / f".{secret}"
        with tmp.open("wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                received += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != oid or received != size:
            tmp.unlink()
            raise HubError(400, "uploaded bytes do not match the LFS object's oid and size")
        tmp.replace(self._blobs / oid)

    def commit(self, repo: _Repo, revision: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line of a commit must be its header")
        header = lines[0]["value"]
        with repo.lock:
            head = self._commit_at(repo, revision)
            if revision != "main":
                raise HubError(400, "commits go to a branch; this stand-in has only main")
            parent = header.get("parentCommit")
            if parent is not None and not head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            self._rate_limited(repo)
            staged = _Staged(head.root)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                if key == "file":
                    data = base64.b64decode(value["content"])
                    staged.add(value["path"], _File(_git_blob_oid(data), len(data), None, data))
                elif key == "lfsFile":
                    oid, path = value["oid"], value["path"]
                    blob = self._blobs / oid
                    if not blob.is_file():
                        raise HubError(400, f"LFS file {oid} for {path!r} was never uploaded")
                    size = blob.stat().st_size
                    pointer_oid = _git_blob_oid(_lfs_pointer(oid, size))
                    staged.add(path, _File(pointer_oid, size, oid, None))
                elif key in ("deletedFile", "deletedFolder"):
                    staged.delete(value["path"], folder=key == "deletedFolder")
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            root = staged.finish(self.folder_limit)
            commit = self._append_commit(repo, header.get("summary") or "commit", root)
            if self.commit_limit is not None:
                repo.commit_times.append(time.monotonic())
        return {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self.endpoint}/datasets/{repo.repo_id}/commit/{commit.oid}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    def paths_info(
        self, repo: _Repo, revision: str, paths: list[str], expand: bool
    ) -> list[dict[str, Any]]:
        with repo.lock:
            commit = self._commit_at(repo, revision)
            return [
                self._entry(repo, commit, path, expand=expand)
                for path in dict.fromkeys(p.strip("/") for p in paths)
                if _walk(commit.root, path) is not None and path
            ]

    def tree(
        self,
        repo: _Repo,
        revision: str,
        path: str,
        *,
        recursive: bool,
        expand: bool,
        cursor: str | None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        with repo.lock:
            if cursor:
                oid, offset_text = base64.urlsafe_b64decode(cursor).decode().split(":")
                commit, offset = repo.by_oid[oid], int(offset_text)
            else:
                commit, offset = self._commit_at(repo, revision), 0
            node = _walk(commit.root, path)
            if not isinstance(node, dict):
                raise HubError(404, f"{path!r} is not a folder at {revision}", "EntryNotFound")
            paths = list(_listing(node, path, recursive=recursive))
            size = _PAGE_EXPANDED if expand else _PAGE
            page = [
                self._entry(repo, commit, p, expand=expand) for p in paths[offset : offset + size]
            ]
        following = None
        if offset + size < len(paths):
            following = base64.urlsafe_b64encode(f"{commit.oid}:{offset + size}".encode()).decode()
        return page, following

    def resolve(
        self, repo: _Repo, user: str | None, revision: str, path: str
    ) -> tuple[_Commit, _File]:
        if repo.gated and user != repo.owner and user not in repo.allowed:
            raise HubError(403, f"Access to dataset {repo.repo_id} is restricted.", "GatedRepo")
        with repo.lock:
            commit = self._commit_at(repo, revision)
        node = _walk(commit.root, path)
        if not isinstance(node, _File):
            raise HubError(404, "Entry not found", "EntryNotFound")
        return commit, node


def _files(node: Tree, prefix: str) -> Iterator[tuple[str, _File]]:
    for name in sorted(node):
        child = node[name]
        path = f"{prefix}/{name}" if prefix else name
        if isinstance(child, _File):
            yield path, child
        else:
            yield from _files(child, path)


def _listing(node: Tree, prefix: str, *, recursive: bool) -> Iterator[str]:
    """Folders first, then files, each by name; a folder's contents follow it."""
    folders = sorted(name for name, child in node.items() if isinstance(child, dict))
    files = sorted(name for name, child in node.items() if isinstance(child, _File))
    for name in folders:
        path = f"{prefix}/{name}" if prefix else name
        yield path
        if recursive:
            child = node[name]
            assert isinstance(child, dict)
            yield from _listing(child, path, recursive=True)
    for name in files:
        yield f"{prefix}/{name}" if prefix else name


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections, self.connections = self.connections, set()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


_API = re.compile(r"^/api/datasets/([^/]+)/([^/]+)(?:/(revision|preupload|commit|paths-info|tree)(?:/([^/]+))?(/.*)?)?$")  # fmt: skip
_FORM = "application/x-www-form-urlencoded"


def _flag(fields: dict[str, list[str]], name: str) -> bool:
    """A boolean field as huggingface_hub sends it (httpx writes ``true``/``false``);
    absent is false. Anything else is 400: the stand-in serves the client's shapes only."""
    values = fields.get(name, ["false"])
    if len(values) != 1 or values[0] not in ("true", "false"):
        raise HubError(400, f"{name} must be true or false, not {values!r}")
    return values[0] == "true"


_RESOLVE = re.compile(r"^/datasets/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
_LFS_BATCH = re.compile(r"^/datasets/([^/]+)/([^/]+?)\.git/info/lfs/objects/batch$")


def _handler(hub: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in separate writes

        def log_message(self, format: str, *args: object) -> None:
            pass

        # -- plumbing ---------------------------------------------------------------------

        def _chunks(self) -> Iterator[bytes]:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 1024 * 1024))
                if not chunk:
                    raise ConnectionError("the client went away mid-body")
                left -= len(chunk)
                yield chunk

        def _body(self) -> bytes:
            if getattr(self, "_read_body", None) is None:
                self._read_body = b"".join(self._chunks())
            return self._read_body

        def _json(self) -> dict[str, Any]:
            body = self._body()
            return json.loads(body) if body else {}

        def _send(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            # Recorded before it is sent: a client that has its answer finds it recorded.
            with hub._lock:
                hub.requests.append((self.command, self.path, status))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _send_json(self, value: object, headers: dict[str, str] | None = None) -> None:
            self._send(
                200,
                json.dumps(value).encode(),
                {"Content-Type": "application/json", **(headers or {})},
            )

        def _error(self, error: HubError) -> None:
            headers = {
                "Content-Type": "application/json",
                "X-Error-Message": error.message,
                **error.headers,
            }
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send(error.status, json.dumps({"error": error.message}).encode(), headers)

        def _caller(self) -> tuple[str | None, str | None]:
            auth = self.headers.get("Authorization", "")
            if not auth.lower().startswith("bearer "):
                return None, None
            token = auth.split(" ", 1)[1].strip()
            if token not in hub.tokens:
                raise HubError(401, "Invalid credentials in Authorization header")
            return hub.tokens[token]

        def _fault(self) -> bool:
            with hub._lock:
                fault = next(
                    (f for f in hub.faults if f.times > 0 and f.match(self.command, self.path)),
                    None,
                )
                if fault is not None:
                    fault.times -= 1
            if fault is None:
                return False
            time.sleep(fault.delay)
            if fault.status is None:
                return False
            self._body()  # read what was sent, so the connection stays usable
            self._send(
                fault.status, fault.body, {"Content-Type": "application/json", **fault.headers}
            )
            return True

        def _serve(self) -> None:
            self._read_body = None
            try:
                if self._fault():
                    return
                self._route()
            except HubError as error:
                with contextlib.suppress(ConnectionError):
                    self._body()
                self._error(error)
            except (ConnectionError, BrokenPipeError):
                self.close_connection = True
            except Exception as exc:  # a bug in the stand-in: say so in the answer
                self._send(500, json.dumps({"error": f"stand-in bug: {exc!r}"}).encode())

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

        # -- routes -----------------------------------------------------------------------

        def _route(self) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            if self.command == "PUT" and path.startswith("/_lfs/upload/"):
                hub.lfs_upload(path.rsplit("/", 1)[1], self._chunks())
                self._send(200)
                return
            if path.startswith("/_cdn/"):
                self._cdn(path.rsplit("/", 1)[1])
                return
            user, role = self._caller()
            if hub.buckets.route(self, path, query, user, role):
                return
            if path == "/api/whoami-v2" and self.command == "GET":
                if user is None:
                    raise HubError(401, "Invalid credentials in Authorization header")
                access = {"displayName": "stand-in token", "role": role}
                self._send_json(
                    {
                        "type": "user",
                        "name": user,
                        "auth": {"type": "access_token", "accessToken": access},
                    }
                )
                return
            if path == "/api/repos/create" and self.command == "POST":
                try:
                    self._send_json(hub.create_repo_api(user, role, self._json()))
                except HubError as error:
                    if error.status == 409:
                        url = f"{hub.endpoint}/datasets/{self._json().get('name')}"
                        self._send(409, json.dumps({"error": error.message, "url": url}).encode())
                        return
                    raise
                return
            if path == "/_lfs/verify" and self.command == "POST":
                body = self._json()
                blob = hub._blobs / str(body.get("oid"))
                if not blob.is_file() or blob.stat().st_size != body.get("size"):
                    raise HubError(404, "LFS object not found")
                self._send_json({"ok": True})
                return
            if match := _LFS_BATCH.match(path):
                repo = hub._repo(f"{unquote(match[1])}/{unquote(match[2])}")
                body = self._json()
                if body.get("operation") == "upload":
                    hub._can_write(repo, user, role)
                else:
                    hub._can_read(repo, user)
                self._send_json(hub.lfs_batch(repo, body))
                return
            if match := _RESOLVE.match(path):
                repo = hub._repo(f"{unquote(match[1])}/{unquote(match[2])}")
                hub._can_read(repo, user)
                self._resolve(repo, user, unquote(match[3]), unquote(match[4]))
                return
            match = _API.match(path)
            if match is None:
                raise HubError(404, f"no such endpoint in the stand-in: {self.command} {path}")
            repo = hub._repo(f"{unquote(match[1])}/{unquote(match[2])}")
            hub._can_read(repo, user)
            action = match[3]
            revision = unquote(match[4]) if match[4] else "main"
            if action is None or action == "revision":
                self._send_json(hub.repo_info(repo, revision, query.get("expand", [])))
            elif action == "preupload" and self.command == "POST":
                if query.get("create_pr") != ["1"]:
                    hub._can_write(repo, user, role)
                self._send_json(hub.preupload(repo, revision, self._json()))
            elif action == "commit" and self.command == "POST":
                hub._can_write(repo, user, role)
                if not self.headers.get("Content-Type", "").startswith("application/x-ndjson"):
                    raise HubError(400, "a commit body is NDJSON (application/x-ndjson)")
                lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
                self._send_json(hub.commit(repo, revision, lines))
            elif action == "paths-info" and self.command == "POST":
                # HfApi.get_paths_info's shape: a form with ``paths`` (repeated) and
                # ``expand`` as httpx encodes a bool.
                if not self.headers.get("Content-Type", "").startswith(_FORM):
                    raise HubError(400, f"paths-info takes a form body ({_FORM})")
                form = parse_qs(self._body().decode())
                expand = _flag(form, "expand")
                self._send_json(hub.paths_info(repo, revision, form.get("paths", []), expand))
            elif action == "tree" and self.command == "GET":
                # HfApi.list_repo_tree's shape: ``recursive`` and ``expand`` on the first
                # page, then the ``Link`` it was given.
                folder = unquote(match[5] or "").strip("/")
                recursive = _flag(query, "recursive")
                expand = _flag(query, "expand")
                cursor = query.get("cursor", [None])[0]
                page, following = hub.tree(
                    repo, revision, folder, recursive=recursive, expand=expand, cursor=cursor
                )
                headers = {}
                if following is not None:
                    base = f"{hub.endpoint}{path}"
                    params = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}"
                    headers["Link"] = f'<{base}?{params}&cursor={following}>; rel="next"'
                self._send_json(page, headers)
            else:
                raise HubError(405, f"{self.command} is not served on {path}")

        def _resolve(self, repo: _Repo, user: str | None, revision: str, path: str) -> None:
            commit, file = hub.resolve(repo, user, revision, path)
            headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
            if file.sha256 is not None:  # LFS: the Hub redirects to its CDN
                headers.update(
                    {
                        "Location": f"{hub.endpoint}/_cdn/{file.sha256}",
                        "ETag": f'"{file.sha256}"',
                        "X-Linked-Etag": f'"{file.sha256}"',
                        "X-Linked-Size": str(file.size),
                    }
                )
                self._send(302, b"", headers)
                return
            assert file.content is not None
            headers["ETag"] = f'"{file.oid}"'
            self._ranged(file.content, headers)

        def _cdn(self, sha256: str) -> None:
            blob = hub._blobs / sha256
            if not re.fullmatch(r"[0-9a-f]{64}", sha256) or not blob.is_file():
                raise HubError(404, "Not found")
            size = blob.stat().st_size
            start, stop = self._range(size)
            if start is None:
                return
            headers = {
                "ETag": f'"{sha256}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            status = 200
            if self.headers.get("Range"):
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
            with hub._lock:  # before it is sent, as in _send
                hub.requests.append((self.command, self.path, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(stop - start))
            self.end_headers()
            if self.command != "HEAD":
                with blob.open("rb") as fh:
                    fh.seek(start)
                    left = stop - start
                    while left > 0:
                        chunk = fh.read(min(left, 1024 * 1024))
                        self.wfile.write(chunk)
                        left -= len(chunk)

        def _range(self, size: int) -> tuple[int | None, int]:
            """The byte range asked for, or (None, 0) once a 416 has been sent."""
            header = self.headers.get("Range")
            if not header:
                return 0, size
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
            if match is None:
                return 0, size
            start = int(match[1])
            stop = min(size, int(match[2]) + 1) if match[2] else size
            if start >= size:
                self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                return None, 0
            return start, stop

        def _ranged(self, data: bytes, headers: dict[str, str]) -> None:
            start, stop = self._range(len(data))
            if start is None:
                return
            if self.headers.get("Range"):
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
                self._send(206, data[start:stop], headers)
            else:
                self._send(200, data, headers)

    return Handler


def quote_path(path: str) -> str:
    """A repo path as the resolve URL carries it."""
    return quote(path)
