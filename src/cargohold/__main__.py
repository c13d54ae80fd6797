"""``python -m cargohold`` runs the command line."""

from .cli import main

main()
