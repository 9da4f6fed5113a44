"""``e2e sweep top-p``: MESM at every p of a grid and FE2E as the reference, per seed (the MESM paper's
Figure 5), with the FLOPs of each point; ``OUT/results.csv`` and ``OUT/top_p.png``."""

from __future__ import annotations

from pathlib import Path

from data_reorg.executors import ExecutorSpec
from e2e.config import ExperimentConfig
from e2e.experiments.jobs import Job, make_job, metric_values, run_jobs
from e2e.models import switch_model, with_changes
from e2e.reporting.plots import plot_top_p
from e2e.reporting.tables import write_csv
from e2e.training.metrics import main_metrics


def sweep_top_p(
    config: ExperimentConfig,
    values: list[float],
    seeds: list[int],
    out: Path,
    jobs: int = 1,
    flops_utterances: int = 8,
    executor: ExecutorSpec | None = None,
) -> Path:
    """One MESM run per (p, seed) and one FE2E reference per seed, from ``config`` (a MESM config, or
    any end-to-end one: the model is set per point); returns ``OUT/results.csv``.

    Also draws ``OUT/top_p.png``. ``flops_utterances`` test utterances are used per FLOPs measurement
    (0 = all). ``executor`` runs the points (default: this machine with ``jobs`` processes).
    """
    out = Path(out)
    mesm, fe2e = switch_model(config, "mesm", "sweep top-p"), switch_model(config, "fe2e", "sweep top-p")
    job_list = []
    for seed in seeds:
        job_list.append(
            make_job(out, f"fe2e-s{seed}", with_changes(fe2e, {"train.seed": seed}, "sweep top-p"), flops_utterances)
        )
        for p in values:
            point = with_changes(mesm, {"model.top_p": p, "train.seed": seed}, f"sweep top-p point p={p:g}")
            job_list.append(make_job(out, f"mesm-p{p:g}-s{seed}", point, flops_utterances))
    results = run_jobs(job_list, out, jobs, executor=executor)
    rows = [_top_p_row(job, results[job.name]) for job in job_list]
    write_csv(out / "results.csv", rows)
    plot_top_p(rows, main_metrics(config.data.dataset, config.data.task)[:2], out / "top_p.png")
    return out / "results.csv"


def _top_p_row(job: Job, results: dict) -> dict:
    model = job.config.model
    flops = results["flops"]
    return {
        "p": model.top_p if model.name == "mesm" else "",
        "seed": job.config.train.seed,
        "model": model.name,
        **metric_values(results["test"]),
        "gflops": flops["per_utterance_gflops"]["total"],
        "gflops_ratio": flops["ratio"],
        "run": job.name,
    }
