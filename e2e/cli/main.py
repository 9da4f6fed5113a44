"""``e2e``: preprocess reorganized clips, train and evaluate models, predict on a new video, analyse and sweep.

    e2e preprocess DATA_DIR [--jobs N] [--device auto]
    e2e features DATA_DIR [--config CFG | --text-model ID --text-max-length N]
    e2e train --config configs/iemocap/mesm.yaml [--set key=value ...] --out RUN_DIR [--resume]
    e2e eval --ckpt RUN_DIR/checkpoints/best.pt [--split test]
    e2e predict --ckpt CKPT VIDEO (--text "..." | --transcript FILE) [--start S --end E] [--audio WAV]
    e2e flops --config CFG [--set ...] [--batch N] [--json FILE]
    e2e visualize --ckpt CKPT --ids ID... --out DIR
    e2e sweep top-p --config CFG --values 0.1:1.0:0.1 --seeds 0,1,2 --out DIR [--jobs N]
    e2e sweep modalities --config configs/demo --models fe2e,mesm --seeds 0,1,2 --out DIR
    e2e sweep missing --data-dir DATA_DIR --models all --rates 0.0:0.9:0.1 --out DIR [--config-dir configs/demo]
    e2e benchmark --data-dir DATA_DIR --models all --seeds 0,1,2 --out DIR [--config-dir configs/demo]
    e2e benchmark --data-dir IEMOCAP_DIR --split session-cv [--folds 1,3] ...   (leave-one-session-out CV)
    e2e benchmark --data-dir IEMOCAP_DIR --cross-corpus MOSEI_DIR ...   (train on each, test on the other)
        (benchmark and sweeps: [--executor local|slurm|ray] [--ray-address ADDR] [--slurm-partition P] ...)
    e2e status DIR [--json]
    e2e report RUN_DIR... [--out DIR] | e2e table RUN_DIR... | e2e models [--fidelity NAME]

Each command group lives in its own module of :mod:`e2e.cli` and registers its sub-commands here.
"""

from __future__ import annotations

import argparse
import logging
import sys

from data_reorg.executors import ExecutorUnavailable
from data_reorg.io import DiskFullError
from data_reorg.media import MediaError
from data_reorg.workers import WorkerDied
from e2e.cli import analysis, benchmark, data, models, predict, reports, status, sweep, train
from e2e.config import UsageError

GROUPS = (data, train, predict, analysis, sweep, benchmark, status, reports, models)
# what a user can cause and fix: printed as "e2e: error: ..." with exit status 2, without a traceback
USER_ERRORS = (
    UsageError,
    MediaError,
    DiskFullError,
    WorkerDied,
    ExecutorUnavailable,
    FileNotFoundError,
    FileExistsError,
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args) or 0
    except USER_ERRORS as error:
        print(f"e2e: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands)
    return parser
