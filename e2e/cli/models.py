"""``e2e models``: the names of the registered models."""

from __future__ import annotations

import argparse


def register(commands) -> None:
    models = commands.add_parser("models", help="list registered models")
    models.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    from e2e.models import available_models

    print("\n".join(available_models()))
    return 0
