"""The generic job runner under every benchmark and sweep.

Every point is a job with its own run directory ``OUT/<name>/`` trained by
:func:`e2e.training.trainer.train`, its typed config built as an object (never as ``--set`` strings). The
job list is written to ``OUT/jobs.json`` (name, full config, run dir), so
the same points can be dispatched elsewhere (a cluster) and collected here afterwards. A point with
``results.json`` is skipped, one with only ``checkpoints/last.pt`` is resumed, so rerunning a killed
sweep finishes it. ``jobs > 1`` trains points in parallel "spawn" worker processes that share the
machine's cores. Each job names itself on stderr when it starts: ``[3/12] mesm tav top_p=0.5 seed 1
on iemocap -> OUT/mesm-p0.5-s1: training``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from data_reorg.io import write_text_atomic
from data_reorg.workers import worker_pool
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


def run_jobs(job_list: list[Job], out: Path, jobs: int = 1, list_name: str = "jobs.json") -> dict[str, dict]:
    """Write ``OUT/<list_name>``, train every unfinished job; returns results (+ "flops") by job name.

    ``jobs == 1`` trains in this process (no start-up cost per point); otherwise each worker gets
    ``max(1, cores // jobs)`` torch threads so parallel points do not oversubscribe the CPU.
    """
    out.mkdir(parents=True, exist_ok=True)
    job_list = [replace(job, step=f"{index}/{len(job_list)}") for index, job in enumerate(job_list, 1)]
    write_text_atomic(out / list_name, json.dumps([asdict(job) for job in job_list], indent=2) + "\n")
    if jobs <= 1:
        return {job.name: run_job(job) for job in job_list}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with worker_pool(jobs, _init_worker, (threads,)) as pool:
        futures = {job.name: pool.submit(run_job, job) for job in job_list}
        return {name: future.result() for name, future in futures.items()}


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


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


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
