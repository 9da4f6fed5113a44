"""``e2e status DIR``: done / running / failed / pending per job of a benchmark or sweep directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(commands) -> None:
    status = commands.add_parser("status", help="done / running / failed / pending per job of a sweep or benchmark")
    status.add_argument("dir", type=Path, metavar="DIR", help="the --out of an e2e benchmark or sweep")
    status.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    from e2e.experiments.status import folder_status, format_status, status_json

    statuses = folder_status(args.dir)
    print(json.dumps(status_json(args.dir, statuses), indent=2) if args.json else format_status(args.dir, statuses))
    return 0
