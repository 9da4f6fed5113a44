"""Mean ± std over finished runs (usually seeds), in the layout of the paper's Tables 3 and 4.

Runs are grouped by dataset, model, modalities and (MESM only) top_p; every group becomes one row
with the dataset's two headline metrics (IEMOCAP Acc/F1, MOSEI WAcc/F1) per class and averaged, in
percent. ``report.csv`` holds the same numbers in long form (one row per group, class and metric).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from data_reorg.io import atomic_path, write_text_atomic

AVERAGE = "avg"
CSV_COLUMNS = ("dataset", "model", "modalities", "top_p", "runs", "class", "metric", "mean", "std")
_EXTRA_METRICS = ("multiclass_acc", "weighted_f1")  # IEMOCAP's 6-way argmax metrics
_LABELS = {"acc": "Acc", "wacc": "WAcc", "f1": "F1", "multiclass_acc": "6-way Acc", "weighted_f1": "weighted F1"}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std of a single run is 0."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def format_mean_std(values: list[float]) -> str:
    """Fractions as ``"mean±std"`` in percent, one decimal."""
    mean, std = mean_std(values)
    return f"{100 * mean:.1f}±{100 * std:.1f}"


def group_key(result: dict) -> tuple:
    """(dataset, model, modalities, top_p); top_p is None for models without sparse attention."""
    return (result["dataset"], result["model"], result["config"]["model"]["modalities"], result.get("top_p"))


def write_report(results: list[dict], out: Path | None = None) -> str:
    """Aggregate loaded results' test metrics (each a results.json dict with a ``run`` name, e.g. from
    :func:`e2e.tables.load_results`); writes ``report.md`` and ``report.csv`` into ``out`` if given.

    Raises ValueError for a run that never finished an epoch (no test metrics).
    """
    for result in results:
        if not result.get("test"):
            raise ValueError(f"{result['run']}: results.json holds no test metrics (no finished epoch)")
    groups = _group(results)
    markdown = "\n\n".join(_dataset_table(dataset, rows) for dataset, rows in _by_dataset(groups).items())
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "report.md", markdown + "\n")
        _write_csv(out / "report.csv", groups)
    return markdown


def _group(results: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(group_key(result), []).append(result)
    return groups


def _by_dataset(groups: dict[tuple, list[dict]]) -> dict[str, dict[tuple, list[dict]]]:
    datasets: dict[str, dict[tuple, list[dict]]] = {}
    for key, runs in groups.items():
        datasets.setdefault(key[0], {})[key] = runs
    return datasets


def _metric_cells(runs: list[dict]) -> list[tuple[str, str, list[float]]]:
    """(class or "avg", metric, values over runs) in table order: classes, average, extras."""
    names, metrics = runs[0]["class_names"], runs[0]["main_metrics"]
    cells = [(name, metric, [run["test"]["per_class"][name][metric] for run in runs])
             for name in names for metric in metrics]
    cells += [(AVERAGE, metric, [run["test"][metric] for run in runs]) for metric in metrics]
    cells += [(AVERAGE, metric, [run["test"][metric] for run in runs])
              for metric in _EXTRA_METRICS if metric in runs[0]["test"]]
    return cells


def _dataset_table(dataset: str, groups: dict[tuple, list[dict]]) -> str:
    first = next(iter(groups.values()))
    header = ["model", "modalities", "p", "runs"] + [
        f"{name} {_LABELS.get(metric, metric)}" for name, metric, _ in _metric_cells(first)]
    lines = [f"{dataset} test (%, mean±std over runs)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (_, model, modalities, top_p), runs in groups.items():
        cells = [model, modalities, "" if top_p is None else f"{top_p:g}", str(len(runs))]
        cells += [format_mean_std(values) for _, _, values in _metric_cells(runs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, groups: dict[tuple, list[dict]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for (dataset, model, modalities, top_p), runs in groups.items():
            for name, metric, values in _metric_cells(runs):
                mean, std = mean_std(values)
                writer.writerow([dataset, model, modalities, "" if top_p is None else top_p, len(runs),
                                 name, metric, f"{mean:.6f}", f"{std:.6f}"])
