"""Scaling of the job runner: N small demo runs on W local workers against one run, and the per-job
overhead of the Ray (and optionally SLURM) executor on a one-node cluster.

Each run is ``configs/demo/<--model>.yaml`` on the demo corpus (built under ``--data`` when missing)
with ``--set`` overrides (default: 1 epoch, few frames), seeds 0..N-1, each in its own run directory
under a fresh temporary folder, trained by :func:`e2e.experiments.jobs.run_jobs` exactly as
``e2e benchmark`` / ``e2e sweep`` train them.

* ``one_run_s``: one run in this process with ``max(1, cores // W)`` torch threads (a worker's share);
* ``total_s``: the N runs on W spawned local workers (their start-up included);
* ``efficiency`` = (N / W × one_run_s) / total_s: 1 is perfect, the target is >= 1 / 1.25 = 0.8.

``--ray``: the same N runs on a Ray cluster (``--ray-address``, else a one-node cluster of W CPUs this
script starts with ``ray start --head`` and stops afterwards), each task asking for ``cores // W`` CPUs;
``ray.overhead_per_job_s`` = (Ray total − local total) / N, and ``ray.noop_task_s`` the wall time per
task of N empty tasks (connection excluded: ``ray.connect_s``). ``--slurm``: the same for
``--executor slurm`` when :mod:`data_reorg.executors.slurm` exists and a cluster answers.

Prints one JSON object.
    python benchmarks/scaling.py [--data build/demo] [--runs 4] [--workers 2] [--ray] [--slurm]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/...` from a checkout

from demo_corpus import ensure_demo  # noqa: E402  (beside this script)

from data_reorg.executors import ExecutorSpec, Resources, make_executor  # noqa: E402
from e2e.experiments.jobs import Job, make_job, run_jobs  # noqa: E402
from e2e.models import load_config  # noqa: E402

OVERRIDES = ("train.epochs=1", "train.progress=false", "data.max_frames=4", "data.max_chunks=8")


def noop(item: int) -> int:
    """An empty task: what is left is the executor's own cost per task."""
    return item


def demo_jobs(corpus: Path, model: str, seeds: range, out: Path, overrides: list[str]) -> list[Job]:
    config = f"configs/demo/{model}.yaml"
    return [
        make_job(
            out, f"{model}-s{seed}", load_config(config, [f"data.data_dir={corpus}", f"train.seed={seed}", *overrides])
        )
        for seed in seeds
    ]


def timed_runs(job_list: list[Job], out: Path, workers: int, executor: ExecutorSpec | None = None) -> float:
    started = time.perf_counter()
    run_jobs(job_list, out, workers, executor=executor)
    return time.perf_counter() - started


def one_run_s(corpus: Path, args, root: Path, threads: int) -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return timed_runs(demo_jobs(corpus, args.model, range(1), root / "one", args.set), root / "one", 1)
    finally:
        torch.set_num_threads(before)


def engine_overhead(kind: str, spec: ExecutorSpec, corpus: Path, args, root: Path, local_total: float) -> dict:
    """Connection, empty-task and per-run overhead of ``spec``'s engine against the local pool."""
    executor = make_executor(spec)
    started = time.perf_counter()
    executor.map(noop, [0], ["warm-up"])  # connects, starts a worker
    connect_s = time.perf_counter() - started
    started = time.perf_counter()
    outcomes = executor.map(noop, list(range(args.runs)), [f"noop-{i}" for i in range(args.runs)])
    noop_s = (time.perf_counter() - started) / args.runs
    if not all(outcome.ok for outcome in outcomes):
        raise SystemExit(f"{kind}: empty tasks failed: {[o.error for o in outcomes if not o.ok]}")
    out = root / kind
    total = timed_runs(demo_jobs(corpus, args.model, range(args.runs), out, args.set), out, args.workers, spec)
    return {
        "connect_s": round(connect_s, 3),
        "noop_task_s": round(noop_s, 4),
        "total_s": round(total, 2),
        "overhead_per_job_s": round((total - local_total) / args.runs, 2),
    }


def ray_figures(corpus: Path, args, root: Path, cpus: int, local_total: float) -> dict:
    from tests.helpers.processes import stop_process_group
    from tests.helpers.ray_cluster import RAY_STOP_GRACE_S, start_head

    address, group = (args.ray_address, None) if args.ray_address else start_head(num_cpus=args.workers * cpus)
    try:
        spec = ExecutorSpec(kind="ray", workers=args.workers, resources=Resources(cpus=cpus), ray_address=address)
        return {"address": address, **engine_overhead("ray", spec, corpus, args, root, local_total)}
    finally:
        if group is not None:
            import ray

            ray.shutdown()
            stop_process_group(group, RAY_STOP_GRACE_S)


def slurm_figures(corpus: Path, args, root: Path, cpus: int, local_total: float) -> dict:
    try:
        import data_reorg.executors.slurm  # noqa: F401
    except ImportError as error:
        return {"skipped": f"no SLURM executor: {error}"}
    spec = ExecutorSpec(
        kind="slurm",
        workers=args.workers,
        resources=Resources(cpus=cpus),
        slurm_partition=args.slurm_partition,
        log_dir=root / "slurm_logs",
    )
    return engine_overhead("slurm", spec, corpus, args, root, local_total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "build" / "demo", help="demo corpus root")
    parser.add_argument("--runs", type=int, default=4, help="N runs")
    parser.add_argument("--workers", type=int, default=2, help="W local workers")
    parser.add_argument("--model", default="fe2e", help="the configs/demo/<model>.yaml to train")
    parser.add_argument("--set", action="append", default=None, help="override (repeatable); default: 1 epoch")
    parser.add_argument("--ray", action="store_true", help="also measure the Ray executor")
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"), help="default: start a cluster")
    parser.add_argument("--slurm", action="store_true", help="also measure the SLURM executor")
    parser.add_argument("--slurm-partition", default=None)
    args = parser.parse_args()
    args.set = args.set or list(OVERRIDES)
    corpus, problems = ensure_demo(args.data, args.workers)
    cpus = max(1, (os.cpu_count() or 1) // args.workers)
    with tempfile.TemporaryDirectory(prefix="scaling-") as folder:
        root = Path(folder)
        one = one_run_s(corpus, args, root, cpus)
        out = root / "local"
        total = timed_runs(demo_jobs(corpus, args.model, range(args.runs), out, args.set), out, args.workers)
        figures = {
            "n": args.runs,
            "workers": args.workers,
            "cores": os.cpu_count(),
            "model": args.model,
            "overrides": args.set,
            "one_run_s": round(one, 2),
            "total_s": round(total, 2),
            "efficiency": round(args.runs / args.workers * one / total, 3),
            "target": 0.8,
            "unpreprocessed_utterances": problems,
        }
        if args.ray:
            figures["ray"] = ray_figures(corpus, args, root, cpus, total)
        if args.slurm:
            figures["slurm"] = slurm_figures(corpus, args, root, cpus, total)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
