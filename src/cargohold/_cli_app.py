"""The ``cargohold`` command's Typer app and consoles, shared by the modules that register
commands on it (:mod:`cargohold.cli`, :mod:`cargohold._cli_hold`): both import this one,
and ``cli`` imports ``_cli_hold`` to register its commands, so the arrows point one way."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.console import Console

from ._version import __version__

__all__ = ["app", "console", "err_console", "options"]

app = typer.Typer(
    name="cargohold",
    help="Storage for apps on ephemeral hosts: fast like a local disk, durable like a bucket.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: The global options given on this command line (``--debug``).
options: dict[str, Any] = {"debug": False}
console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cargohold {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    options["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
