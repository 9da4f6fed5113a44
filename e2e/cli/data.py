"""``e2e preprocess`` (face/mel cache) and ``e2e features`` (the feature models' two-stage cache).

Both shard by item id: ``--shard K/N`` builds one shard here (for your own scheduler), ``--merge``
then writes the shared ``problems.jsonl``; ``--shards N`` (or ``--executor slurm|ray``) submits the N
shards through the executor and merges (see :mod:`data_reorg.shards`).
"""

from __future__ import annotations

import argparse
import sys

from data_reorg.executors.options import add_executor_arguments, executor_spec, positive_int
from data_reorg.shards import ShardsFailed, ShardsIncomplete, add_shard_arguments, dispatched_shards
from e2e.cli.options import add_config, add_data_dir, add_device, data_dir
from e2e.config import DataConfig, ModelConfig


def register(commands) -> None:
    preprocess = commands.add_parser("preprocess", help="cache face crops and mel spectrograms")
    add_data_dir(preprocess, positional=True)
    preprocess.add_argument("--img-interval-ms", type=int, default=DataConfig.img_interval_ms)
    preprocess.add_argument(
        "--face-size",
        type=positive_int,
        default=DataConfig.face_size,
        help="face crop side in pixels (default: %(default)s, the paper's; other sizes: cache/i<ms>-f<size>)",
    )
    preprocess.add_argument("--jobs", type=int, default=1, help="MTCNN worker processes (with --shards: shard tasks)")
    add_device(preprocess, "MTCNN device")
    preprocess.add_argument("--no-progress", action="store_true")
    add_shard_arguments(preprocess)
    add_executor_arguments(preprocess)
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
    for kind, substitute in (("audio", "librosa descriptors"), ("visual", "O-Net descriptors")):
        features.add_argument(
            f"--{kind}-encoder",
            default=None,
            metavar="ID",
            help=f"HF {kind} encoder (id, folder or tiny-*) whose features replace the {substitute} "
            f"(default: the config's model.feature_{kind}_encoder, else none)",
        )
    features.add_argument(
        "--face-size",
        type=positive_int,
        default=None,
        help="side of the face crops the visual encoder reads, from the face cache `e2e preprocess --face-size` "
        f"built (default: the config's data.face_size, else {DataConfig.face_size}; other sizes need --visual-encoder)",
    )
    add_device(features, "feature extractor device")
    features.add_argument("--jobs", type=int, default=1, help="shard tasks run at once on this machine (--shards)")
    features.add_argument("--no-progress", action="store_true")
    add_shard_arguments(features)
    add_executor_arguments(features)
    features.set_defaults(handler=run_features)


def run_preprocess(args: argparse.Namespace) -> int:
    from e2e.data.preprocess import preprocess

    options = dict(
        img_interval_ms=args.img_interval_ms,
        face_size=args.face_size,
        jobs=args.jobs,
        device=_device(args),
        progress=not args.no_progress,
    )
    return build_cache(args, preprocess, options)


def run_features(args: argparse.Namespace) -> int:
    from e2e.data.feature_cache import extract_features
    from e2e.models import load_config

    config = load_config(args.config)
    options = dict(
        text_model=args.text_model or config.model.text_model,
        img_interval_ms=args.img_interval_ms or config.data.img_interval_ms,
        text_max_length=args.text_max_length or config.model.text_max_length,
        audio_encoder=args.audio_encoder or config.model.feature_audio_encoder,
        visual_encoder=args.visual_encoder or config.model.feature_visual_encoder,
        face_size=args.face_size or config.data.face_size,
        progress=not args.no_progress,
        device=_device(args),
    )
    return build_cache(args, extract_features, options)


def build_cache(args: argparse.Namespace, build, options: dict) -> int:
    """``build`` here (all rows, ``--shard K/N`` or ``--merge``) or as shard tasks through ``--executor``."""
    from e2e.data.preprocess import build_sharded

    folder = data_dir(args)
    count = dispatched_shards(args)
    try:
        if count is None:
            summary = build(folder, shard=args.shard, merge=args.merge, **options)
        else:
            spec = executor_spec(args, workers=args.jobs, log_dir=folder.absolute() / "cache" / "executor_logs")
            summary = build_sharded(build, folder, spec, count, **options)
    except (ShardsFailed, ShardsIncomplete) as error:
        print(f"e2e: error: {error}", file=sys.stderr)
        return 1
    return print_cache_summary(summary)


def _device(args: argparse.Namespace) -> str:
    """``--device``; ``auto`` is resolved here, except for cluster tasks given GPUs (this machine may have none)."""
    from e2e.training.distributed import resolve_device

    if args.device == "auto" and args.executor != "local" and args.gpus_per_task > 0:
        return "cuda"
    return str(resolve_device(args.device))


def print_cache_summary(summary) -> int:
    """One line per cache build, the problems on stderr; exit status 1 when every item failed."""
    shard = f" shard {summary.shard} (record {summary.record})" if summary.shard else ""
    print(
        f"{summary.cache_dir}:{shard} {summary.total} utterances, {summary.built} built, {summary.reused} reused, "
        f"{len(summary.problems)} problems ({summary.seconds:.1f} s)"
    )
    for problem in summary.problems:
        print(f"  {problem['id']}: {problem['error']}", file=sys.stderr)
    return 0 if summary.total > len(summary.problems) or (summary.shard and not summary.problems) else 1
