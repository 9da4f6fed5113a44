"""``e2e sweep top-p | modalities | missing``: sweeps of independent, resumable runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from e2e.cli.benchmark import add_benchmark_arguments, benchmark_request
from e2e.cli.options import add_config, add_dispatch, add_out, add_overrides, add_seeds, dispatch, override_task


def register(commands) -> None:
    sweep = commands.add_parser("sweep", help="top-p, modality and missing-input sweeps (each point its own run)")
    sweeps = sweep.add_subparsers(dest="sweep", required=True)

    top_p = sweeps.add_parser("top-p", help="MESM per top-p value and seed, FE2E as reference (Figure 5)")
    add_config(top_p)
    top_p.add_argument(
        "--values", type=values, default=values("0.1:1.0:0.1"), help="start:stop:step (inclusive) or a,b,c"
    )
    top_p.add_argument("--flops-utterances", type=int, default=8, help="test utterances for GFLOPs")
    top_p.set_defaults(handler=run_top_p)

    modalities = sweeps.add_parser("modalities", help="T, A, V, TA, TV, AV, TAV per model (Table 5)")
    add_config(modalities, help="a folder of <model>.yaml files, or one YAML used for every model")
    modalities.add_argument("--models", default="fe2e,mesm", help="comma-separated registered models, or 'all'")
    modalities.set_defaults(handler=run_modalities)
    for parser in (top_p, modalities):
        add_seeds(parser, "0")
        add_overrides(parser)
        add_out(parser)
        add_dispatch(parser, "points trained in parallel processes")

    missing = sweeps.add_parser("missing", help="test metrics against the fraction of missing inputs, per model")
    add_benchmark_arguments(missing)
    missing.add_argument(
        "--rates", type=values, default=values("0.0:0.9:0.1"), help="start:stop:step (inclusive) or a,b,c"
    )
    missing.add_argument(
        "--modes",
        default="elements,modalities",
        help="elements (frames, chunks, tokens) and/or modalities (whole modalities)",
    )
    missing.set_defaults(handler=run_missing)


def values(text: str) -> list[float]:
    from e2e.experiments.jobs import parse_values

    try:
        return parse_values(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_top_p(args: argparse.Namespace) -> int:
    from e2e.experiments.top_p import sweep_top_p
    from e2e.models import load_config

    csv = sweep_top_p(
        load_config(args.config, args.overrides),
        values=args.values,
        seeds=args.seeds,
        out=args.out,
        jobs=args.jobs,
        flops_utterances=args.flops_utterances,
        executor=dispatch(args),
    )
    print(f"{csv}\n{args.out / 'top_p.png'}")
    return 0


def run_modalities(args: argparse.Namespace) -> int:
    from e2e.experiments.benchmark import parse_models
    from e2e.experiments.modalities import sweep_modalities

    csv = sweep_modalities(
        Path(args.config),
        models=parse_models(args.models, override_task(args.overrides)),
        seeds=args.seeds,
        out=args.out,
        overrides=args.overrides,
        jobs=args.jobs,
        executor=dispatch(args),
    )
    print((args.out / "modalities.md").read_text(encoding="utf-8"))
    print(csv)
    return 0


def run_missing(args: argparse.Namespace) -> int:
    from e2e.experiments.missing import sweep_missing

    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    csv = sweep_missing(benchmark_request(args), rates=args.rates, modes=modes, jobs=args.jobs, executor=dispatch(args))
    print(f"{csv}\n{args.out / 'missing.png'}")
    return 0
