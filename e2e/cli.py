"""``e2e``: preprocess reorganized clips, train and evaluate models, predict on a new video.

    e2e preprocess DATA_DIR [--jobs N] [--device cuda]
    e2e train --config configs/iemocap/mesm.yaml [--set key=value ...] --out RUN_DIR [--resume]
    e2e eval --ckpt RUN_DIR/checkpoints/best.pt [--split test]
    e2e predict --ckpt CKPT VIDEO (--text "..." | --transcript FILE) [--start S --end E] [--audio WAV]
    e2e table RUN_DIR... | e2e models
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from data_reorg.media import MediaError
from e2e.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args) or 0
    except (ConfigError, MediaError, FileNotFoundError, FileExistsError, ValueError, KeyError) as error:
        print(f"e2e: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    preprocess = commands.add_parser("preprocess", help="cache face crops and mel spectrograms")
    preprocess.add_argument("data_dir", type=Path)
    preprocess.add_argument("--img-interval-ms", type=int, default=500)
    preprocess.add_argument("--jobs", type=int, default=1)
    preprocess.add_argument("--device", default="cpu", help="MTCNN device: cpu, cuda, cuda:N")
    preprocess.add_argument("--no-progress", action="store_true")
    preprocess.set_defaults(handler=_preprocess)

    train = commands.add_parser("train", help="train a model (DDP under torchrun)")
    train.add_argument("--config", type=Path, required=True)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint at its stored thresholds")
    evaluate.add_argument("--ckpt", type=Path, required=True)
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--data-dir", type=Path, default=None)
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="per-emotion probabilities for a new video")
    predict.add_argument("--ckpt", type=Path, required=True)
    predict.add_argument("video", type=Path)
    text = predict.add_mutually_exclusive_group(required=True)
    text.add_argument("--text")
    text.add_argument("--transcript", type=Path, help="file holding the transcript")
    predict.add_argument("--start", type=float, default=None, help="seconds into VIDEO")
    predict.add_argument("--end", type=float, default=None, help="seconds into VIDEO")
    predict.add_argument("--audio", type=Path, default=None,
                         help="audio file on the video's timeline (default: the video's own audio track)")
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(handler=_predict)

    table = commands.add_parser("table", help="markdown table of finished runs' test metrics")
    table.add_argument("run_dirs", type=Path, nargs="+")
    table.add_argument("--split", default="test", choices=("valid", "test"))
    table.set_defaults(handler=_table)

    models = commands.add_parser("models", help="list registered models")
    models.set_defaults(handler=_models)
    return parser


def _preprocess(args: argparse.Namespace) -> int:
    from e2e.preprocess import preprocess

    summary = preprocess(args.data_dir, args.img_interval_ms, args.jobs, args.device, not args.no_progress)
    print(f"{summary.cache_dir}: {summary.total} utterances, {summary.built} built, {summary.reused} reused, "
          f"{len(summary.problems)} problems ({summary.seconds:.1f} s)")
    for problem in summary.problems:
        print(f"  {problem['id']}: {problem['error']}", file=sys.stderr)
    return 0 if summary.total > len(summary.problems) else 1


def _train(args: argparse.Namespace) -> int:
    from e2e.config import load_config
    from e2e.tables import results_table
    from e2e.train import train

    config = load_config(args.config, args.overrides)
    results = train(config, args.out, resume=args.resume)
    if results.get("test"):
        print(results_table([dict(results, run=str(args.out))]))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from e2e.train import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.ckpt, args.split, args.data_dir, device=args.device)
    print(json.dumps(metrics, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from e2e.predict import predict_video

    text = args.text if args.text is not None else args.transcript.read_text(encoding="utf-8")
    print(predict_video(args.ckpt, args.video, text, args.start, args.end, args.device, args.audio).format())
    return 0


def _table(args: argparse.Namespace) -> int:
    from e2e.tables import load_results, results_table

    print(results_table(load_results(args.run_dirs), args.split))
    return 0


def _models(args: argparse.Namespace) -> int:
    from e2e.models import available_models

    print("\n".join(available_models()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
