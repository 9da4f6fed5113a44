"""What every executor (local pool, SLURM via submitit, Ray) offers: run one function over many items.

The unit of work stays the caller's (a training run directory, a preprocessing shard); an executor only
decides where each call runs. A call that fails, on any engine, comes back as a failed
:class:`TaskOutcome` naming the task and the tail of its log, never as an exception that would lose the
outcomes of the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

EXECUTOR_KINDS = ("local", "slurm", "ray")


@dataclass(frozen=True)
class Resources:
    """What one task asks for: CPU cores, GPUs (a fraction shares one GPU on Ray), memory and wall time."""

    cpus: int = 1
    gpus: float = 0.0
    memory_gb: float | None = None
    time_min: int = 60


@dataclass(frozen=True)
class ExecutorSpec:
    """Which engine runs the tasks and how: ``workers`` is the local pool size or the SLURM array
    parallelism (0 = no limit); ``retries`` re-runs a failed task that many more times (Ray, SLURM
    requeue); ``log_dir`` holds the engine's per-task logs."""

    kind: str = "local"
    workers: int = 1
    resources: Resources = field(default_factory=Resources)
    slurm_partition: str | None = None
    slurm_nodes: int = 1  # > 1 or tasks_per_node > 1: one multi-task job per item (DDP via torchrun env)
    slurm_tasks_per_node: int = 1
    ray_address: str | None = None
    retries: int = 0
    log_dir: Path | None = None


@dataclass
class TaskOutcome:
    """What became of one task: its return value, or the error, the engine's log path and its last lines."""

    name: str
    ok: bool
    value: Any = None
    error: str = ""
    log_path: str = ""
    log_tail: str = ""


class Executor(Protocol):
    spec: ExecutorSpec

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], names: Sequence[str]) -> list[TaskOutcome]:
        """``fn(item)`` for every item (picklable, ``fn`` importable by module path), outcomes in item order;
        blocks until all are done, showing progress of long waits on stderr."""
        ...
