"""``e2e benchmark``: every model on the same clips, splits and metrics; one mean±std table."""

from __future__ import annotations

import argparse
from pathlib import Path

from e2e.cli.options import (
    add_data_dir,
    add_dispatch,
    add_out,
    add_overrides,
    add_seeds,
    config_path,
    data_dir,
    dispatch,
    override_task,
)
from e2e.cli.protocols import add_protocol_arguments, run_protocol, uses_protocol
from e2e.config import REPO_CONFIGS


def register(commands) -> None:
    benchmark = commands.add_parser("benchmark", help="every model on the same clips and splits: one mean±std table")
    add_benchmark_arguments(benchmark)
    add_protocol_arguments(benchmark)
    benchmark.set_defaults(handler=run_benchmark)


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``benchmark`` and ``sweep missing`` share."""
    add_data_dir(parser)
    parser.add_argument(
        "--models",
        default="fe2e,mesm,lf_lstm,lf_trans,emoembs,mult",
        help="comma-separated registered models, or 'all' (every model the package ships that supports the "
        "--set data.task, default emotion)",
    )
    add_seeds(parser, "0,1,2")
    parser.add_argument(
        "--config-dir",
        type=config_path,
        default=None,
        help=f"folder of <model>.yaml files (default: {REPO_CONFIGS}/<dataset of DATA_DIR>)",
    )
    parser.add_argument(
        "--knowledge-data",
        type=Path,
        default=None,
        help="the other reorganized corpus, where ConKI pretrains its adapters",
    )
    add_overrides(parser)
    add_out(parser)
    add_dispatch(parser)


def benchmark_request(args: argparse.Namespace):
    """The :class:`~e2e.experiments.benchmark.BenchmarkRequest` the shared options describe."""
    from e2e.experiments.benchmark import BenchmarkRequest, dataset_of, parse_models

    corpus = data_dir(args)
    return BenchmarkRequest(
        data_dir=corpus,
        models=parse_models(args.models, override_task(args.overrides)),
        seeds=args.seeds,
        config_dir=args.config_dir or REPO_CONFIGS / dataset_of(corpus),
        out=args.out,
        overrides=args.overrides,
        knowledge_data=args.knowledge_data,
    )


def run_benchmark(args: argparse.Namespace) -> int:
    from e2e.experiments.benchmark import benchmark
    from e2e.reporting.report import format_summary

    if uses_protocol(args):
        return run_protocol(args, benchmark_request(args), dispatch(args))
    summary = benchmark(benchmark_request(args), jobs=args.jobs, executor=dispatch(args))
    print((args.out / "report.md").read_text(encoding="utf-8"))
    print(format_summary(summary))
    return 0
