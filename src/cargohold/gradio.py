"""Gradio apps on a Hold: the HTTP service mounted, examples cached once, files served.

``pip install 'cargohold[gradio]'``. One call after the UI is built::

    hold = cargohold.open()
    with gr.Blocks() as demo:
        ...                                   # gr.Examples(..., cache_examples=True) and all
    app = cargohold.gradio.mount(demo, hold)  # for uvicorn: `uvicorn app:app`
    demo.launch()                             # or this: both serve the same routes

What :func:`mount` promises:

- **The service at** ``path`` (``/storage/``: the JSON API and the dashboard of
  :func:`cargohold.server.create_app`), whether the app is started with ``demo.launch()``
  or served by uvicorn (or any ASGI server) through the returned app. ``/storage`` without
  the slash redirects to ``storage/`` (a relative Location, so it stays right behind a
  proxy and under a root path). It stays private: its own gate answers every request,
  so reads need a token (or a public prefix, or local mode for clients on this machine),
  exactly as under ``cargohold serve``. Mounting adds no route to Gradio's own.
- **Cached examples survive restarts, per app version.** Gradio keeps what
  ``cache_examples`` computed in ``GRADIO_EXAMPLES_CACHE`` (default
  ``.gradio/cached_examples``), one folder per ``gr.Examples``, and computes it again
  whenever that folder is missing: after every redeploy on a host whose disk goes. Here
  the folder is restored from the remote (``gradio/examples/<version>/``) before Gradio
  looks at it (``mount`` is called before the app starts, Gradio caches in its startup
  events), pushed once the startup caching is done, then kept like any ``persist_dir``
  folder (scanned every ``persist_interval``, on ``flush()`` and at shutdown), so
  examples cached lazily later are kept too. A folder made by another version is
  emptied first (what Gradio's own message asks you to do by hand), so a new version
  never shows the old one's results. A restored cache that was pushed half-written
  (the process died while Gradio wrote it) is cut back to the examples whose rows and
  files are all there; Gradio computes the others when they are clicked (or, if none
  was whole, all of them at startup again).
- Only an app with a ``gr.Examples`` that caches (``cache_examples=True`` or lazy) gets
  this: an app without one needs no version and touches no folder (its working
  directory may be read-only).
- **The version** is ``version=`` when given (a git commit, a model name: anything the
  results depend on), else a digest of the file that called :func:`mount`: editing that
  file invalidates the cache, a change elsewhere (a model module) does not, so pass
  ``version`` when the results depend on more than that file.
- **Outputs** (``outputs=True``): Gradio's temp folder (``GRADIO_TEMP_DIR``: uploads and
  every file a handler returned, which the links Gradio hands out point at) is kept
  under ``gradio/outputs/`` and restored at start, so links given out before a restart
  (deep links, run history) still open after it. Off by default: it stores every upload.

:func:`servable` makes a file of the Hold (``hold.path(key)``, ``hold.fetch(url)``, a memo
entry's ``path``) something a Gradio component shows, wherever the data directory is,
without opening that directory to Gradio's file route (``allowed_paths`` would serve
every file in it, debug bundles included, to anyone who guesses a path).

Hooks used, all public: Gradio's ``app_kwargs`` (``launch()`` passes them to the FastAPI
app it builds), ``gr.mount_gradio_app``, ``GRADIO_EXAMPLES_CACHE`` and ``GRADIO_TEMP_DIR``
(through ``gradio.utils.get_cache_folder`` / ``get_upload_folder``, so the same rules
apply) and ``Blocks.extra_startup_events`` (run after the examples are cached). One
adaptation: Gradio has no way to add routes to the app ``launch()`` builds other than its
``app_kwargs`` argument, so :func:`mount` wraps ``launch`` on this ``demo`` instance only
(never Gradio's class) to add them to whatever ``app_kwargs`` the caller passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InvalidInput, NotFoundError

try:
    import gradio as gr
    from gradio import utils as gradio_utils
    from gradio.helpers import Examples  # the class gr.Examples(...) builds
    from starlette.routing import BaseRoute
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ConfigError(
        "cargohold.gradio needs Gradio", hint="pip install 'cargohold[gradio]'"
    ) from exc

from .fastapi import service_routes

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

    from .hold import Hold
    from .persist import PersistedDir

__all__ = ["GradioApp", "app_version", "mount", "servable"]

log = logging.getLogger("cargohold.gradio")

#: Remote prefixes (under the Hold) of what this module keeps.
EXAMPLES_PREFIX = "gradio/examples"
OUTPUTS_PREFIX = "gradio/outputs"
#: Written into the examples folder: the version its contents belong to (never pushed:
#: persist_dir ignores ``.cargohold-*`` names).
VERSION_MARKER = ".cargohold-version"
_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def app_version(source: str | os.PathLike[str] | None = None) -> str:
    """The default app version: ``file-`` and the first 16 hex digits of the SHA-256 of
    ``source`` (a file of the app), or of the main script when None. A ConfigError when
    neither is a readable file (pass ``version=`` to :func:`mount` then)."""
    if source is None:
        source = getattr(sys.modules.get("__main__"), "__file__", None)
    if source is None:
        raise ConfigError(
            "no file to take the app's version from",
            hint="pass version= to cargohold.gradio.mount() (a git commit, a release name)",
        )
    try:
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {source} to take the app's version from it",
            hint="pass version= to cargohold.gradio.mount()",
        ) from exc
    return f"file-{digest[:16]}"


def _key_segment(version: str) -> str:
    """``version`` as one key segment: itself when it is short and plain, else a digest."""
    if _SAFE_VERSION.fullmatch(version) and version not in (".", ".."):
        return version
    return "v-" + hashlib.sha256(version.encode()).hexdigest()[:16]


def mount(
    demo: gr.Blocks,
    hold: Hold,
    *,
    path: str | None = "/storage",
    cache_examples: bool = True,
    outputs: bool = False,
    version: str | None = None,
    mount_kwargs: Mapping[str, Any] | None = None,
) -> GradioApp:
    """Mount ``hold``'s HTTP service at ``path`` (None: no service), make the examples
    cache durable per ``version`` and, with ``outputs``, Gradio's temp folder too (see the
    module docstring for what each promises). Call it once the UI is built and before the
    app starts. Returns the ASGI app to serve with uvicorn; ``demo.launch()`` serves the
    same routes. ``mount_kwargs`` go to ``gr.mount_gradio_app`` (``auth=``,
    ``allowed_paths=``, ...) when the returned app is served."""
    if version is None and cache_examples and _caches_examples(demo):
        caller = sys._getframe(1).f_globals.get("__file__")
        version = app_version(caller)
    routes = service_routes(hold, path) if path is not None else []
    if routes:
        _add_routes_to_launch(demo, routes)
    if cache_examples and _caches_examples(demo):
        assert version is not None
        examples = _keep_examples(hold, Path(gradio_utils.get_cache_folder()), version)
        demo.extra_startup_events.append(_scan_after_startup(examples))
    if outputs:
        hold.persist_dir(Path(gradio_utils.get_upload_folder()), prefix=OUTPUTS_PREFIX)
    return GradioApp(demo, routes, dict(mount_kwargs or {}))


class GradioApp:
    """The ASGI app :func:`mount` returns: the service's routes, then the Blocks mounted at
    ``/`` with ``gr.mount_gradio_app``. Built on first use, so a script that calls
    ``demo.launch()`` instead never builds it (mounting changes the Blocks' settings)."""

    def __init__(self, demo: gr.Blocks, routes: list[BaseRoute], mount_kwargs: dict[str, Any]):
        self.demo = demo
        self.routes = routes
        self.mount_kwargs = mount_kwargs
        self._app: Any = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Any:
        """The FastAPI app (built now if it was not yet)."""
        with self._lock:
            if self._app is None:
                from fastapi import FastAPI

                app = FastAPI(routes=list(self.routes), openapi_url=None)
                self._app = gr.mount_gradio_app(app, self.demo, path="/", **self.mount_kwargs)
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _caches_examples(demo: gr.Blocks) -> bool:
    """Whether any gr.Examples of ``demo`` caches its outputs. Each gr.Examples adds its
    caching to the root Blocks' startup events when it is built; an app with none has no
    cache folder to keep (and its folder may not even be writable: a read-only app dir)."""
    for event in demo.extra_startup_events:
        owner = getattr(event, "__self__", None)
        if isinstance(owner, Examples) and owner.cache_examples:
            return True
    return False


def _add_routes_to_launch(demo: gr.Blocks, routes: list[BaseRoute]) -> None:
    """Make ``demo.launch()`` build its app with ``routes`` first (see the module
    docstring: ``app_kwargs`` is Gradio's only hook into the app launch() builds)."""
    original = getattr(demo.launch, "__cargohold_original__", demo.launch)

    @functools.wraps(original)
    def launch(*args: Any, **kwargs: Any) -> Any:
        app_kwargs = dict(kwargs.get("app_kwargs") or {})
        app_kwargs["routes"] = [*routes, *app_kwargs.get("routes", [])]
        kwargs["app_kwargs"] = app_kwargs
        return original(*args, **kwargs)

    launch.__cargohold_original__ = original  # type: ignore[attr-defined]
    demo.launch = launch  # type: ignore[method-assign]


# -- the examples cache --------------------------------------------------------------------


#: The examples folders kept in this process: (Hold, folder) -> (version, its PersistedDir).
#: Two Blocks of one app share Gradio's folder, so they share its keeping too.
_kept: dict[tuple[int, Path], tuple[str, PersistedDir]] = {}
_kept_lock = threading.Lock()


def _keep_examples(hold: Hold, folder: Path, version: str) -> PersistedDir:
    folder = folder.absolute()
    with _kept_lock:
        kept = _kept.get((id(hold), folder))
        if kept is not None and kept[1].hold is hold:
            if kept[0] != version:
                raise ConfigError(
                    f"the examples cache {folder} is already kept for version {kept[0]!r}",
                    hint="pass the same version= to every mount() of this process",
                )
            return kept[1]
        persisted = _restore_examples(hold, folder, version)
        _kept[(id(hold), folder)] = (version, persisted)
        return persisted


def _restore_examples(hold: Hold, folder: Path, version: str) -> PersistedDir:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / VERSION_MARKER
    try:
        previous: str | None = marker.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        previous = None  # a cache made without cargohold (committed with the app?): kept
    if previous is not None and previous != version:
        log.info("cargohold: examples cache of version %s cleared for %s", previous, version)
        _empty(folder)
    _write_atomic(marker, version.encode())
    prefix = f"{EXAMPLES_PREFIX}/{_key_segment(version)}"
    persisted: PersistedDir = hold.persist_dir(folder, prefix=prefix)
    repaired = [sub.name for sub in sorted(folder.iterdir()) if sub.is_dir() and _repair(sub)]
    if repaired:
        log.warning(
            "cargohold: examples cache %s was stored half-written; kept the complete "
            "examples, Gradio computes the others when they are asked for",
            ", ".join(repaired),
        )
    if persisted.restored:
        log.info("cargohold: %d examples cache file(s) restored", persisted.restored)
    return persisted


def _scan_after_startup(persisted: PersistedDir) -> Callable[[], Coroutine[Any, Any, None]]:
    async def push_examples() -> None:
        # Runs after every gr.Examples' own startup event (they were added when the
        # examples were built, before mount()), so the eager caching is complete.
        report = await asyncio.to_thread(persisted.scan)
        log.info(
            "cargohold: examples cache %s kept after startup (%d file(s) pushed)",
            persisted.folder,
            report.pushed,
        )

    return push_examples


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.name == VERSION_MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".cargohold-{uuid.uuid4().hex}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _repair(folder: Path) -> bool:
    """Cut one gr.Examples' cache back to what is whole; True if it changed.

    Gradio's layout (gradio/helpers.py): ``log.csv`` holds a header and one row per
    cached example, in the order computed; line i of ``indices.csv`` is the example
    whose row is i. A file an output refers to is copied beside them before its row is
    written. A scan made while Gradio wrote may have stored the index without its row,
    or a row without its file: keep the longest prefix where row, index and files agree.
    """
    log_csv, indices_csv = folder / "log.csv", folder / "indices.csv"
    if not log_csv.is_file():
        return False
    try:
        with log_csv.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        indices = indices_csv.read_text(encoding="utf-8").split() if indices_csv.exists() else []
    except (OSError, UnicodeDecodeError, csv.Error):
        rows, indices = [], []
    header, data = (rows[0], rows[1:]) if rows else ([], [])
    keep = 0
    while keep < min(len(data), len(indices)) and _files_exist(data[keep]):
        keep += 1
    if keep == len(data) == len(indices) and rows:
        return False
    if keep == 0:  # nothing usable: Gradio caches this one again from scratch
        log_csv.unlink(missing_ok=True)
        indices_csv.unlink(missing_ok=True)
        return True
    with contextlib.suppress(FileNotFoundError):
        text = _csv_text([header, *data[:keep]])
        _write_atomic(log_csv, text.encode())
        _write_atomic(indices_csv, "".join(f"{i}\n" for i in indices[:keep]).encode())
    return True


def _csv_text(rows: list[list[str]]) -> str:
    import io

    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def _files_exist(row: list[str]) -> bool:
    for cell in row:
        try:
            value = json.loads(cell)
        except ValueError:
            continue
        for file_path in _file_paths(value):
            if not Path(file_path).is_file():
                return False
    return True


def _file_paths(value: Any) -> Iterator[str]:
    """Paths of the files (Gradio's FileData: a dict with a ``path``) inside ``value``."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str) and "meta" in value:
            yield value["path"]
        for item in value.values():
            yield from _file_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from _file_paths(item)


# -- serving the Hold's files to components -------------------------------------------------


def servable(path: str | os.PathLike[str]) -> str:
    """A path to the same bytes that Gradio serves: return it from a handler (to
    ``gr.Video``, ``gr.File``, ``gr.Gallery``, ...) or use it as a component's value.

    Gradio serves files from its temp folder, the working directory and the system temp
    directory only. The file is hard-linked into Gradio's temp folder (copied when that
    folder is on another file system), under a name unique to this version of the file,
    so nothing else of the data directory becomes reachable and Gradio does not copy it
    again. Idempotent: the same unchanged file gives the same path. The link outlives
    an eviction from the local tier until Gradio's ``delete_cache`` (if set) removes it.
    """
    source = Path(path)
    try:
        stat = source.stat()
    except FileNotFoundError as exc:
        raise NotFoundError(f"no file {source} to serve", hint="pass an existing file") from exc
    if not source.is_file():
        raise InvalidInput(
            f"{source} is not a file", hint="pass each file of a folder result on its own"
        )
    upload = Path(gradio_utils.get_upload_folder()).resolve()
    real = source.resolve()
    if real.is_relative_to(upload):
        return str(source)
    identity = f"{real}\0{stat.st_dev}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}"
    folder = upload / "cargohold" / hashlib.sha256(identity.encode()).hexdigest()[:32]
    target = folder / source.name
    if target.is_file():
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".cargohold-{uuid.uuid4().hex}"
    try:
        try:
            os.link(real, tmp)
        except OSError:  # another file system (or no hard links there): a copy
            shutil.copyfile(real, tmp)
        os.replace(tmp, target)  # whole or absent, never half a copy
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return str(target)
