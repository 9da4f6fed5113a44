"""``e2e preprocess`` (face/mel cache) and ``e2e features`` (the feature models' two-stage cache)."""

from __future__ import annotations

import argparse
import sys

from e2e.cli.options import add_config, add_data_dir, add_device, data_dir
from e2e.config import DataConfig, ModelConfig


def register(commands) -> None:
    preprocess = commands.add_parser("preprocess", help="cache face crops and mel spectrograms")
    add_data_dir(preprocess, positional=True)
    preprocess.add_argument("--img-interval-ms", type=int, default=DataConfig.img_interval_ms)
    preprocess.add_argument("--jobs", type=int, default=1, help="MTCNN worker processes")
    add_device(preprocess, "MTCNN device")
    preprocess.add_argument("--no-progress", action="store_true")
    preprocess.set_defaults(handler=run_preprocess)

    features = commands.add_parser("features", help="cache the two-stage features of the feature models")
    add_data_dir(features, positional=True)
    add_config(features, required=False, help="take text_model, text_max_length and img_interval_ms from this config")
    features.add_argument(
        "--text-model",
        default=None,
        help=f"HF id or local folder (default: the config's, else {ModelConfig.text_model})",
    )
    features.add_argument(
        "--text-max-length", type=int, default=None, help=f"(default: the config's, else {ModelConfig.text_max_length})"
    )
    features.add_argument(
        "--img-interval-ms", type=int, default=None, help=f"(default: the config's, else {DataConfig.img_interval_ms})"
    )
    add_device(features, "feature extractor device")
    features.add_argument("--no-progress", action="store_true")
    features.set_defaults(handler=run_features)


def run_preprocess(args: argparse.Namespace) -> int:
    from e2e.data.preprocess import preprocess
    from e2e.training.distributed import resolve_device

    summary = preprocess(
        data_dir(args),
        img_interval_ms=args.img_interval_ms,
        jobs=args.jobs,
        device=str(resolve_device(args.device)),
        progress=not args.no_progress,
    )
    return print_cache_summary(summary)


def run_features(args: argparse.Namespace) -> int:
    from e2e.data.feature_cache import extract_features
    from e2e.models import load_config
    from e2e.training.distributed import resolve_device

    config = load_config(args.config)
    summary = extract_features(
        data_dir(args),
        text_model=args.text_model or config.model.text_model,
        img_interval_ms=args.img_interval_ms or config.data.img_interval_ms,
        text_max_length=args.text_max_length or config.model.text_max_length,
        progress=not args.no_progress,
        device=str(resolve_device(args.device)),
    )
    return print_cache_summary(summary)


def print_cache_summary(summary) -> int:
    """One line per cache build, the problems on stderr; exit status 1 when every item failed."""
    print(
        f"{summary.cache_dir}: {summary.total} utterances, {summary.built} built, {summary.reused} reused, "
        f"{len(summary.problems)} problems ({summary.seconds:.1f} s)"
    )
    for problem in summary.problems:
        print(f"  {problem['id']}: {problem['error']}", file=sys.stderr)
    return 0 if summary.total > len(summary.problems) else 1
