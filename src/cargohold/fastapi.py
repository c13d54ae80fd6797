"""FastAPI apps on a Hold: a lifespan that opens and closes it, and a dependency.

``pip install 'cargohold[fastapi]'``::

    from fastapi import FastAPI
    import cargohold.fastapi
    from cargohold.fastapi import HoldDep

    app = FastAPI(lifespan=cargohold.fastapi.lifespan(mount="/storage"))

    @app.get("/notes/{name}")
    def read_note(name: str, hold: HoldDep) -> bytes:
        return hold.get(f"notes/{name}")

What it promises:

- **One Hold per process, open while the app serves.** :func:`lifespan` opens it when
  the server starts the app (``cargohold.open(**settings)``: arguments, then
  ``CARGOHOLD_*`` variables), on the main thread, so the SIGTERM / SIGINT flush is
  installed in front of the server's own handler; each worker of uvicorn or gunicorn
  opens its own, after any fork. It closes it when the server stops: a final flush
  within ``shutdown_grace``, so what the app acknowledged is on the remote (or, past
  the grace, still in the journal for the next start). A Hold you pass in is used and
  left open: whoever opened it closes it.
- **The dependency** (:func:`get_hold`, or the ``HoldDep`` annotation) gives each request
  that Hold; without the lifespan it raises ``ConfigError`` saying what to add.
- **The service** (``mount="/storage"``): the JSON API and dashboard of
  :func:`cargohold.server.create_app` for that Hold at ``/storage/`` (``/storage``
  redirects there), ahead of the app's own routes, for as long as the Hold is open. It
  keeps its own gate: reads need a token unless public or local, writes the write token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from .errors import ConfigError

try:
    from fastapi import Depends, FastAPI, Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute, Mount, Route
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ConfigError(
        "cargohold.fastapi needs FastAPI", hint="pip install 'cargohold[fastapi]'"
    ) from exc

from .hold import Hold
from .hold import open as open_hold_from_settings

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

__all__ = ["HoldDep", "get_hold", "lifespan", "service_routes"]

#: Where the lifespan keeps the Hold: the lifespan state (``request.state``) and ``app.state``.
STATE_KEY = "cargohold_hold"


def lifespan(
    hold: Hold | Callable[[], Hold] | None = None,
    *,
    mount: str | None = None,
    **settings: Any,
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """A FastAPI ``lifespan=``: opens the Hold at startup and closes it at shutdown.

    ``hold``: None opens ``cargohold.open(**settings)``; a callable is called at startup
    to open one (closed at shutdown too); an open Hold is used and left open. ``mount``:
    a path such as ``"/storage"`` where the HTTP service is served while the app runs.
    """
    if isinstance(hold, Hold) and settings:
        raise ConfigError(
            "settings were passed with an open Hold", hint="pass either a Hold or settings"
        )

    @contextlib.asynccontextmanager
    async def open_hold(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Opened on the server's thread (the main one): signal handlers install there.
        if isinstance(hold, Hold):
            opened, owned = hold, False
        elif hold is None:
            opened, owned = open_hold_from_settings(**settings), True
        else:
            opened, owned = hold(), True
        routes: list[Any] = []
        try:
            # Inside the try: a mount that fails (a bad path) must not leave an owned Hold open.
            routes = service_routes(opened, mount) if mount is not None else []
            app.router.routes[0:0] = routes  # ahead of the app's own
            setattr(app.state, STATE_KEY, opened)
            yield {STATE_KEY: opened}
        finally:
            for route in routes:
                with contextlib.suppress(ValueError):
                    app.router.routes.remove(route)
            with contextlib.suppress(AttributeError, KeyError):  # Starlette's State: KeyError
                delattr(app.state, STATE_KEY)
            if owned:
                opened.close()  # the final flush, within shutdown_grace

    return open_hold


def get_hold(request: Request) -> Hold:
    """The Hold :func:`lifespan` opened (a FastAPI dependency)."""
    found = getattr(request.state, STATE_KEY, None) or getattr(request.app.state, STATE_KEY, None)
    if not isinstance(found, Hold):
        raise ConfigError(
            "no Hold is open for this app",
            hint="create the app with FastAPI(lifespan=cargohold.fastapi.lifespan())",
        )
    return found


#: ``hold: HoldDep`` in a route's parameters gives it the app's Hold.
HoldDep = Annotated[Hold, Depends(get_hold)]


def service_routes(hold: Hold, path: str) -> list[BaseRoute]:
    """The HTTP service for ``hold`` at ``path`` (``/storage``: the API and dashboard at
    ``/storage/``, and ``/storage`` redirecting there with a relative Location, so the
    redirect stays right behind a proxy or under a root path)."""
    from .errors import InvalidInput
    from .server import create_app

    path = "/" + path.strip("/")
    if path == "/":
        raise InvalidInput(
            "the service needs a path of its own beside the app",
            hint="pass a path such as '/storage'",
        )
    name = path.rsplit("/", 1)[-1]

    async def add_slash(request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return Response(status_code=307, headers={"location": f"{name}/{query}"})

    return [
        Route(path, add_slash, methods=["GET", "HEAD"], include_in_schema=False),
        Mount(path, app=create_app(hold)),
    ]
