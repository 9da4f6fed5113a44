"""Sweeps of independent training runs: MESM's top-p (the paper's Figure 5) and modality subsets
(its Table 5).

Every sweep point is a job with its own run directory ``OUT/<name>/`` trained by
:func:`e2e.train.train`. The job list is written to ``OUT/jobs.json`` (name, full config, run dir), so
the same points can be dispatched elsewhere (a cluster) and collected here afterwards. A point with
``results.json`` is skipped, one with only ``checkpoints/last.pt`` is resumed, so rerunning a killed
sweep finishes it. ``jobs > 1`` trains points in parallel "spawn" worker processes that share the
machine's cores. Each job names itself on stderr when it starts: ``[3/12] mesm tav top_p=0.5 seed 1
on iemocap -> OUT/mesm-p0.5-s1: training``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from data_reorg.io import atomic_path, write_text_atomic
from data_reorg.workers import worker_pool
from e2e.config import ExperimentConfig, config_from_dict, load_config
from e2e.metrics import main_metrics
from e2e.report import format_mean_std, mean_std

METRIC_COLUMNS = ("acc", "f1", "wacc", "precision", "recall", "auc", "multiclass_acc", "weighted_f1")
MODALITY_SUBSETS = ("t", "a", "v", "ta", "tv", "av", "tav")  # the rows of the paper's Table 5


@dataclass(frozen=True)
class Job:
    """One sweep point. ``flops_utterances``: None = no FLOPs measurement, else passed to measure_flops;
    ``step``: its place in the job list being run (``"3/12"``), set by :func:`run_jobs`."""

    name: str
    config: dict
    run_dir: str
    flops_utterances: int | None = None
    step: str = ""


def parse_values(text: str) -> list[float]:
    """``"0.1:1.0:0.1"`` (start:stop:step, stop included) or ``"0.3,0.5,1.0"``; rounded to 6 decimals
    so that a range does not yield 0.30000000000000004."""
    if ":" in text:
        start, stop, step = (float(part) for part in text.split(":"))
        if step <= 0 or stop < start:
            raise ValueError(f"range {text!r} needs start <= stop and step > 0")
        count = math.floor((stop - start) / step + 1e-6) + 1  # the epsilon keeps a stop on the grid
        values = [start + i * step for i in range(count)]
    else:
        values = [float(part) for part in text.split(",") if part.strip()]
    if not values:
        raise ValueError(f"no values in {text!r}")
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
    from e2e.train import train

    run_dir = Path(job.run_dir)
    results_path = run_dir / "results.json"
    if results_path.is_file():
        announce(job, "finished, reused")
        results = json.loads(results_path.read_text(encoding="utf-8"))
        _check_same_config(job, results["config"])
    else:
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        announce(job, "resuming" if resume else "training")
        results = train(config_from_dict(job.config, job.name), run_dir, resume=resume)
    if job.flops_utterances is not None:
        results["flops"] = _flops(job, run_dir)
    return results


def announce(job: Job, action: str) -> None:
    """One stderr line naming the point ``job`` trains and what happens to it now."""
    step = f"[{job.step}] " if job.step else ""
    print(f"{step}{describe(job.config)} -> {job.run_dir}: {action}", file=sys.stderr, flush=True)


def describe(config: dict) -> str:
    """The point a config trains, e.g. ``mesm tav top_p=0.5 seed 1 on iemocap``."""
    model = config["model"]
    top_p = f" top_p={model['top_p']:g}" if "mesm" in model["name"] else ""
    return (f"{model['name']} {model['modalities']}{top_p} seed {config['train']['seed']} "
            f"on {config['data']['dataset']}")


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _check_same_config(job: Job, stored: dict) -> None:
    """A finished run is reused only for the same config: a sweep rerun with other overrides into the
    same OUT must not silently mix old results in."""
    if json.loads(json.dumps(job.config)) != stored:
        raise ValueError(f"{job.run_dir} holds a finished run with another config than sweep point "
                         f"{job.name!r}; use a new output directory")


def _flops(job: Job, run_dir: Path) -> dict:
    """measure_flops with the best checkpoint's weights (sparsity depends on the trained attention);
    cached in ``flops.json`` so a rerun does not measure again."""
    path = run_dir / "flops.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    from e2e.flops import measure_flops
    from e2e.train import load_checkpoint

    state_dict = load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"]
    flops = measure_flops(config_from_dict(job.config, job.name), max_utterances=job.flops_utterances,
                          state_dict=state_dict)
    write_text_atomic(path, json.dumps(flops, indent=2) + "\n")
    return flops


def make_job(out: Path, name: str, config: ExperimentConfig, flops_utterances: int | None = None) -> Job:
    """The job training ``config`` in ``OUT/<name>``; its device is checked now, before anything runs."""
    from e2e.distributed import resolve_device

    resolve_device(config.train.device)
    return Job(name, config.to_dict(), str(out / name), flops_utterances)


def metric_values(test: dict) -> dict[str, float]:
    return {name: test[name] for name in METRIC_COLUMNS if name in test}


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


# --- top-p (Figure 5) ------------------------------------------------------------------------------

def sweep_top_p(config_path: Path, overrides: list[str], values: list[float], seeds: list[int], out: Path,
                jobs: int = 1, flops_utterances: int = 8) -> Path:
    """One MESM run per (p, seed) and one FE2E reference per seed; returns ``OUT/results.csv``.

    Also draws ``OUT/top_p.png``. ``flops_utterances`` test utterances are used per FLOPs measurement
    (0 = all).
    """
    out = Path(out)
    job_list = []
    for seed in seeds:
        job_list.append(make_job(out, f"fe2e-s{seed}", load_config(
            config_path, [*overrides, "model.name=fe2e", f"train.seed={seed}"]), flops_utterances))
        for p in values:
            job_list.append(make_job(out, f"mesm-p{p:g}-s{seed}", load_config(
                config_path, [*overrides, "model.name=mesm", f"model.top_p={p}", f"train.seed={seed}"]),
                flops_utterances))
    results = run_jobs(job_list, out, jobs)
    rows = [_top_p_row(job, results[job.name]) for job in job_list]
    write_csv(out / "results.csv", rows)
    plot_top_p(rows, main_metrics(job_list[0].config["data"]["dataset"])[0], out / "top_p.png")
    return out / "results.csv"


def _top_p_row(job: Job, results: dict) -> dict:
    model = job.config["model"]
    flops = results["flops"]
    return {"p": model["top_p"] if model["name"] == "mesm" else "", "seed": job.config["train"]["seed"],
            "model": model["name"], **metric_values(results["test"]),
            "gflops": flops["per_utterance_gflops"]["total"], "gflops_ratio": flops["ratio"], "run": job.name}


def plot_top_p(rows: list[dict], metric: str, path: Path) -> None:
    """Main metric and F1 (mean ± std over seeds) against p, GFLOPs on a second axis, FE2E as
    horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mesm = [row for row in rows if row["model"] == "mesm"]
    fe2e = [row for row in rows if row["model"] == "fe2e"]
    ps = sorted({row["p"] for row in mesm})
    figure, left = plt.subplots(figsize=(7, 4.5))
    right = left.twinx()
    for key, color in ((metric, "tab:blue"), ("f1", "tab:orange")):
        stats = [mean_std([100 * row[key] for row in mesm if row["p"] == p]) for p in ps]
        left.errorbar(ps, [m for m, _ in stats], yerr=[s for _, s in stats], color=color, marker="o",
                      capsize=3, label=f"MESM {key.upper()}")
        left.axhline(mean_std([100 * row[key] for row in fe2e])[0], color=color, linestyle="--",
                     label=f"FE2E {key.upper()}")
    gflops = [mean_std([row["gflops"] for row in mesm if row["p"] == p])[0] for p in ps]
    right.plot(ps, gflops, color="tab:green", marker="s", label="MESM GFLOPs")
    right.axhline(mean_std([row["gflops"] for row in fe2e])[0], color="tab:green", linestyle=":",
                  label="FE2E GFLOPs")
    for axis in (left, right):
        axis.margins(y=0.15)  # keep reference lines at a data extreme off the frame
    right.set_ylim(bottom=0)  # GFLOPs from zero: the saving reads as a proportion
    left.set_xlabel("top-p (fraction of attention mass kept)")
    left.set_ylabel("test metric (%)")
    right.set_ylabel("GFLOPs per utterance (feature extraction)")
    handles = [h for axis in (left, right) for h in axis.get_legend_handles_labels()[0]]
    left.legend(handles, [h.get_label() for h in handles], loc="lower right", fontsize=8)
    left.set_title(f"MESM top-p sweep (seeds: {len({row['seed'] for row in rows})})")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --- modality subsets (Table 5) --------------------------------------------------------------------

def sweep_modalities(config: Path, models: list[str], seeds: list[int], out: Path,
                     overrides: list[str] = (), jobs: int = 1) -> Path:
    """Every subset of T, A, V for every model; returns ``OUT/modalities.csv`` (and writes .md).

    ``config`` is either a directory holding ``<model>.yaml`` per model (e.g. configs/demo) or one
    YAML file used for all models with ``model.name`` overridden. MESM cannot run without text: its
    rows for A, V and AV are the FE2E runs (column ``variant``), as in the paper's ablation.
    """
    out, config = Path(out), Path(config)
    points = []  # (model, subset, job)
    for model in models:
        for subset in MODALITY_SUBSETS:
            variant = model if model != "mesm" or "t" in subset else "fe2e"
            for seed in seeds:
                path = config / f"{variant}.yaml" if config.is_dir() else config
                loaded = load_config(path, [*overrides, f"model.name={variant}", f"model.modalities={subset}",
                                            f"train.seed={seed}"])
                points.append((model, subset, make_job(out, f"{variant}-{subset}-s{seed}", loaded)))
    results = run_jobs(_unique_jobs([job for _, _, job in points]), out, jobs)
    dataset = points[0][2].config["data"]["dataset"]
    rows = [{"model": model, "modalities": subset.upper(), "variant": job.config["model"]["name"],
             "seed": job.config["train"]["seed"], **metric_values(results[job.name]["test"]), "run": job.name}
            for model, subset, job in points]
    write_csv(out / "modalities.csv", rows)
    write_text_atomic(out / "modalities.md", modalities_table(rows, main_metrics(dataset)[0]) + "\n")
    return out / "modalities.csv"


def _unique_jobs(job_list: list[Job]) -> list[Job]:
    """One job per name (MESM's no-text rows share the FE2E runs); a name with two configs is a bug."""
    unique: dict[str, Job] = {}
    for job in job_list:
        if unique.setdefault(job.name, job) != job:
            raise ValueError(f"sweep point {job.name!r} is defined with two different configs")
    return list(unique.values())


def modalities_table(rows: list[dict], metric: str) -> str:
    """Markdown: per model, seven rows (T … TAV) with main metric and F1 as mean±std over seeds."""
    header = ["model", "modalities", "variant", "seeds", f"{metric.upper()} (%)", "F1 (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["modalities"], row["variant"]), []).append(row)
    for (model, subset, variant), group in groups.items():
        cells = [model, subset, variant, str(len(group)), format_mean_std([row[metric] for row in group]),
                 format_mean_std([row["f1"] for row in group])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
