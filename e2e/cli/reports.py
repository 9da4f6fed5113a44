"""``e2e table`` (one row per finished run) and ``e2e report`` (mean±std over seeds, markdown + CSV)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2e.cli.options import add_out


def register(commands) -> None:
    table = commands.add_parser("table", help="markdown table of finished runs' test metrics")
    table.add_argument("run_dirs", type=Path, nargs="+")
    table.add_argument("--split", default="test", choices=("valid", "test"))
    table.set_defaults(handler=run_table)

    report = commands.add_parser("report", help="mean±std tables (markdown + CSV) over finished runs")
    report.add_argument("run_dirs", type=Path, nargs="+")
    add_out(report, help="folder for report.md and report.csv", required=False)
    report.set_defaults(handler=run_report)


def run_table(args: argparse.Namespace) -> int:
    from e2e.reporting.tables import results_table

    print(results_table(finished_runs(args.run_dirs, args.split), args.split))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from e2e.reporting.report import write_report

    print(write_report(finished_runs(args.run_dirs), args.out))
    return 0


def finished_runs(paths: list[Path], split: str = "test") -> list[dict]:
    """The finished runs' results among ``paths``; every other path is named on stderr with the reason."""
    from e2e.reporting.tables import load_results

    results, notes = load_results(paths, split)
    for note in notes:
        print(f"e2e: skipped {note}", file=sys.stderr)
    return results
