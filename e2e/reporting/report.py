"""Mean ± std over finished runs (usually seeds), in the layout of the paper's Tables 3 and 4.

Runs are grouped by dataset, task, model, modalities and (MESM only) top_p; every group becomes one
row with the task's headline metrics: emotion IEMOCAP Acc/F1, MOSEI WAcc/F1 per class and averaged,
in percent; vad MAE/CCC per dimension and averaged; sentiment MOSEI's five (Acc/F1 in percent, MAE and
Corr as they are). ``report.csv`` holds the same numbers in long form (one row per group, class and metric);
:func:`format_summary` writes a benchmark's verdicts against the majority baseline.
"""

from __future__ import annotations

from pathlib import Path

from data_reorg.io import write_text_atomic
from data_reorg.tables import markdown_table
from e2e.config import UsageError
from e2e.reporting.tables import (
    EXTRA_METRICS,
    RAW_METRICS,
    corpus_task,
    format_mean_std,
    format_value,
    mean_std,
    metric_label,
    task_of,
    write_csv,
)

AVERAGE = "avg"
# the config keys naming a modality's encoder: end-to-end models', then feature models'
ENCODER_KEYS = {"a": ("audio_encoder", "feature_audio_encoder"), "v": ("visual_encoder", "feature_visual_encoder")}


def group_key(result: dict) -> tuple:
    """(dataset, task, model, modalities, top_p); top_p is None for models without sparse attention. The
    model is named with its encoders when they are not the paper's (:func:`model_label`), so runs with
    other backbones never share a row."""
    model = result["config"]["model"]
    return (result["dataset"], task_of(result), model_label(result), model["modalities"], result.get("top_p"))


def model_label(result: dict) -> str:
    """``mesm``, or e.g. ``mesm (a=wavlm-base-plus, v=clip-vit-base-patch16, pruned after 4)``: the
    foundation encoders of end-to-end models, the feature encoders of feature models (folder names for
    paths), and where MESM prunes their tokens."""
    model = result["config"]["model"]
    parts = []
    for modality, keys in ENCODER_KEYS.items():
        chosen = [model[key] for key in keys if model.get(key) not in (None, "", "vgg")]
        if chosen:
            parts.append(f"{modality}={Path(str(chosen[0])).name}")
    if parts and model.get("prune_layers") not in (None, ""):
        parts.append(f"pruned after {model['prune_layers']}")
    return f"{result['model']} ({', '.join(parts)})" if parts else result["model"]


def write_report(results: list[dict], out: Path | None = None) -> str:
    """Aggregate loaded results' test metrics (each a results.json dict with a ``run`` name, e.g. from
    :func:`e2e.reporting.tables.load_results`); writes ``report.md`` and ``report.csv`` into ``out`` if given.

    Raises UsageError for a run that never finished an epoch (no test metrics).
    """
    for result in results:
        if not result.get("test"):
            raise UsageError(f"{result['run']}: results.json holds no test metrics (no finished epoch)")
    groups = _group(results)
    markdown = "\n\n".join(_dataset_table(*corpus, rows) for corpus, rows in _by_dataset(groups).items())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "report.md", markdown + "\n")
        write_csv(out / "report.csv", _csv_rows(groups))
    return markdown


def _group(results: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(group_key(result), []).append(result)
    return groups


def _by_dataset(groups: dict[tuple, list[dict]]) -> dict[tuple[str, str], dict[tuple, list[dict]]]:
    """The groups per (dataset, task): one table each."""
    datasets: dict[tuple[str, str], dict[tuple, list[dict]]] = {}
    for key, runs in groups.items():
        datasets.setdefault(key[:2], {})[key] = runs
    return datasets


def _metric_cells(runs: list[dict]) -> list[tuple[str, str, list[float]]]:
    """(class or "avg", metric, values over runs) in table order: classes (or VAD dimensions; sentiment
    has none), average, extras."""
    names, metrics = runs[0]["class_names"], runs[0]["main_metrics"]
    per_class = "per_class" in runs[0]["test"]
    cells = [
        (name, metric, [run["test"]["per_class"][name][metric] for run in runs])
        for name in (names if per_class else ())
        for metric in metrics
    ]
    cells += [(AVERAGE, metric, [run["test"][metric] for run in runs]) for metric in metrics]
    cells += [
        (AVERAGE, metric, [run["test"][metric] for run in runs])
        for metric in EXTRA_METRICS
        if metric in runs[0]["test"]
    ]
    return cells


def _dataset_table(dataset: str, task: str, groups: dict[tuple, list[dict]]) -> str:
    first = next(iter(groups.values()))
    cells = _metric_cells(first)
    per_class = any(name != AVERAGE for name, _, _ in cells)  # sentiment has one target: no "avg" prefix
    header = ["model", "modalities", "p", "runs"] + [
        f"{name} {metric_label(metric)}" if per_class else metric_label(metric) for name, metric, _ in cells
    ]
    rows = [
        [
            model,
            modalities,
            "" if top_p is None else f"{top_p:g}",
            len(runs),
            *(format_mean_std(values, metric) for _, metric, values in _metric_cells(runs)),
        ]
        for (_, _, model, modalities, top_p), runs in groups.items()
    ]
    metrics = next(iter(groups.values()))[0]["main_metrics"]
    raw = [metric_label(m) for m in metrics if m in RAW_METRICS]
    units = "%" if not raw else f"% except {', '.join(raw)}" if len(raw) < len(metrics) else "as they are"
    return f"{corpus_task(dataset, task)} test ({units}, mean±std over runs)\n\n{markdown_table(header, rows)}"


def _csv_rows(groups: dict[tuple, list[dict]]) -> list[dict]:
    """One row per group, class and metric (``report.csv``): means and stds as fractions."""
    rows = []
    for (dataset, task, model, modalities, top_p), runs in groups.items():
        for name, metric, values in _metric_cells(runs):
            mean, std = mean_std(values)
            rows.append(
                {
                    "dataset": dataset,
                    "task": task,
                    "model": model,
                    "modalities": modalities,
                    "top_p": "" if top_p is None else top_p,
                    "runs": len(runs),
                    "class": name,
                    "metric": metric,
                    "mean": f"{mean:.6f}",
                    "std": f"{std:.6f}",
                }
            )
    return rows


def format_summary(summary: dict) -> str:
    """One line per model of a benchmark's ``summary.json``: its mean test scores against the majority
    baseline (the train-mean constant for a regression task)."""
    majority = summary["majority"]
    baseline = "the train-mean baseline" if task_of(summary) != "emotion" else "the majority baseline"
    return "\n".join(
        f"{name}: test {_scores(entry, majority)} -> {'beats' if entry['beats_majority'] else 'does NOT beat'}"
        f" {baseline} ({_scores(majority, majority)})"
        for name, entry in summary["models"].items()
    )


def _scores(entry: dict, keys: dict) -> str:
    return ", ".join(f"{metric_label(key)} {format_value(key, entry[key])}" for key in keys)
