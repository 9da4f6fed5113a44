"""``e2e models``: the names of the registered models; ``e2e models --fidelity NAME``: a model's fidelity
table (its paper's settings beside our ``paper`` and ``improved`` presets) as markdown."""

from __future__ import annotations

import argparse

from e2e.config import UsageError


def register(commands) -> None:
    models = commands.add_parser("models", help="list registered models, or print one model's fidelity table")
    models.add_argument("--fidelity", metavar="NAME", help="print model NAME's fidelity table (markdown)")
    models.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    from e2e.models import available_models, model_spec

    if args.fidelity is None:
        print("\n".join(available_models()))
        return 0
    table = model_spec(args.fidelity).fidelity
    if table is None:
        raise UsageError(f"model {args.fidelity!r} has no fidelity table yet")
    print(table.markdown(), end="")
    return 0
