"""``data-reorg``: raw IEMOCAP / CMU-MOSEI releases -> clips, manifest and splits.

data-reorg iemocap SRC OUT [--split random|mesm|session] ...
data-reorg mosei SRC OUT [--split random|mesm|sdk] ...
    [--shard K/N | --merge | --shards N] [--executor local|slurm|ray ...]: see data_reorg.shards
data-reorg stats OUT | data-reorg verify OUT | data-reorg demo OUT
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from data_reorg import iemocap, mosei
from data_reorg.executors import ExecutorUnavailable
from data_reorg.executors.options import add_executor_arguments, executor_spec
from data_reorg.io import DiskFullError
from data_reorg.manifest import IEMOCAP_CLASSES
from data_reorg.pipeline import RunOptions, RunSummary, StrictModeError, reorganize
from data_reorg.shards import (
    Shard,
    ShardsFailed,
    ShardsIncomplete,
    add_shard_arguments,
    all_shards,
    dispatched_shards,
    run_shards,
)
from data_reorg.splits import SplitSpec
from data_reorg.workers import WorkerDied

log = logging.getLogger("data_reorg")

# The demo corpora are small: a 20 % valid split keeps every class in valid, where thresholds are tuned.
DEMO_RATIOS = (0.6, 0.2, 0.2)
SPLIT_CHOICES = {"iemocap": iemocap.SPLIT_POLICIES, "mosei": mosei.SPLIT_POLICIES}
PREPARE = {"iemocap": iemocap.prepare_iemocap, "mosei": mosei.prepare_mosei}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.handler(args)
    except StrictModeError as error:
        print(f"data-reorg: --strict: stopped at the first problem: {error}", file=sys.stderr)
        return 2
    except ShardsFailed as error:
        print(f"data-reorg: {error}", file=sys.stderr)
        return 1
    except (DiskFullError, WorkerDied, ExecutorUnavailable, ShardsIncomplete, FileNotFoundError, ValueError) as error:
        print(f"data-reorg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("data-reorg: interrupted; finished clips are kept, rerun to resume", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="data-reorg", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every kept/dropped decision")
    commands = parser.add_subparsers(dest="command", required=True)

    iemocap = commands.add_parser("iemocap", help="reorganize an IEMOCAP_full_release tree")
    _add_corpus_arguments(iemocap, "iemocap")
    iemocap.add_argument(
        "--classes",
        default=",".join(IEMOCAP_CLASSES),
        help="comma-separated emotion codes to keep (default: %(default)s)",
    )
    iemocap.add_argument(
        "--side-rule",
        default="mocap",
        choices=("mocap", "female-left"),
        help="speaker half: mocap = left iff speaker letter equals session letter",
    )
    iemocap.add_argument("--test-session", default=None, help="session number held out as test (--split session)")
    iemocap.add_argument("--valid-session", default=None, help="session number held out as valid (--split session)")
    iemocap.set_defaults(handler=_run_iemocap)

    mosei = commands.add_parser("mosei", help="reorganize a CMU-MOSEI raw release")
    _add_corpus_arguments(mosei, "mosei")
    mosei.add_argument("--labels", type=Path, default=None, help="CSD label file (default: SRC/CMU_MOSEI_Labels.csd)")
    mosei.set_defaults(handler=_run_mosei)

    stats = commands.add_parser("stats", help="per-split, per-class counts and durations")
    stats.add_argument("out", type=Path)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=_run_stats)

    verify = commands.add_parser("verify", help="re-check every clip against the manifest")
    verify.add_argument("out", type=Path)
    verify.set_defaults(handler=_run_verify)

    demo = commands.add_parser("demo", help="build the miniature demo corpora and reorganize both")
    demo.add_argument("out", type=Path)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--jobs", type=int, default=2)
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(handler=_run_demo)
    return parser


def _add_corpus_arguments(parser: argparse.ArgumentParser, corpus: str) -> None:
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="random", choices=SPLIT_CHOICES[corpus])
    parser.add_argument("--seed", type=int, default=0, help="seed of --split random")
    parser.add_argument("--ratios", default="0.7,0.1,0.2", help="train,valid,test ratios of --split random")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parallel worker processes (one source video each; with --shards: shard tasks at once)",
    )
    parser.add_argument("--strict", action="store_true", help="stop at the first problem instead of dropping")
    parser.add_argument("--no-progress", action="store_true")
    add_shard_arguments(parser)
    add_executor_arguments(parser)


def _run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments both recipes take, from the arguments both subcommands share."""
    return {
        "split": args.split,
        "seed": args.seed,
        "ratios": args.ratios,
        "jobs": args.jobs,
        "strict": args.strict,
        "progress": not args.no_progress,
    }


def _run_iemocap(args: argparse.Namespace) -> int:
    classes = tuple(code.strip() for code in args.classes.split(",") if code.strip())
    options = dict(
        classes=classes, side_rule=args.side_rule, test_session=args.test_session, valid_session=args.valid_session
    )
    return _run_corpus(args, "iemocap", options)


def _run_mosei(args: argparse.Namespace) -> int:
    return _run_corpus(args, "mosei", {"labels": args.labels})


def _run_corpus(args: argparse.Namespace, corpus: str, options: dict) -> int:
    """Here (all of it, ``--shard K/N`` or ``--merge``), or ``--shards N`` tasks through ``--executor``."""
    options = {**_run_options(args), **options}
    count = dispatched_shards(args)
    if count is not None:
        _dispatch_shards(args, corpus, options, count)
        return _report(args.out, PREPARE[corpus](args.src, args.out, merge=True, **options))
    summary = PREPARE[corpus](args.src, args.out, shard=args.shard, merge=args.merge, **options)
    if args.shard is not None:
        print("once every shard is done, run the same command with --merge instead of --shard")
    return _report(args.out, summary)


@dataclass(frozen=True)
class ShardTask:
    """One ``data-reorg`` shard, as an executor sends it to a worker."""

    corpus: str
    src: Path
    out: Path
    options: dict
    shard: Shard


def run_shard_task(task: ShardTask) -> RunSummary:
    return PREPARE[task.corpus](task.src, task.out, shard=task.shard, **task.options)


def _dispatch_shards(args: argparse.Namespace, corpus: str, options: dict, count: int) -> None:
    """Run the ``count`` shards through the executor (a local pool task cuts with one process, a
    cluster task with its ``--cpus-per-task``); ShardsFailed after all ended if any failed."""
    spec = executor_spec(args, workers=args.jobs, log_dir=args.out.absolute() / "shards" / "logs")
    jobs = 1 if spec.kind == "local" else spec.resources.cpus
    task_options = {**options, "jobs": jobs, "progress": False}
    src, out = args.src.absolute(), args.out.absolute()
    tasks = [ShardTask(corpus, src, out, task_options, shard) for shard in all_shards(count)]
    summaries = run_shards(spec, run_shard_task, tasks, [f"{corpus} shard {task.shard}" for task in tasks])
    for summary in summaries:
        _print_summary(args.out, summary)


def _report(out: Path, summary: RunSummary) -> int:
    """Print the one-line summary; exit status 1 when nothing was kept (a shard: when all it had failed)."""
    _print_summary(out, summary)
    return 0 if summary.kept or (summary.record is not None and not summary.dropped) else 1


def _print_summary(out: Path, summary: RunSummary) -> None:
    if summary.record is not None:
        print(
            f"{out}: shard {summary.record.stem.replace('-of-', '/')}: kept {summary.kept}, dropped "
            f"{summary.dropped}, reused {summary.resumed} finished clips (see {summary.record})"
        )
        return
    splits = ", ".join(f"{name} {count}" for name, count in summary.split_counts.items())
    audio = ", ".join(f"{name} {count}" for name, count in summary.audio_sources.items()) or "none"
    print(
        f"{out}: kept {summary.kept} ({splits}), dropped {summary.dropped} "
        f"(see {out / 'dropped.jsonl'}), reused {summary.resumed} finished clips; audio: {audio}; "
        f"{summary.warnings} warnings (see {out / 'reorg.json'})"
    )


def _run_stats(args: argparse.Namespace) -> int:
    from data_reorg import report
    from data_reorg.io import read_jsonl

    if args.json:
        print(report.summary_json(args.out))
        return 0
    rows = read_jsonl(args.out / "manifest.jsonl")
    print(report.format_statistics(report.split_statistics(rows), report.read_dropped(args.out)))
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from data_reorg import report

    problems = report.verify(args.out)
    for item, found in sorted(problems.items()):
        for problem in found:
            print(f"{item}: {problem}")
    print(f"{args.out}: {'all clips match the manifest' if not problems else f'{len(problems)} clips fail'}")
    return 1 if problems else 0


def _run_demo(args: argparse.Namespace) -> int:
    """Build the demo corpora and reorganize both. Their source paths are used as given, not resolved:
    the demo clips' resume fingerprints hold them, and a relative OUT (``make demo``) stays relative."""
    from data_reorg import demo

    corpora = demo.build_demo_corpora(args.out, seed=args.seed)
    options = dict(jobs=args.jobs, progress=not args.no_progress)
    spec = SplitSpec("random", args.seed, DEMO_RATIOS)
    kept = 0
    for name, parsed in (
        ("iemocap", iemocap.parse_release(corpora.iemocap_src)),
        ("mosei", mosei.parse_release(corpora.mosei_src)),
    ):
        summary = reorganize(parsed, spec, RunOptions(args.out / name, **options))
        _print_summary(args.out / name, summary)
        kept += summary.kept
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
