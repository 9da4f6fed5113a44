"""``e2e benchmark``: every model on the same clips, splits, trainer, metrics and thresholds; one table.

For each (model, seed) one independent, resumable run ``OUT/<model>-s<seed>/`` is trained with
``CONFIG_DIR/<model>.yaml``, its data directory, dataset and seed overridden (the jobs of
:mod:`e2e.experiments.jobs`: a finished run is reused, a killed one resumed). Inputs are prepared first, each
step reusing what is already cached: the face/mel cache (:mod:`e2e.data.preprocess`) for every model and
the two-stage feature cache (:mod:`e2e.data.feature_cache`) for the feature models.

A model registered with a ``pretrain_prefix`` (ConKI: its knowledge adapters, ``adapters.``) injects
knowledge from another corpus: with ``knowledge_data`` a stage-1 run ``OUT/<model>-knowledge-s<seed>/``
trains it on that corpus, and the target run copies the parameters under that prefix before its first
epoch (``train.init_checkpoint``).

Outputs: ``report.md`` / ``report.csv`` (mean±std over seeds in the layout of the MESM paper's Table 3
(IEMOCAP per-class Acc/F1) or Table 4 (MOSEI per-class WAcc/F1), with a ``majority`` row: the
train-majority prediction scored by the same metrics) and ``summary.json`` (per model the mean test
score and whether it beats the majority baseline).

Regression tasks (``--set data.task=sentiment`` on MOSEI, ``vad`` on IEMOCAP) keep the layout: the
``majority`` row is then the constant predictor of the train mean, and a model beats it when its mean
test MAE is lower. ConKI's knowledge run trains the emotion task on the other corpus whatever the
target's task (only its adapters are copied, and emotion is the task both corpora have).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_reorg.executors import ExecutorSpec
from data_reorg.io import write_text_atomic
from data_reorg.manifest import load_manifest
from e2e.config import REGRESSION_TASKS, ExperimentConfig, UsageError
from e2e.data.bundle import build_datasets
from e2e.experiments.jobs import Job, make_job, run_jobs
from e2e.models import (
    available_models,
    load_config,
    model_inputs,
    model_spec,
    models_for_task,
    shipped_models,
    with_changes,
)
from e2e.reporting.report import write_report
from e2e.reporting.tables import mean_std
from e2e.training.metrics import Scoring, is_single_label, main_metrics

# the score a model must beat the majority baseline on (with F1 for emotion): IEMOCAP 6-way accuracy
# (the per-class binary Acc of "always negative" is high), MOSEI per-class weighted accuracy (0.5 for a
# constant prediction); a regression task's MAE (lower is better) against the train-mean constant
BASELINE_METRIC = {
    ("emotion", "iemocap"): "multiclass_acc",
    ("emotion", "mosei"): "wacc",
    ("sentiment", "mosei"): "mae",
    ("vad", "iemocap"): "mae",
}


@dataclass(frozen=True)
class BenchmarkRequest:
    """What to benchmark: every (model, seed) on the corpus ``data_dir`` with ``config_dir/<model>.yaml``
    (``overrides``: ``--set`` strings for every run), run folders under ``out``; ``knowledge_data``: the
    other corpus, for models that pretrain there."""

    data_dir: Path
    models: Sequence[str]
    seeds: Sequence[int]
    config_dir: Path
    out: Path
    overrides: Sequence[str] = ()
    knowledge_data: Path | None = None


@dataclass
class BenchmarkPlan:
    """``pretrain``: stage-1 knowledge runs; ``runs``: (model, seed, job) of the runs in the table."""

    pretrain: list[Job] = field(default_factory=list)
    runs: list[tuple[str, int, Job]] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        return [*self.pretrain, *(job for _, _, job in self.runs)]


def parse_models(text: str, task: str = "emotion") -> list[str]:
    """``"all"`` (every model the package ships that supports ``task``) or a comma list of registered
    models, order kept, repeats dropped (a listed model that does not support the task is refused when
    its config is built)."""
    supported = set(models_for_task(task))
    if text.strip() == "all":
        names = [name for name in shipped_models() if name in supported]
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [name for name in names if name not in available_models()]
    if not names or unknown:
        raise UsageError(
            f"unknown model(s) {', '.join(unknown) or text!r}; registered: {', '.join(available_models())} (or 'all')"
        )
    return list(dict.fromkeys(names))


def dataset_of(data_dir: Path | str) -> str:
    """The ``dataset`` field shared by every manifest row of a reorganized corpus."""
    datasets = {row["dataset"] for row in load_manifest(Path(data_dir))}
    if len(datasets) != 1:
        raise UsageError(f"{data_dir}/manifest.jsonl mixes datasets {sorted(datasets)}; benchmark one corpus")
    return datasets.pop()


def plan_benchmark(request: BenchmarkRequest) -> BenchmarkPlan:
    """The jobs of :func:`benchmark`, without running anything."""
    plan = BenchmarkPlan()
    config_dir, out, overrides = Path(request.config_dir), Path(request.out), request.overrides
    target = (Path(request.data_dir), dataset_of(request.data_dir))
    knowledge = (
        None if request.knowledge_data is None else (Path(request.knowledge_data), dataset_of(request.knowledge_data))
    )
    for model in request.models:
        for seed in request.seeds:
            config = _model_config(model, seed, config_dir, target, overrides)
            prefix = model_spec(model).pretrain_prefix
            if prefix:
                stage1 = _knowledge_job(model, seed, config_dir, out, overrides, knowledge)
                plan.pretrain.append(stage1)
                config = with_changes(
                    config,
                    {
                        "train.init_checkpoint": str(Path(stage1.run_dir) / "checkpoints" / "best.pt"),
                        "train.init_prefix": prefix,
                    },
                    f"{model} fine-tuning after {stage1.name}",
                )
            plan.runs.append((model, seed, make_job(out, f"{model}-s{seed}", config)))
    return plan


def benchmark(request: BenchmarkRequest, jobs: int = 1, executor: ExecutorSpec | None = None) -> dict:
    """Prepare inputs, train every unfinished run (on ``executor``, default this machine with ``jobs``
    processes), write the report; returns ``summary.json``'s contents."""
    out = Path(request.out)
    plan = plan_benchmark(request)
    finished = train_plan(plan, out, jobs, executor)
    results = [dict(finished[job.name], run=job.name) for _, _, job in plan.runs]
    majority = majority_results(plan.runs[0][2].config)
    write_report([majority, *results], out)
    summary = summarize(results, majority)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def train_plan(plan: BenchmarkPlan, out: Path, jobs: int = 1, executor: ExecutorSpec | None = None) -> dict[str, dict]:
    """Prepare the caches here (``jobs`` processes), then train (or reuse, or resume) the knowledge runs
    and the table's runs on ``executor``; returns the table runs' results by job name."""
    prepare_inputs(plan.jobs, jobs)
    if plan.pretrain:
        run_jobs(plan.pretrain, out, jobs, list_name="pretrain_jobs.json", executor=executor)
    return run_jobs([job for _, _, job in plan.runs], out, jobs, executor=executor)


def prepare_inputs(job_list: Sequence[Job], workers: int = 1) -> None:
    """Build (or reuse) the face/mel cache of every data directory (``workers`` MTCNN processes) and the
    feature cache of every feature-model configuration the jobs need, before any training starts."""
    from e2e.data.feature_cache import extract_features
    from e2e.data.preprocess import preprocess

    caches, features = set(), set()
    for job in job_list:
        data, model = job.config.data, job.config.model
        caches.add((data.data_dir, data.img_interval_ms))
        if model_inputs(model.name) == "features":
            features.add((data.data_dir, model.text_model, data.img_interval_ms, model.text_max_length))
    for data_dir, interval in sorted(caches):
        print(f"face/mel cache of {data_dir} (every {interval} ms)", file=sys.stderr, flush=True)
        preprocess(data_dir, interval, jobs=workers, progress=False)
    for data_dir, text_model, interval, max_length in sorted(features):
        print(f"feature cache of {data_dir} ({text_model}, every {interval} ms)", file=sys.stderr, flush=True)
        extract_features(data_dir, text_model, interval, max_length, progress=False)


def majority_results(config: ExperimentConfig) -> dict:
    """results.json-shaped test metrics of the constant baseline: the most frequent class for every test
    utterance (single-label), per emotion its more frequent value (multi-label), or the train mean of
    the targets (regression), scored as a model's outputs (no pos_weight: nothing was trained)."""
    data = build_datasets(config, model_inputs(config.model.name))
    task, dataset = config.data.task, config.data.dataset
    constant, thresholds = _constant_output(data.train.labels.numpy(), task, dataset)
    labels = data.test.labels.numpy()
    outputs = np.tile(constant, (len(labels), 1))
    test = Scoring(task, dataset, tuple(data.class_names)).metrics(outputs, labels, thresholds)
    return {
        "run": "majority",
        "model": "majority",
        "dataset": dataset,
        "task": task,
        "main_metrics": list(main_metrics(dataset, task)),
        "class_names": list(data.class_names),
        "test": test,
        "config": {"model": {"modalities": "-"}},
    }


def _constant_output(train_labels: np.ndarray, task: str, dataset: str) -> tuple[np.ndarray, list[float] | None]:
    """(the constant baseline's output row, its thresholds): emotion logits +1 / -1 (sigmoid 0.73 /
    0.27, decided at 0.5) for the train-majority decision per class; a regression task's train mean."""
    if task in REGRESSION_TASKS:
        return train_labels.mean(0), None
    positives = train_labels.sum(0)
    if is_single_label(dataset):
        chosen = np.arange(len(positives)) == positives.argmax()
    else:
        chosen = positives > len(train_labels) / 2
    return np.where(chosen, 1.0, -1.0), [0.5] * len(positives)


def summarize(results: list[dict], majority: dict) -> dict:
    """Per model: mean±std over seeds of the task's baseline metric (and F1 for emotion), and whether the
    mean beats the majority baseline: a higher score and F1 for emotion, a lower MAE for regression."""
    dataset, task = majority["dataset"], majority.get("task", "emotion")
    metric = BASELINE_METRIC[task, dataset]
    keys = (metric,) if task in REGRESSION_TASKS else (metric, "f1")
    models = per_model_means(results, keys)
    for entry in models.values():
        entry["beats_majority"] = _beats(entry, majority["test"], keys, lower_is_better=task in REGRESSION_TASKS)
    return {
        "dataset": dataset,
        "task": task,
        "metric": metric,
        "majority": {key: majority["test"][key] for key in keys},
        "models": models,
    }


def per_model_means(results: list[dict], metrics: Sequence[str]) -> dict[str, dict]:
    """Per model: its runs and the mean±std over them of each test metric (nan where a run lacks it)."""
    models: dict[str, dict] = {}
    for result in results:
        models.setdefault(result["model"], {"runs": []})["runs"].append(result["run"])
    for name, entry in models.items():
        runs = [result for result in results if result["model"] == name]
        for metric in metrics:
            entry[metric], entry[f"{metric}_std"] = mean_std([run["test"].get(metric) for run in runs])
    return models


def _beats(entry: dict, baseline: dict, keys: Sequence[str], lower_is_better: bool) -> bool:
    if lower_is_better:
        return all(entry[key] < baseline[key] for key in keys)
    return all(entry[key] > baseline[key] for key in keys)


def _model_config(
    model: str, seed: int, config_dir: Path, corpus: tuple[Path, str], overrides: Sequence[str]
) -> ExperimentConfig:
    """``CONFIG_DIR/<model>.yaml`` on ``corpus`` = (data dir, its dataset) with ``seed``."""
    data_dir, dataset = corpus
    path = config_dir / f"{model}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: every benchmarked model needs <model>.yaml in {config_dir}")
    # the corpus's dataset first, so that a task given in the overrides is checked against it
    return with_changes(
        load_config(path, [f"data.dataset={dataset}", *overrides]),
        {"model.name": model, "data.data_dir": str(data_dir), "data.dataset": dataset, "train.seed": seed},
        f"benchmark run {model}-s{seed}",
    )


def _knowledge_job(
    model: str, seed: int, config_dir: Path, out: Path, overrides: Sequence[str], knowledge: tuple[Path, str] | None
) -> Job:
    if knowledge is None:
        raise UsageError(
            f"{model} pretrains its adapters on another corpus: pass --knowledge-data "
            f"(e.g. the reorganized MOSEI folder when benchmarking IEMOCAP)"
        )
    config = _model_config(model, seed, config_dir, knowledge, [*overrides, "data.task=emotion"])
    return make_job(out, f"{model}-knowledge-s{seed}", config)
