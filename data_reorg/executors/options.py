"""``--executor local|slurm|ray`` and the resources per task: the options every dispatching command shares
(``e2e benchmark``, ``e2e sweep``, ``e2e preprocess``, ``e2e features``, ``data-reorg``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from data_reorg.executors.base import EXECUTOR_KINDS, ExecutorSpec, Resources


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """The executor options, in their own help group; ``--jobs`` (the local pool size) stays the command's own."""
    group = parser.add_argument_group("executor (where the tasks run)")
    group.add_argument(
        "--executor",
        choices=EXECUTOR_KINDS,
        default="local",
        help="local: this machine (--jobs processes); slurm: a SLURM job array via submitit; ray: tasks on a "
        "running Ray cluster (default: local)",
    )
    group.add_argument("--slurm-partition", default=None, help="SLURM partition (default: the cluster's)")
    group.add_argument(
        "--slurm-nodes", type=positive_int, default=1, help="nodes per task (> 1: one multi-node DDP job per run)"
    )
    group.add_argument(
        "--slurm-tasks-per-node", type=positive_int, default=1, help="SLURM tasks per node (DDP processes)"
    )
    group.add_argument("--cpus-per-task", type=positive_int, default=1, help="CPU cores per task (slurm, ray)")
    group.add_argument(
        "--gpus-per-task",
        type=non_negative_float,
        default=0.0,
        help="GPUs per task (slurm: whole GPUs; ray: a fraction lets tasks share one GPU)",
    )
    group.add_argument("--mem-gb", type=non_negative_float, default=None, help="memory per task in GB (slurm, ray)")
    group.add_argument("--time-min", type=positive_int, default=60, help="wall time per task in minutes (slurm)")
    group.add_argument(
        "--array-parallelism", type=non_negative_int, default=0, help="SLURM array tasks running at once (0: no limit)"
    )
    group.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="address of the running Ray cluster, e.g. 10.0.0.5:6379 (default: $RAY_ADDRESS)",
    )
    group.add_argument(
        "--retries", type=non_negative_int, default=0, help="re-run a task that failed this many more times"
    )


def executor_spec(args: argparse.Namespace, workers: int | None = None, log_dir: Path | None = None) -> ExecutorSpec:
    """The :class:`ExecutorSpec` the options describe; ``workers`` is the local pool size (``--jobs``), for
    slurm ``--array-parallelism`` is used."""
    local_workers = workers if workers is not None else getattr(args, "jobs", 1)
    return ExecutorSpec(
        kind=args.executor,
        workers=args.array_parallelism if args.executor == "slurm" else local_workers,
        resources=Resources(
            cpus=args.cpus_per_task, gpus=args.gpus_per_task, memory_gb=args.mem_gb, time_min=args.time_min
        ),
        slurm_partition=args.slurm_partition,
        slurm_nodes=args.slurm_nodes,
        slurm_tasks_per_node=args.slurm_tasks_per_node,
        ray_address=args.ray_address,
        retries=args.retries,
        log_dir=log_dir,
    )


def positive_int(text: str) -> int:
    return _number(text, int, lambda value: value >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    return _number(text, int, lambda value: value >= 0, "an integer >= 0")


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda value: value >= 0, "a number >= 0")


def _number(text: str, kind, valid, what: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value
