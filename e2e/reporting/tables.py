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

METRIC_LABELS = {"acc": "Acc", "wacc": "WAcc", "f1": "F1", "multiclass_acc": "6-way Acc", "weighted_f1": "weighted F1"}
EXTRA_METRICS = ("multiclass_acc", "weighted_f1")  # IEMOCAP's 6-way argmax metrics, after the main two


def metric_label(metric: str) -> str:
    """How tables and plots name ``metric`` (a key of the results' metrics)."""
    return METRIC_LABELS.get(metric, metric)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of a single run is 0."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def format_mean_std(values: list[float]) -> str:
    """Fractions as ``"mean±std"`` in percent, one decimal."""
    mean, std = mean_std(values)
    return f"{100 * mean:.1f}±{100 * std:.1f}"


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


def results_table(results: list[dict], split: str = "test") -> str:
    """One table per dataset (and class list): per-class and average main metrics (IEMOCAP Acc/F1,
    MOSEI WAcc/F1) as ``a/b`` in percent, one row per run."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault((result["dataset"], tuple(result["class_names"])), []).append(result)
    return "\n\n".join(_dataset_table(dataset, runs, split) for (dataset, _), runs in groups.items())


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
    title = f"{dataset} {split} {metric_label(first)}/{metric_label(second)} (%)"
    return f"{title}\n\n{markdown_table(header, rows)}"


def _model_label(result: dict) -> str:
    modalities = result["config"]["model"]["modalities"]
    label = f"{result['model']} ({modalities})"
    if "top_p" in result:
        label += f" p={result['top_p']}"
    return label


def _pair(metrics: dict, first: str, second: str) -> str:
    return f"{100 * metrics[first]:.1f}/{100 * metrics[second]:.1f}"


def modalities_table(rows: list[dict], metric: str) -> str:
    """Markdown: per model, seven rows (T … TAV) with main metric and F1 as mean±std over seeds."""
    header = ["model", "modalities", "variant", "seeds", f"{metric_label(metric)} (%)", f"{metric_label('f1')} (%)"]
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
                format_mean_std([row[metric] for row in group]),
                format_mean_std([row["f1"] for row in group]),
            ]
            for (model, subset, variant), group in groups.items()
        ],
    )


def format_flops_table(report: dict) -> str:
    """Markdown: a summary line, then one row per layer (a :func:`e2e.analysis.flops.measure_flops` report)."""
    top_p = "" if report["top_p"] is None else f", p = {report['top_p']}"
    total, dense = report["per_utterance_gflops"], report["fe2e_per_utterance_gflops"]
    summary = (
        f"**{report['model']}**{top_p}, cnn_width {report['cnn_width']}, {report['utterances']} utterances: "
        f"{total['total']:.3f} GFLOPs/utterance vs FE2E {dense['total']:.3f} "
        f"(ratio {report['ratio']:.3f}; attention +{report['attention_gflops']:.3f} GFLOPs, "
        f"ratio with attention {report['ratio_with_attention']:.3f})"
    )
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
