"""Markdown tables of results.json files: one row per run, the dataset's paper metrics per class."""
from __future__ import annotations

import json
from pathlib import Path


def load_results(run_dirs: list[Path]) -> list[dict]:
    results = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (has the run finished?)")
        results.append(dict(json.loads(path.read_text(encoding="utf-8")), run=str(run_dir)))
    return results


def results_table(results: list[dict], split: str = "test") -> str:
    """Per-class and average main metrics (IEMOCAP Acc/F1, MOSEI WAcc/F1) as ``a/b`` in percent."""
    first, second = results[0]["main_metrics"]
    names = results[0]["class_names"]
    header = ["run", "model"] + list(names) + ["avg"]
    extra = "multiclass_acc" in (results[0][split] or {})
    if extra:
        header += ["6-way acc", "weighted F1"]
    lines = [f"{split} {first.upper()}/{second.upper()} (%)", "",
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
