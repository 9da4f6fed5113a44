"""The generic job runner under every benchmark and sweep.

Every point is a job with its own run directory ``OUT/<name>/`` trained by
:func:`e2e.training.trainer.train`, its typed config built as an object (never as ``--set`` strings). The
job list is written to ``OUT/jobs.json`` (name, full config, run dir), so
the same points can be dispatched elsewhere (a cluster) and collected here afterwards. A point with
``results.json`` is skipped, one with only ``checkpoints/last.pt`` is resumed, so rerunning a killed
sweep finishes it. ``jobs > 1`` trains points in parallel "spawn" worker processes that share the
machine's cores. Each job names itself on stderr when it starts: ``[3/12] mesm tav top_p=0.5 seed 1
on iemocap -> OUT/mesm-p0.5-s1: training``.

Where the unfinished jobs train is an :class:`~data_reorg.executors.ExecutorSpec` (this machine, a SLURM
array, a Ray cluster); finished ones are never submitted. Each job's run directory tells its state to
``e2e status`` wherever it ran: ``state.json`` (engine, host, pid, engine job id, start time) while it
trains, ``job.log`` (start line, warnings, the traceback of a failure), ``failed.json`` (error, log path
and tail, engine, time) once it failed, ``results.json`` once it finished. A failed job is reported on
stderr with its run directory and log tail while the others go on; after all have ended,
:class:`JobsFailed` lists the failed ones (the command exits non-zero), and a rerun retries them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from data_reorg.executors import ExecutorSpec, TaskOutcome, make_executor
from data_reorg.executors.outcomes import log_tail
from data_reorg.io import write_text_atomic
from e2e.config import ExperimentConfig, UsageError
from e2e.models import model_spec

METRIC_COLUMNS = (  # those a task's metrics have, in this order
    *("acc", "f1", "wacc", "precision", "recall", "auc", "multiclass_acc", "weighted_f1"),  # emotion
    *("mae", "corr", "ccc", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"),  # regression
)


@dataclass(frozen=True)
class Job:
    """One sweep point. ``flops_utterances``: None = no FLOPs measurement, else passed to measure_flops;
    ``step``: its place in the job list being run (``"3/12"``), set by :func:`run_jobs`."""

    name: str
    config: ExperimentConfig
    run_dir: str
    flops_utterances: int | None = None
    step: str = ""


def parse_values(text: str) -> list[float]:
    """``"0.1:1.0:0.1"`` (start:stop:step, stop included) or ``"0.3,0.5,1.0"``; rounded to 6 decimals
    so that a range does not yield 0.30000000000000004."""
    if ":" in text:
        start, stop, step = (float(part) for part in text.split(":"))
        if step <= 0 or stop < start:
            raise UsageError(f"range {text!r} needs start <= stop and step > 0")
        count = math.floor((stop - start) / step + 1e-6) + 1  # the epsilon keeps a stop on the grid
        values = [start + i * step for i in range(count)]
    else:
        values = [float(part) for part in text.split(",") if part.strip()]
    if not values:
        raise UsageError(f"no values in {text!r}")
    return [round(v, 6) for v in values]


class JobsFailed(UsageError):
    """Some jobs failed (each already reported with its run directory and log tail); the others ran."""


@dataclass(frozen=True)
class JobTask:
    """What a worker gets: the job, the torch threads to use (None: leave them), the engine's name."""

    job: Job
    threads: int | None
    engine: str


def run_jobs(
    job_list: list[Job], out: Path, jobs: int = 1, list_name: str = "jobs.json", executor: ExecutorSpec | None = None
) -> dict[str, dict]:
    """Write ``OUT/<list_name>``, train every unfinished job; returns results (+ "flops") by job name.

    ``executor`` (default: this machine with ``jobs`` processes) runs the unfinished jobs; finished
    ones are reused here without being submitted. In this process (``jobs == 1``) the torch threads
    are left as they are; a local pool's workers get ``max(1, cores // jobs)`` each so parallel points
    do not oversubscribe the CPU, a cluster task its ``cpus``. Raises :class:`JobsFailed` after all
    jobs ended when any failed.
    """
    spec = executor or ExecutorSpec(workers=jobs)
    out.mkdir(parents=True, exist_ok=True)
    job_list = [replace(job, step=f"{index}/{len(job_list)}") for index, job in enumerate(job_list, 1)]
    write_text_atomic(out / list_name, json.dumps([asdict(job) for job in job_list], indent=2) + "\n")
    results = {job.name: run_job(job) for job in job_list if is_finished(job)}
    todo = [job for job in job_list if job.name not in results]
    if todo:
        threads = _threads(spec)
        tasks = [JobTask(job, threads, spec.kind) for job in todo]
        outcomes = make_executor(spec).map(execute, tasks, [job.name for job in todo])
        failures = [record_failure(job, outcome, spec.kind) for job, outcome in zip(todo, outcomes) if not outcome.ok]
        if failures:
            raise JobsFailed(
                f"{len(failures)} of {len(job_list)} jobs failed: {', '.join(failures)} "
                "(each has failed.json and job.log); rerun the same command to retry them"
            )
        results.update((job.name, outcome.value) for job, outcome in zip(todo, outcomes))
    return {job.name: results[job.name] for job in job_list}


def is_finished(job: Job) -> bool:
    return (Path(job.run_dir) / "results.json").is_file()


def _threads(spec: ExecutorSpec) -> int | None:
    if spec.kind != "local":
        return spec.resources.cpus
    return None if spec.workers <= 1 else max(1, (os.cpu_count() or 1) // spec.workers)


def execute(task: JobTask) -> dict:
    """Run one job wherever the executor placed it: ``state.json`` while it trains, its start line,
    warnings and (on failure) traceback appended to ``job.log``; ``failed.json`` of an earlier try is
    removed once it succeeds."""
    job, run_dir = task.job, Path(task.job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {
        "state": "running",
        "engine": task.engine,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": _engine_job_id(),
        "started": _now(),
    }
    write_text_atomic(run_dir / "state.json", json.dumps(state, indent=2) + "\n")
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    handler = logging.FileHandler(run_dir / "job.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        resume = " (resuming from checkpoints/last.pt)" if (run_dir / "checkpoints" / "last.pt").is_file() else ""
        where = f"{task.engine} {state['host']} pid {state['pid']}"
        handler.stream.write(f"{_now()} start {describe(job.config)} on {where}{resume}\n")
        handler.flush()  # a killed try leaves its start line
        results = run_job(job)
    except BaseException:
        handler.stream.write(f"{_now()} failed:\n{traceback.format_exc()}")
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    (run_dir / "failed.json").unlink(missing_ok=True)
    (run_dir / "state.json").unlink(missing_ok=True)
    return results


def record_failure(job: Job, outcome: TaskOutcome, engine: str) -> str:
    """Write ``OUT/<name>/failed.json``, report the failure on stderr; returns the run directory."""
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = outcome.log_path or str(run_dir / "job.log")
    tail = outcome.log_tail or log_tail(log_path)
    record = {"name": job.name, "error": outcome.error, "engine": engine, "time": _now()}
    record |= {"run_dir": str(run_dir), "log_path": log_path, "log_tail": tail}
    write_text_atomic(run_dir / "failed.json", json.dumps(record, indent=2) + "\n")
    (run_dir / "state.json").unlink(missing_ok=True)
    indented = "".join(f"    {line}\n" for line in tail.splitlines())
    print(
        f"[{job.step}] {job.name} failed on {engine}: {outcome.error}\n  run dir: {run_dir}\n  log: {log_path}\n"
        f"{indented}",
        file=sys.stderr,
        end="",
        flush=True,
    )
    return str(run_dir)


def _engine_job_id() -> str:
    """The engine's id of the running task: SLURM's job (and array task) id, Ray's task id, else ""."""
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"{os.environ.get('SLURM_ARRAY_JOB_ID', slurm)}_{task}" if task else slurm
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_task_id() or ""
    return ""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_job(job: Job) -> dict:
    """Train (or resume, or skip) one point, then measure its FLOPs once; returns results.json + flops."""
    from e2e.training.trainer import train

    run_dir = Path(job.run_dir)
    results_path = run_dir / "results.json"
    if results_path.is_file():
        announce(job, "finished, reused")
        results = json.loads(results_path.read_text(encoding="utf-8"))
        _check_same_config(job, results["config"])
    else:
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        announce(job, "resuming" if resume else "training")
        results = train(job.config, run_dir, resume=resume)
    if job.flops_utterances is not None:
        results["flops"] = _flops(job, run_dir)
    return results


def announce(job: Job, action: str) -> None:
    """One stderr line naming the point ``job`` trains and what happens to it now."""
    step = f"[{job.step}] " if job.step else ""
    print(f"{step}{describe(job.config)} -> {job.run_dir}: {action}", file=sys.stderr, flush=True)


def describe(config: ExperimentConfig) -> str:
    """The point a config trains, e.g. ``mesm tav top_p=0.5 seed 1 on iemocap``."""
    model = config.model
    top_p = f" top_p={model.top_p:g}" if model_spec(model.name).sparse_traces else ""
    return f"{model.name} {model.modalities}{top_p} seed {config.train.seed} on {config.data.dataset}"


def _check_same_config(job: Job, stored: dict) -> None:
    """A finished run is reused only for the same config: a sweep rerun with other overrides into the
    same OUT must not silently mix old results in."""
    if json.loads(json.dumps(job.config.to_dict())) != stored:
        raise UsageError(
            f"{job.run_dir} holds a finished run with another config than sweep point "
            f"{job.name!r}; use a new output directory"
        )


def _flops(job: Job, run_dir: Path) -> dict:
    """measure_flops with the best checkpoint's weights (sparsity depends on the trained attention);
    cached in ``flops.json`` so a rerun does not measure again."""
    path = run_dir / "flops.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    from e2e.analysis.flops import measure_flops
    from e2e.training.checkpoint import load_checkpoint

    state_dict = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    flops = measure_flops(job.config, max_utterances=job.flops_utterances, state_dict=state_dict)
    write_text_atomic(path, json.dumps(flops, indent=2) + "\n")
    return flops


def make_job(out: Path, name: str, config: ExperimentConfig, flops_utterances: int | None = None) -> Job:
    """The job training ``config`` in ``OUT/<name>``; its device is checked now, before anything runs."""
    from e2e.training.distributed import resolve_device

    resolve_device(config.train.device)
    return Job(name, config, str(out / name), flops_utterances)


def metric_values(test: dict) -> dict[str, float]:
    return {name: test[name] for name in METRIC_COLUMNS if name in test}


# --- top-p (Figure 5) ------------------------------------------------------------------------------


# --- modality subsets (Table 5) --------------------------------------------------------------------
