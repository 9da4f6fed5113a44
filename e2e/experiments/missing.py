"""``e2e sweep missing``: test metrics of every model as inputs go missing at test time (beyond the papers).

The models are the runs of :mod:`e2e.experiments.benchmark` (same plan, same run folders: finished runs are
reused). Each run's best checkpoint is evaluated on test at its stored thresholds, once per
(mode, rate):

* ``elements``: each utterance loses that fraction of its face frames, mel chunks / feature steps and
  text tokens (:func:`e2e.analysis.missing.drop_elements`);
* ``modalities``: each modality of each utterance is removed with that probability, one always kept
  (:func:`e2e.analysis.missing.drop_modalities`).

What is dropped is a function of (:data:`DROP_SEED`, utterance id, modality, length, rate) only, the
same for every model, seed, batch size and device (the rule, and where raw and feature inputs cannot
lose identical elements, in :mod:`e2e.analysis.missing`).
Outputs: ``OUT/missing.csv`` (one row per run, mode and rate) and ``OUT/missing.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from data_reorg.executors import ExecutorSpec
from e2e.analysis.missing import check_rate, drop_elements, drop_modalities
from e2e.config import UsageError
from e2e.experiments.benchmark import BenchmarkRequest, plan_benchmark, train_plan
from e2e.experiments.jobs import announce, metric_values
from e2e.reporting.plots import plot_missing
from e2e.reporting.tables import write_csv
from e2e.training.inference import checkpoint_evaluator
from e2e.training.metrics import main_metrics

MODES = ("elements", "modalities")
DROP_SEED = 0  # the sweep's one seed of what is dropped


def sweep_missing(
    request: BenchmarkRequest,
    rates: Sequence[float],
    modes: Sequence[str] = MODES,
    jobs: int = 1,
    executor: ExecutorSpec | None = None,
) -> Path:
    """Train (or reuse) the benchmark runs (on ``executor``, default this machine with ``jobs`` processes),
    evaluate them here under missing inputs; returns ``OUT/missing.csv``."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise UsageError(f"unknown missing mode(s) {sorted(unknown)}; known: {', '.join(MODES)}")
    for rate in rates:
        check_rate(rate)  # before any training
    out = Path(request.out)
    plan = plan_benchmark(request)
    train_plan(plan, out, jobs, executor)
    rows = []
    for index, (model, seed, job) in enumerate(plan.runs, 1):
        announce(replace(job, step=f"{index}/{len(plan.runs)}"), f"test under missing inputs ({', '.join(modes)})")
        checkpoint = Path(job.run_dir) / "checkpoints" / "best.pt"
        rows += [
            dict(model=model, seed=seed, run=job.name, **row) for row in evaluate_missing(checkpoint, rates, modes)
        ]
    write_csv(out / "missing.csv", rows)
    data = plan.runs[0][2].config.data
    plot_missing(rows, main_metrics(data.dataset, data.task)[0], out / "missing.png")
    return out / "missing.csv"


def evaluate_missing(
    checkpoint: Path, rates: Sequence[float], modes: Sequence[str] = MODES, seed: int = DROP_SEED
) -> list[dict]:
    """``{"mode", "rate", <test metrics>}`` per mode and rate for one checkpoint, dropping with ``seed``."""
    evaluate = checkpoint_evaluator(checkpoint)
    drops = {"elements": drop_elements, "modalities": drop_modalities}
    rows = []
    for mode in modes:
        for rate in rates:
            transform = partial(drops[mode], rate=rate, seed=seed)
            rows.append({"mode": mode, "rate": rate, **metric_values(evaluate("test", transform))})
    return rows
