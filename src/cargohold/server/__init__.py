"""The HTTP service: a JSON API over a Hold, Prometheus metrics, health checks, a dashboard.

``create_app(hold)`` returns an ASGI (FastAPI) app. Serve it with ``cargohold serve``, or
mount it into an existing app::

    app.mount("/storage", create_app(hold))          # FastAPI, or Gradio's underlying app

A thin shell: every route parses, calls the Hold's public API and formats. Keys in URLs
follow the key rules (a traversal attempt is a 400, never a file outside the hold).
Private by default (see ``_auth``): reads need ``Authorization: Bearer <token>``
(``CARGOHOLD_TOKEN`` or ``CARGOHOLD_READ_TOKEN``) except under ``CARGOHOLD_PUBLIC_PREFIXES``,
writes need ``CARGOHOLD_TOKEN``; with no token configured (local mode) only clients on
the service's machine read, and nobody writes. Nothing uploaded runs on its origin.
Served by your own uvicorn, pass ``**uvicorn_options(hold.settings)`` for the header
and idle timeouts ``cargohold serve`` applies.
"""

from __future__ import annotations

from ._app import create_app
from ._http import uvicorn_options

__all__ = ["create_app", "uvicorn_options"]
