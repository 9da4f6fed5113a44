"""``e2e train`` (a run, DDP under torchrun) and ``e2e eval`` (a checkpoint at its stored thresholds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from e2e.cli.options import add_config, add_data_dir, add_device, add_out, add_overrides
from e2e.data.bundle import SPLITS


def register(commands) -> None:
    train = commands.add_parser("train", help="train a model (DDP under torchrun)")
    add_config(train)
    add_overrides(train)
    add_out(train, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    train.add_argument(
        "--device", default=None, help="shorthand for --set train.device=DEVICE (auto, cpu, cuda, cuda:N)"
    )
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint at its stored thresholds")
    evaluate.add_argument("--ckpt", type=Path, required=True)
    evaluate.add_argument("--split", default="test", choices=SPLITS)
    add_data_dir(evaluate, required=False)
    add_device(evaluate)
    evaluate.set_defaults(handler=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from e2e.models import load_config
    from e2e.reporting.tables import results_table
    from e2e.training.trainer import train

    overrides = [*args.overrides, *([f"train.device={args.device}"] if args.device else [])]
    results = train(load_config(args.config, overrides), args.out, resume=args.resume)
    if results.get("test"):
        print(results_table([dict(results, run=str(args.out))]))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from e2e.training.distributed import resolve_device
    from e2e.training.inference import evaluate_checkpoint
    from e2e.training.trainer import json_safe

    metrics = evaluate_checkpoint(
        args.ckpt, split=args.split, data_dir=args.data_dir, device=str(resolve_device(args.device))
    )
    print(json.dumps(json_safe(metrics), indent=2))  # an undefined metric (nan) is null
    return 0
