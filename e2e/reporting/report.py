"""Mean ± std over finished runs (usually seeds), in the layout of the paper's Tables 3 and 4.

Runs are grouped by dataset, model, modalities and (MESM only) top_p; every group becomes one row
with the dataset's two headline metrics (IEMOCAP Acc/F1, MOSEI WAcc/F1) per class and averaged, in
percent. ``report.csv`` holds the same numbers in long form (one row per group, class and metric);
:func:`format_summary` writes a benchmark's verdicts against the majority baseline.
"""

from __future__ import annotations

from pathlib import Path

from data_reorg.io import write_text_atomic
from data_reorg.tables import markdown_table
from e2e.config import UsageError
from e2e.reporting.tables import EXTRA_METRICS, format_mean_std, mean_std, metric_label, write_csv

AVERAGE = "avg"


def group_key(result: dict) -> tuple:
    """(dataset, model, modalities, top_p); top_p is None for models without sparse attention."""
    return (result["dataset"], result["model"], result["config"]["model"]["modalities"], result.get("top_p"))


def write_report(results: list[dict], out: Path | None = None) -> str:
    """Aggregate loaded results' test metrics (each a results.json dict with a ``run`` name, e.g. from
    :func:`e2e.reporting.tables.load_results`); writes ``report.md`` and ``report.csv`` into ``out`` if given.

    Raises UsageError for a run that never finished an epoch (no test metrics).
    """
    for result in results:
        if not result.get("test"):
            raise UsageError(f"{result['run']}: results.json holds no test metrics (no finished epoch)")
    groups = _group(results)
    markdown = "\n\n".join(_dataset_table(dataset, rows) for dataset, rows in _by_dataset(groups).items())
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


def _by_dataset(groups: dict[tuple, list[dict]]) -> dict[str, dict[tuple, list[dict]]]:
    datasets: dict[str, dict[tuple, list[dict]]] = {}
    for key, runs in groups.items():
        datasets.setdefault(key[0], {})[key] = runs
    return datasets


def _metric_cells(runs: list[dict]) -> list[tuple[str, str, list[float]]]:
    """(class or "avg", metric, values over runs) in table order: classes, average, extras."""
    names, metrics = runs[0]["class_names"], runs[0]["main_metrics"]
    cells = [
        (name, metric, [run["test"]["per_class"][name][metric] for run in runs]) for name in names for metric in metrics
    ]
    cells += [(AVERAGE, metric, [run["test"][metric] for run in runs]) for metric in metrics]
    cells += [
        (AVERAGE, metric, [run["test"][metric] for run in runs])
        for metric in EXTRA_METRICS
        if metric in runs[0]["test"]
    ]
    return cells


def _dataset_table(dataset: str, groups: dict[tuple, list[dict]]) -> str:
    first = next(iter(groups.values()))
    header = ["model", "modalities", "p", "runs"] + [
        f"{name} {metric_label(metric)}" for name, metric, _ in _metric_cells(first)
    ]
    rows = [
        [
            model,
            modalities,
            "" if top_p is None else f"{top_p:g}",
            len(runs),
            *(format_mean_std(values) for _, _, values in _metric_cells(runs)),
        ]
        for (_, model, modalities, top_p), runs in groups.items()
    ]
    return f"{dataset} test (%, mean±std over runs)\n\n{markdown_table(header, rows)}"


def _csv_rows(groups: dict[tuple, list[dict]]) -> list[dict]:
    """One row per group, class and metric (``report.csv``): means and stds as fractions."""
    rows = []
    for (dataset, model, modalities, top_p), runs in groups.items():
        for name, metric, values in _metric_cells(runs):
            mean, std = mean_std(values)
            rows.append(
                {
                    "dataset": dataset,
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
    """One line per model of a benchmark's ``summary.json``: its mean test score against the majority baseline."""
    metric, majority = summary["metric"], summary["majority"]
    baseline = f"the majority baseline ({100 * majority[metric]:.1f}, {metric_label('f1')} {100 * majority['f1']:.1f})"
    return "\n".join(
        f"{name}: test {metric_label(metric)} {100 * entry[metric]:.1f}, {metric_label('f1')} {100 * entry['f1']:.1f}"
        f" -> {'beats' if entry['beats_majority'] else 'does NOT beat'} {baseline}"
        for name, entry in summary["models"].items()
    )
