"""The field's evaluation protocols over the benchmark's runs (``e2e benchmark --split session-cv`` and
``e2e benchmark --cross-corpus OTHER``); the data side is :mod:`e2e.data.protocols`.

**Session-CV.** Every (model, seed) of the benchmark plan is trained once per IEMOCAP session held out,
``OUT/<model>-f<fold>-s<seed>/`` with ``data.split=session-cv`` and ``data.fold`` in its config (so its
results.json records the protocol and fold). The table (``session_cv.md`` / ``.csv``, summary
``session_cv.json``) gives mean ± std over folds and seeds per model and per fold, with a ``majority``
row per fold (the train-majority prediction scored by the same metrics).

**Cross-corpus.** Every (model, seed) is trained on each corpus with ``data.label_space=shared``
(``OUT/<model>-<corpus>-s<seed>/``), then its best checkpoint is scored on the *other* corpus's test split
mapped to the shared emotions, at the thresholds and ``pos_weight`` of its training (nothing is tuned on
the other corpus). A feature model's inputs are standardised with its training corpus's train
statistics. The scores and the label mapping are added to the run's results.json (``cross_corpus``) and
to ``cross_corpus.md`` / ``.csv`` / ``.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from data_reorg.executors import ExecutorSpec
from data_reorg.io import write_text_atomic
from data_reorg.manifest import load_manifest
from e2e.config import ExperimentConfig, UsageError
from e2e.data.protocols import SESSION_CV, SESSION_CV_VALID, SHARED_MAPPING, check_protocol, mapping_record, sessions_in
from e2e.experiments.benchmark import (
    BenchmarkPlan,
    BenchmarkRequest,
    dataset_of,
    majority_results,
    per_model_means,
    plan_benchmark,
    prepare_inputs,
    train_plan,
)
from e2e.experiments.jobs import Job, make_job
from e2e.models import model_inputs, model_spec, with_changes
from e2e.reporting.protocols import cross_corpus_table, session_cv_table
from e2e.training.metrics import Scoring, main_metrics
from e2e.training.trainer import json_safe

SHARED = "data.label_space=shared"


# --- leave-one-session-out cross-validation ---------------------------------------------------------


def parse_folds(text: str | None) -> list[int] | None:
    """``"1,3"`` -> [1, 3]; None or empty -> None (every session of the corpus)."""
    if not text:
        return None
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--folds must be comma-separated session numbers 1-5, got {text!r}") from None


def plan_session_cv(request: BenchmarkRequest, folds: Sequence[int] | None = None) -> BenchmarkPlan:
    """The benchmark plan with every table run repeated per held-out session (``folds``: a subset of
    the corpus's sessions; None: all of them)."""
    available = sessions_in(load_manifest(request.data_dir), f"{Path(request.data_dir) / 'manifest.jsonl'}")
    chosen = list(folds) if folds else available
    missing = sorted(set(chosen) - set(available))
    if missing:
        raise UsageError(f"--folds {missing}: {request.data_dir} holds sessions {available} only")
    base = plan_benchmark(request)
    plan = BenchmarkPlan(pretrain=base.pretrain)
    for model, seed, job in base.runs:
        for fold in chosen:
            config = with_changes(
                job.config, {"data.split": SESSION_CV, "data.fold": fold}, f"session-cv fold {fold} of {job.name}"
            )
            check_protocol(config.data)
            plan.runs.append((model, seed, make_job(Path(request.out), f"{model}-f{fold}-s{seed}", config)))
    return plan


def session_cv(
    request: BenchmarkRequest, folds: Sequence[int] | None = None, jobs: int = 1, executor: ExecutorSpec | None = None
) -> dict:
    """Train every (model, seed, fold) (on ``executor``, as :func:`~e2e.experiments.benchmark.benchmark`),
    write the session-CV tables; returns ``session_cv.json``'s contents."""
    out = Path(request.out)
    plan = plan_session_cv(request, folds)
    finished = train_plan(plan, out, jobs, executor)
    rows = [_fold_row(job.config, finished[job.name], job.name) for _, _, job in plan.runs]
    majority = []
    for fold in dict.fromkeys(job.config.data.fold for _, _, job in plan.runs):
        config = next(job.config for _, _, job in plan.runs if job.config.data.fold == fold)
        majority.append(_fold_row(config, majority_results(config), f"majority-f{fold}", model="majority"))
    first = plan.runs[0][2].config.data
    metrics = main_metrics(first.dataset, first.task)
    session_cv_table([*majority, *rows], metrics, out)
    summary = {
        "protocol": SESSION_CV,
        "valid": SESSION_CV_VALID,
        "dataset": first.dataset,
        "task": first.task,
        "folds": sorted({row["fold"] for row in rows}),
        "models": per_model_means(majority + rows, metrics),
    }
    write_text_atomic(out / "session_cv.json", json.dumps(json_safe(summary), indent=2) + "\n")
    return summary


def _fold_row(config: ExperimentConfig, results: dict, run: str, model: str | None = None) -> dict:
    return {
        "model": model or config.model.name,
        "modalities": "-" if model else config.model.modalities,
        "fold": config.data.fold,
        "seed": "-" if model else config.train.seed,
        "run": run,
        "test": results["test"],
    }


# --- cross-corpus evaluation ------------------------------------------------------------------------


def plan_cross_corpus(request: BenchmarkRequest, other: Path) -> list[tuple[str, Path, Path]]:
    """Per direction of :func:`cross_corpus`: (training corpus's dataset, its data dir, the test corpus's
    data dir); refuses a model that pretrains on the other corpus (ConKI: that corpus
    is the held-out one here) and a pair that is not IEMOCAP and MOSEI."""
    pretraining = [model for model in request.models if model_spec(model).pretrain_prefix]
    if pretraining:
        raise UsageError(
            f"{', '.join(pretraining)} pretrain(s) on the other corpus, which cross-corpus evaluation holds out"
        )
    corpora = {dataset_of(request.data_dir): Path(request.data_dir), dataset_of(other): Path(other)}
    if set(corpora) != set(SHARED_MAPPING):
        raise UsageError(
            f"cross-corpus evaluation pairs {' and '.join(SHARED_MAPPING)}; got {request.data_dir} "
            f"({dataset_of(request.data_dir)}) and {other} ({dataset_of(other)})"
        )
    first, second = dataset_of(request.data_dir), dataset_of(other)
    return [(first, corpora[first], corpora[second]), (second, corpora[second], corpora[first])]


def cross_corpus(
    request: BenchmarkRequest, other: Path, other_config_dir: Path, jobs: int = 1, executor: ExecutorSpec | None = None
) -> dict:
    """Train every (model, seed) on both corpora in the shared label space (``other_config_dir``: the
    model configs for ``other``; on ``executor``), score each on the other corpus's test split, write
    the tables; returns ``cross_corpus.json``'s contents."""
    out = Path(request.out)
    directions = plan_cross_corpus(request, other)
    plan, tests = BenchmarkPlan(), {}
    for (dataset, data_dir, test_dir), config_dir in zip(directions, (request.config_dir, other_config_dir)):
        sub = replace(request, data_dir=data_dir, config_dir=config_dir, overrides=[*request.overrides, SHARED])
        for model, seed, job in plan_benchmark(sub).runs:
            name = f"{model}-{dataset}-s{seed}"
            plan.runs.append((model, seed, make_job(out, name, job.config)))
            tests[name] = corpus_config(job.config, test_dir)
    prepare_inputs([make_job(out, name, config) for name, config in tests.items()], jobs)
    finished = train_plan(plan, out, jobs, executor)
    rows = []
    for _, _, job in plan.runs:
        cross = evaluate_on_corpus(job.config, Path(job.run_dir), tests[job.name])
        record_cross_corpus(Path(job.run_dir), tests[job.name], cross)
        rows.append(_cross_row(job, finished[job.name], tests[job.name], cross))
    cross_corpus_table(rows, out)
    summary = {"protocol": "cross-corpus", **mapping_record(), "runs": rows}
    write_text_atomic(out / "cross_corpus.json", json.dumps(json_safe(summary), indent=2) + "\n")
    return summary


def corpus_config(config: ExperimentConfig, data_dir: Path) -> ExperimentConfig:
    """``config`` reading the corpus in ``data_dir`` (its dataset) in the shared label space."""
    return with_changes(
        config,
        {"data.data_dir": str(data_dir), "data.dataset": dataset_of(data_dir), "data.label_space": "shared"},
        f"cross-corpus test on {data_dir}",
    )


def evaluate_on_corpus(config: ExperimentConfig, run_dir: Path, test_config: ExperimentConfig) -> dict:
    """Test metrics of the run's best checkpoint on ``test_config``'s corpus (its test split), at the
    stored thresholds and pos_weight, scored as that corpus is (one-vs-rest per shared emotion)."""
    from e2e.training.checkpoint import check_class_names, load_checkpoint, model_from_checkpoint
    from e2e.training.distributed import resolve_device
    from e2e.training.inference import predict

    path = run_dir / "checkpoints" / "best.pt"
    checkpoint = load_checkpoint(path)
    _, model = model_from_checkpoint(checkpoint, path)
    test = _test_split(config, test_config)
    check_class_names(checkpoint["class_names"], test.class_names, path)
    device = resolve_device(config.train.device)
    outputs, labels = predict(model.to(device), test, test.collator(), test_config, device, desc="cross-corpus")
    pos_weight = checkpoint.get("pos_weight")
    scoring = Scoring(
        "emotion", test_config.data.dataset, tuple(test.class_names), None if pos_weight is None else tuple(pos_weight)
    )
    metrics = scoring.metrics(outputs, labels, checkpoint["thresholds"])
    metrics["skipped"] = {reason: len(ids) for reason, ids in sorted(test.skipped.items())}
    return metrics


def _test_split(config: ExperimentConfig, test_config: ExperimentConfig):
    """The test split of ``test_config``'s corpus as the run's model reads it; feature models get the
    standardisation of their own training corpus's train split."""
    data_dir = test_config.data.data_dir
    if model_inputs(config.model.name) == "features":
        from e2e.data.feature_dataset import FeatureDataset

        statistics = FeatureDataset(config.data.data_dir, "train", config).statistics
        return FeatureDataset(data_dir, "test", test_config, statistics)
    from e2e.data.dataset import EmotionDataset
    from e2e.data.text import load_tokenizer

    return EmotionDataset(data_dir, "test", test_config, load_tokenizer(config.model.text_model))


def record_cross_corpus(run_dir: Path, test_config: ExperimentConfig, cross: dict) -> None:
    """Add the label mapping and the other corpus's test metrics to the run's results.json (rewritten
    atomically; the trainer's keys are kept as they are)."""
    path = run_dir / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    results["cross_corpus"] = {
        **mapping_record(),
        "test_corpus": test_config.data.dataset,
        "test_data_dir": test_config.data.data_dir,
        "test": cross,
    }
    write_text_atomic(path, json.dumps(json_safe(results), indent=2) + "\n")


def _cross_row(job: Job, results: dict, test_config: ExperimentConfig, cross: dict) -> dict:
    return {
        "model": job.config.model.name,
        "modalities": job.config.model.modalities,
        "seed": job.config.train.seed,
        "run": job.name,
        "train_corpus": job.config.data.dataset,
        "test_corpus": test_config.data.dataset,
        "within": results["test"],
        "cross": cross,
    }
