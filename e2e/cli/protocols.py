"""``e2e benchmark --split session-cv [--folds 1,3]`` and ``e2e benchmark --cross-corpus OTHER_DIR``: the
benchmark's runs under the field's evaluation protocols (:mod:`e2e.experiments.protocols`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from e2e.config import REPO_CONFIGS, UsageError


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        choices=("standard", "session-cv"),
        default="standard",
        help="standard: the manifest's splits; session-cv: IEMOCAP leave-one-session-out cross-validation "
        "(test = one session, valid = 10%% of the others), mean±std over folds and seeds",
    )
    parser.add_argument("--folds", default=None, help="with --split session-cv: the held-out sessions, e.g. 1,3")
    parser.add_argument(
        "--cross-corpus",
        type=Path,
        default=None,
        metavar="OTHER_DIR",
        help="the other reorganized corpus (IEMOCAP <-> MOSEI): train on each, test on the other, on the "
        "emotions both label (anger, happy incl. IEMOCAP excited, sad)",
    )
    parser.add_argument(
        "--cross-config-dir",
        type=Path,
        default=None,
        help=f"with --cross-corpus: <model>.yaml files for OTHER_DIR (default: --config-dir if given, else "
        f"{REPO_CONFIGS}/<dataset of OTHER_DIR>)",
    )


def uses_protocol(args: argparse.Namespace) -> bool:
    if args.folds and args.split != "session-cv":
        raise UsageError("--folds selects session-CV folds: add --split session-cv")
    if args.split == "session-cv" and args.cross_corpus is not None:
        raise UsageError("--split session-cv and --cross-corpus are separate protocols: run one at a time")
    return args.split == "session-cv" or args.cross_corpus is not None


def run_protocol(args: argparse.Namespace, request, executor) -> int:
    """Run the protocol the options name and print its table."""
    from e2e.experiments.benchmark import dataset_of
    from e2e.experiments.protocols import cross_corpus, parse_folds, session_cv

    if args.split == "session-cv":
        session_cv(request, parse_folds(args.folds), jobs=args.jobs, executor=executor)
        name = "session_cv"
    else:
        other = args.cross_corpus
        other_configs = args.cross_config_dir or args.config_dir or REPO_CONFIGS / dataset_of(other)
        cross_corpus(request, other, other_configs, jobs=args.jobs, executor=executor)
        name = "cross_corpus"
    print((args.out / f"{name}.md").read_text(encoding="utf-8"))
    return 0
