"""Where tasks run: this machine (:mod:`.local`), a SLURM cluster (:mod:`.slurm`, submitit) or a Ray cluster
(:mod:`.ray_engine`), chosen by :class:`ExecutorSpec.kind`. The engines of other kinds are imported only
when chosen, so ``local`` needs neither submitit nor ray."""

from __future__ import annotations

from data_reorg.executors.base import EXECUTOR_KINDS, Executor, ExecutorSpec, Resources, TaskOutcome
from data_reorg.executors.outcomes import ExecutorUnavailable

__all__ = [
    "EXECUTOR_KINDS",
    "Executor",
    "ExecutorSpec",
    "ExecutorUnavailable",
    "Resources",
    "TaskOutcome",
    "make_executor",
]


def make_executor(spec: ExecutorSpec) -> Executor:
    """The executor of ``spec.kind``."""
    if spec.kind == "local":
        from data_reorg.executors.local import LocalExecutor

        return LocalExecutor(spec)
    if spec.kind == "slurm":
        from data_reorg.executors.slurm import SlurmExecutor

        return SlurmExecutor(spec)
    if spec.kind == "ray":
        from data_reorg.executors.ray_engine import RayExecutor

        return RayExecutor(spec)
    raise ValueError(f"unknown executor {spec.kind!r}; known: {', '.join(EXECUTOR_KINDS)}")
