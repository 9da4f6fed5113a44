"""Markdown tables of results.json files: one row per run, the dataset's paper metrics per class.

:func:`load_results` reads the finished runs among the given paths (a shell glob such as ``runs/*``
also matches files like ``jobs.json`` and runs still training): the others are skipped with a note
saying why.
"""
from __future__ import annotations

import json
from pathlib import Path


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
        raise ValueError("no finished run among the given paths: " + "; ".join(notes))
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
        raise ValueError(f"{results_path}: not valid JSON ({error})") from None
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
    header = ["run", "model"] + list(names) + ["avg"]
    extra = "multiclass_acc" in results[0][split]
    if extra:
        header += ["6-way acc", "weighted F1"]
    lines = [f"{dataset} {split} {first.upper()}/{second.upper()} (%)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        metrics = result[split]
        cells = [Path(result["run"]).name, _model_label(result)]
        cells += [_pair(metrics["per_class"][name], first, second) for name in names]
        cells.append(_pair(metrics, first, second))
        if extra:
            cells += [f"{100 * metrics['multiclass_acc']:.1f}", f"{100 * metrics['weighted_f1']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _model_label(result: dict) -> str:
    modalities = result["config"]["model"]["modalities"]
    label = f"{result['model']} ({modalities})"
    if "top_p" in result:
        label += f" p={result['top_p']}"
    return label


def _pair(metrics: dict, first: str, second: str) -> str:
    return f"{100 * metrics[first]:.1f}/{100 * metrics[second]:.1f}"
