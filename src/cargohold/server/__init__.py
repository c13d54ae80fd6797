"""The HTTP service: a JSON API over a Hold, Prometheus metrics, health checks, a dashboard.

``create_app(hold)`` returns an ASGI (FastAPI) app. Serve it with ``cargohold serve``, or
mount it into an existing app::

    app.mount("/storage", create_app(hold))          # FastAPI, or Gradio's underlying app

A thin shell: every route parses, calls the Hold's public API and formats. Keys in URLs
follow the key rules (a traversal attempt is a 400, never a file outside the hold).
Served by your own uvicorn, pass ``**uvicorn_options(hold.settings)`` for the header
and idle timeouts ``cargohold serve`` applies.

Reads are open; ``PUT`` and ``DELETE`` need ``Authorization: Bearer <CARGOHOLD_TOKEN>``,
and with no token configured the service refuses writes instead of accepting anyone's.
"""

from __future__ import annotations

from ._app import create_app
from ._http import uvicorn_options

__all__ = ["create_app", "uvicorn_options"]
