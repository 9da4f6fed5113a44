"""``e2e sweep modalities``: every model on every subset of text, audio and visual (the MESM paper's
Table 5); ``OUT/modalities.csv`` and ``OUT/modalities.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from data_reorg.executors import ExecutorSpec
from data_reorg.io import write_text_atomic
from e2e.config import ExperimentConfig, UsageError
from e2e.experiments.jobs import Job, make_job, metric_values, run_jobs
from e2e.models import load_config, model_spec, switch_model, with_changes
from e2e.reporting.tables import modalities_table, write_csv
from e2e.training.metrics import main_metrics

MODALITY_SUBSETS = ("t", "a", "v", "ta", "tv", "av", "tav")  # the rows of the paper's Table 5


def sweep_modalities(
    config: Path,
    models: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    overrides: Sequence[str] = (),
    jobs: int = 1,
    executor: ExecutorSpec | None = None,
) -> Path:
    """Every subset of T, A, V for every model; returns ``OUT/modalities.csv`` (and writes .md).

    ``config`` is either a directory holding ``<model>.yaml`` per model (e.g. configs/demo) or one
    YAML file used for all models (the model set per point, its options that the model lacks left
    behind); ``overrides`` (``--set`` strings) apply to every file. MESM cannot run without text (its
    sparse attention is queried by the text): its rows for A, V and AV are the FE2E runs (column
    ``variant``), as in the paper's ablation. ``executor`` runs the points (default: this machine with
    ``jobs`` processes).
    """
    out, config = Path(out), Path(config)
    points = []  # (model, subset, job)
    for model in models:
        for subset in MODALITY_SUBSETS:
            variant = "fe2e" if model_spec(model).sparse_traces and "t" not in subset else model
            base = _variant_config(config, variant, overrides)
            for seed in seeds:
                point = with_changes(
                    base,
                    {"model.modalities": subset, "train.seed": seed},
                    f"sweep modalities point {variant}-{subset}-s{seed}",
                )
                points.append((model, subset, make_job(out, f"{variant}-{subset}-s{seed}", point)))
    results = run_jobs(_unique_jobs([job for _, _, job in points]), out, jobs, executor=executor)
    data = points[0][2].config.data
    rows = [
        {
            "model": model,
            "modalities": subset.upper(),
            "variant": job.config.model.name,
            "seed": job.config.train.seed,
            **metric_values(results[job.name]["test"]),
            "run": job.name,
        }
        for model, subset, job in points
    ]
    write_csv(out / "modalities.csv", rows)
    write_text_atomic(out / "modalities.md", modalities_table(rows, main_metrics(data.dataset, data.task)[:2]) + "\n")
    return out / "modalities.csv"


def _unique_jobs(job_list: list[Job]) -> list[Job]:
    """One job per name (MESM's no-text rows share the FE2E runs); a name with two configs is a bug."""
    unique: dict[str, Job] = {}
    for job in job_list:
        if unique.setdefault(job.name, job) != job:
            raise UsageError(f"sweep point {job.name!r} is defined with two different configs")
    return list(unique.values())


def _variant_config(config: Path, variant: str, overrides: Sequence[str]) -> ExperimentConfig:
    """``CONFIG/<variant>.yaml`` when ``config`` is a directory, else the one file switched to ``variant``."""
    if config.is_dir():
        return load_config(config / f"{variant}.yaml", overrides)
    return switch_model(load_config(config, overrides), variant, f"{config} as {variant}")
