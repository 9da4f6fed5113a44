"""The SLURM engine: one submitit job array per submission (``sbatch --array``), one array task per item.

Each task asks for the :class:`Resources` of the spec (CPUs, whole GPUs, memory, wall time) on
``--slurm-partition``; ``workers`` > 0 caps how many run at once. Its logs and submitit's pickles go to
``spec.log_dir/<job id>/``. The call is wrapped in a :class:`submitit.helpers.Checkpointable`, so a task
that is preempted or reaches its time limit is requeued with the same call; our runs resume from their
own ``checkpoints/last.pt``, so that is all a requeue needs. A task that ended without a result
(cancelled, killed, node failure, out of memory) is submitted again up to ``retries`` times; one whose
function raised is not (it would raise again). With ``slurm_nodes`` > 1 or ``slurm_tasks_per_node`` > 1
every array task is one multi-task job, every SLURM task calls the function with torchrun's environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) set from SLURM's, so a training run spans them
with DDP; the value of rank 0 is the outcome.

The state of the tasks comes from ``squeue`` (which keeps ended jobs for the cluster's ``MinJobAge``)
and submitit's result files, not from ``sacct``: that needs an accounting database (slurmdbd), which
many small clusters lack, and submitit would wait forever on a task that ended without a result.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError
from submitit.helpers import Checkpointable, TorchDistributedEnvironment

from data_reorg.executors.base import ExecutorSpec, TaskOutcome
from data_reorg.executors.outcomes import ExecutorUnavailable, Progress, log_tail, tail

POLL_S = 1.0
RESULT_GRACE_S = 15.0  # a COMPLETED task's result file may show up late on a network file system
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


class SlurmExecutor:
    def __init__(self, spec: ExecutorSpec):
        if spec.log_dir is None:
            raise ExecutorUnavailable("--executor slurm needs a folder for the tasks' logs (ExecutorSpec.log_dir)")
        self.spec = spec

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], names: Sequence[str]) -> list[TaskOutcome]:
        if not items:
            return []
        _check_slurm()
        outcomes: list[TaskOutcome | None] = [None] * len(items)
        todo = list(range(len(items)))
        for attempt in range(self.spec.retries + 1):
            if attempt:
                print(
                    f"slurm: submitting again {len(todo)} task(s) that ended without a result "
                    f"(try {attempt + 1} of {self.spec.retries + 1}): {', '.join(names[i] for i in todo)}",
                    file=sys.stderr,
                    flush=True,
                )
            jobs = self._submit(fn, [items[i] for i in todo])
            states = wait(jobs, self.spec.slurm_partition)
            retry = []
            for index, job in zip(todo, jobs, strict=True):
                outcomes[index], rerun = _outcome(job, names[index], states.get(job.job_id, "UNKNOWN"))
                if rerun:
                    retry.append(index)
            todo = retry
            if not todo:
                break
        return outcomes  # type: ignore[return-value]

    def _submit(self, fn: Callable[[Any], Any], items: list) -> list:
        """One job array of ``items``; a refusal by sbatch (unknown partition, too many resources) is an
        :class:`ExecutorUnavailable` quoting it."""
        executor = submitit.AutoExecutor(folder=Path(self.spec.log_dir) / "%j", cluster="slurm")
        executor.update_parameters(**submitit_parameters(self.spec, len(items)))
        call = _DistributedCall(fn) if _multi_task(self.spec) else _RequeuedCall(fn)
        try:
            return executor.map_array(call, items)
        except (FailedJobError, subprocess.SubprocessError, OSError) as error:
            raise ExecutorUnavailable(f"sbatch refused the job array: {str(error).strip()}") from None


def submitit_parameters(spec: ExecutorSpec, count: int) -> dict:
    """``AutoExecutor.update_parameters`` of one array: resources per task and the array parallelism."""
    resources = spec.resources
    parameters = {
        "name": "e2e",
        "timeout_min": resources.time_min,
        "cpus_per_task": resources.cpus,
        "nodes": spec.slurm_nodes,
        "tasks_per_node": spec.slurm_tasks_per_node,
        "slurm_array_parallelism": spec.workers if spec.workers > 0 else max(count, 1),
    }
    if spec.slurm_partition:
        parameters["slurm_partition"] = spec.slurm_partition
    if resources.gpus:
        if resources.gpus != int(resources.gpus):
            raise ExecutorUnavailable(f"SLURM allocates whole GPUs; --gpus-per-task {resources.gpus} is a fraction")
        parameters["gpus_per_node"] = int(resources.gpus) * spec.slurm_tasks_per_node
    if resources.memory_gb:
        parameters["mem_gb"] = resources.memory_gb * spec.slurm_tasks_per_node  # SLURM's --mem is per node
    return parameters


def _multi_task(spec: ExecutorSpec) -> bool:
    return spec.slurm_nodes > 1 or spec.slurm_tasks_per_node > 1


def _check_slurm() -> None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise ExecutorUnavailable(
            "--executor slurm needs SLURM's sbatch and squeue on PATH: run it on a machine of the cluster "
            "(a login node)"
        )


class _RequeuedCall(Checkpointable):
    """``fn(item)``; submitit's default ``checkpoint`` requeues a preempted or timed-out task with the same
    call, which resumes from the run's own checkpoint."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __call__(self, item: Any) -> Any:
        return self.fn(item)


class _DistributedCall(_RequeuedCall):
    """The call of one SLURM task of a multi-task job, with torchrun's environment set from SLURM's."""

    def __call__(self, item: Any) -> Any:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return self.fn(item)


def wait(jobs: list, partition: str | None) -> dict[str, str]:
    """Block until every job has a result or has ended; returns the last SLURM state of each job id.
    A progress line (done, running, pending) goes to stderr every 30 s."""
    arrays = sorted({job.job_id.split("_")[0] for job in jobs})
    where = f"slurm job array {','.join(arrays)} on {partition or 'the default partition'}"
    progress = Progress(where, len(jobs))
    states: dict[str, str] = {}
    ended_since: dict[str, float] = {}
    while True:
        states.update(squeue_states(arrays))
        now = time.monotonic()
        finished = 0
        for job in jobs:
            state = states.get(job.job_id, "UNKNOWN")
            if has_result(job) or state in ENDED and now - ended_since.setdefault(job.job_id, now) >= _grace(state):
                finished += 1
        if finished == len(jobs):
            return states
        running = sum(states.get(job.job_id) in ("RUNNING", "COMPLETING") for job in jobs)
        progress.what = f"{where} ({running} running, {len(jobs) - finished - running} pending)"
        progress.update(finished)
        time.sleep(POLL_S)


def _grace(state: str) -> float:
    return RESULT_GRACE_S if state == "COMPLETED" else 0.0


def squeue_states(arrays: list[str]) -> dict[str, str]:
    """``{"<array>_<task>": state}`` of the array tasks squeue knows (also ended ones, for MinJobAge);
    {} when squeue does not answer this time (the next poll asks again)."""
    command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", "--jobs", ",".join(arrays)]
    try:
        listing = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    if listing.returncode != 0:
        return {}
    pairs = (line.split("|", 1) for line in listing.stdout.splitlines() if "|" in line)
    return {job_id.strip(): state.strip().split()[0] for job_id, state in pairs if state.strip()}


def has_result(job) -> bool:
    """Whether every SLURM task of ``job`` has written its result (a value or the exception it raised)."""
    return all(job.task(rank).paths.result_pickle.exists() for rank in range(job.num_tasks))


def _outcome(job, name: str, state: str) -> tuple[TaskOutcome, bool]:
    """The outcome of one array task, and whether it should be submitted again (it ended without a
    result: cancelled, killed, out of memory, node failure)."""
    values = []
    for rank in range(job.num_tasks):
        task = job.task(rank)
        log_path = str(task.paths.stderr)
        if not task.paths.result_pickle.exists():
            where = f" (task {rank})" if job.num_tasks > 1 else ""
            error = f"SLURM job {job.job_id}{where} ended {state} without a result; log {log_path}"
            return TaskOutcome(name, ok=False, error=error, log_path=log_path, log_tail=log_tail(log_path)), True
        try:
            values.append(task.result())
        except FailedJobError as error:
            trace = _trace(str(error))
            message = tail(trace, 1) or f"SLURM job {job.job_id} failed"
            return TaskOutcome(
                name, ok=False, error=message, log_path=log_path, log_tail=log_tail(log_path) or tail(trace)
            ), False
    return TaskOutcome(name, ok=True, value=values[0], log_path=str(job.paths.stderr)), False


def _trace(message: str) -> str:
    """The task's traceback inside submitit's FailedJobError message (between its two dashed lines)."""
    parts = message.split("-" * 22)
    return parts[1].strip() if len(parts) >= 3 else message.strip()
