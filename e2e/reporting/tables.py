"""Tables of results: markdown per run (:func:`results_table`) and per sweep, FLOPs reports, CSV files,
and what every table and plot shares: the metric labels, mean ± std over runs.

:func:`load_results` reads the finished runs among the given paths (a shell glob such as ``runs/*``
also matches files like ``jobs.json`` and runs still training): the others are skipped with a note
saying why.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from data_reorg.io import atomic_path
from data_reorg.tables import markdown_table
from e2e.config import UsageError

METRIC_LABELS = {
    "acc": "Acc",
    "wacc": "WAcc",
    "f1": "F1",
    "multiclass_acc": "6-way Acc",
    "weighted_f1": "weighted F1",
    "mae": "MAE",
    "corr": "Corr",
    "ccc": "CCC",
    "acc7": "Acc-7",
    "acc5": "Acc-5",
    "acc2_has0": "Acc-2 (has-0)",
    "f1_has0": "F1 (has-0)",
    "acc2_non0": "Acc-2 (non-0)",
    "f1_non0": "F1 (non-0)",
}
EXTRA_METRICS = ("multiclass_acc", "weighted_f1")  # IEMOCAP's 6-way argmax metrics, after the main two
RAW_METRICS = ("mae", "corr", "ccc")  # shown as they are (3 decimals); every other metric is a fraction, in %


def metric_label(metric: str) -> str:
    """How tables and plots name ``metric`` (a key of the results' metrics)."""
    return METRIC_LABELS.get(metric, metric)


def metric_scale(metric: str) -> float:
    """What tables and plots multiply ``metric`` by: 100 for fractions (percent), 1 for MAE, Corr, CCC."""
    return 1.0 if metric in RAW_METRICS else 100.0


def format_value(metric: str, value: float | None) -> str:
    """One value: a fraction in percent with one decimal, MAE/Corr/CCC with three; ``-`` for an undefined
    one (nan in memory, null in results.json)."""
    if value is None or np.isnan(value):
        return "-"
    return f"{value:.3f}" if metric in RAW_METRICS else f"{100 * value:.1f}"


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of a single run is 0. An undefined value
    (None: null in results.json) makes both nan rather than being left out."""
    array = np.asarray([np.nan if value is None else value for value in values], dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def format_mean_std(values: list[float | None], metric: str) -> str:
    """``"mean±std"``: fractions in percent with one decimal, MAE/Corr/CCC with three."""
    mean, std = mean_std(values)
    if np.isnan(mean):
        return "-"
    digits, scale = (3, 1.0) if metric in RAW_METRICS else (1, 100.0)
    return f"{scale * mean:.{digits}f}±{scale * std:.{digits}f}"


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` atomically; the columns are their keys in first-seen order, a missing key is an empty cell."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def load_results(paths: list[Path], split: str = "test") -> tuple[list[dict], list[str]]:
    """(results.json of every finished run with its ``run`` path, one note per skipped path).

    A path that does not exist is an error, and so is a list without a single finished run.
    """
    results, notes = [], []
    for path in map(Path, paths):
        loaded = _load_run(path, split)
        if isinstance(loaded, str):
            notes.append(f"{path}: {loaded}")
        else:
            results.append(loaded)
    if not results:
        raise UsageError("no finished run among the given paths: " + "; ".join(notes))
    return results, notes


def _load_run(path: Path, split: str) -> dict | str:
    """The run's results.json with ``run`` added, or why ``path`` holds no finished run."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    results_path = path / "results.json"
    if not results_path.is_file():
        if (path / "checkpoints" / "last.pt").is_file():
            return "the run has not finished (no results.json yet; checkpoints/last.pt holds its last epoch)"
        if (path / "config.yaml").is_file():
            return "the run has no finished epoch (no results.json, no checkpoint)"
        return "not a run directory (no results.json)"
    try:
        result = json.loads(results_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UsageError(f"{results_path}: not valid JSON ({error})") from None
    if not isinstance(result, dict) or not result.get(split):
        return f"the run has no finished epoch (results.json holds no {split} metrics)"
    return dict(result, run=str(path))


def task_of(result: dict) -> str:
    """A results.json's ``task``; one written before tasks existed is an emotion run."""
    return result.get("task", "emotion")


def corpus_task(dataset: str, task: str) -> str:
    """How a table title names a dataset's task: the dataset alone for emotion (the original tables)."""
    return dataset if task == "emotion" else f"{dataset} {task}"


def results_table(results: list[dict], split: str = "test") -> str:
    """One table per dataset, task (and class list), one row per run: emotion per-class and average
    main metrics (IEMOCAP Acc/F1, MOSEI WAcc/F1) as ``a/b`` in percent; vad per dimension and mean
    MAE/CCC; sentiment one column per main metric."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault((result["dataset"], task_of(result), tuple(result["class_names"])), []).append(result)
    return "\n\n".join(
        (_sentiment_table if task == "sentiment" else _dataset_table)(dataset, runs, split)
        for (dataset, task, _), runs in groups.items()
    )


def _sentiment_table(dataset: str, results: list[dict], split: str) -> str:
    metrics = results[0]["main_metrics"]
    header = ["run", "model", *map(metric_label, metrics)]
    rows = [
        [Path(result["run"]).name, _model_label(result), *(format_value(m, result[split][m]) for m in metrics)]
        for result in results
    ]
    return f"{dataset} sentiment {split} (Acc/F1 in %)\n\n{markdown_table(header, rows)}"


def _dataset_table(dataset: str, results: list[dict], split: str) -> str:
    first, second = results[0]["main_metrics"]
    names = results[0]["class_names"]
    extras = [metric for metric in EXTRA_METRICS if metric in results[0][split]]
    header = ["run", "model", *names, "avg", *map(metric_label, extras)]
    rows = []
    for result in results:
        metrics = result[split]
        rows.append(
            [
                Path(result["run"]).name,
                _model_label(result),
                *(_pair(metrics["per_class"][name], first, second) for name in names),
                _pair(metrics, first, second),
                *(f"{100 * metrics[metric]:.1f}" for metric in extras),
            ]
        )
    percent = "" if first in RAW_METRICS else " (%)"
    title = f"{corpus_task(dataset, task_of(results[0]))} {split} {metric_label(first)}/{metric_label(second)}{percent}"
    return f"{title}\n\n{markdown_table(header, rows)}"


def _model_label(result: dict) -> str:
    modalities = result["config"]["model"]["modalities"]
    label = f"{result['model']} ({modalities})"
    if "top_p" in result:
        label += f" p={result['top_p']}"
    return label


def _pair(metrics: dict, first: str, second: str) -> str:
    return f"{format_value(first, metrics[first])}/{format_value(second, metrics[second])}"


def modalities_table(rows: list[dict], metrics: tuple[str, str]) -> str:
    """Markdown: per model, seven rows (T … TAV) with the first two main metrics (e.g. Acc and F1) as
    mean±std over seeds."""
    header = ["model", "modalities", "variant", "seeds", *(_column(metric) for metric in metrics)]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["modalities"], row["variant"]), []).append(row)
    return markdown_table(
        header,
        [
            [
                model,
                subset,
                variant,
                len(group),
                *(format_mean_std([row[metric] for row in group], metric) for metric in metrics),
            ]
            for (model, subset, variant), group in groups.items()
        ],
    )


def _column(metric: str) -> str:
    return metric_label(metric) + ("" if metric in RAW_METRICS else " (%)")


def format_flops_table(report: dict) -> str:
    """Markdown: a summary line, then one row per layer (a :func:`e2e.analysis.flops.measure_flops` report)."""
    top_p = "" if report["top_p"] is None else f", p = {report['top_p']} ({report['attention_mode']} attention)"
    total, dense = report["per_utterance_gflops"], report["fe2e_per_utterance_gflops"]
    summary = (
        f"**{report['model']}**{top_p}, cnn_width {report['cnn_width']}, {report['utterances']} utterances: "
        f"{total['total']:.3f} GFLOPs/utterance vs FE2E {dense['total']:.3f} "
        f"(ratio {report['ratio']:.3f}; attention +{report['attention_gflops']:.3f} GFLOPs, "
        f"ratio with attention {report['ratio_with_attention']:.3f})"
    )
    if report.get("kept_fraction"):
        kept = "; ".join(
            f"{modality} " + " / ".join(f"{value:.3f}" for value in fractions)
            for modality, fractions in report["kept_fraction"].items()
        )
        summary += f"\n\nKept share of each sparse block's candidate sites (blocks 1 / 2 / 3): {kept}"
    header = ["modality", "layer", "kind", "GFLOPs/utterance", "active fraction"]
    rows = [
        [
            row["modality"],
            row["layer"],
            row["kind"],
            f"{row['gflops_per_utterance']:.4f}",
            f"{row['active_fraction']:.3f}",
        ]
        for row in report["layers"]
    ]
    return f"{summary}\n\n{markdown_table(header, rows, right_aligned=(3, 4))}"
