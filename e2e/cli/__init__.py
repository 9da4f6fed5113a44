"""The ``e2e`` command: one module per command group, each parsing its arguments and calling the library."""

from e2e.cli.main import main

__all__ = ["main"]
