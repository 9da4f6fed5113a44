"""Tables of the evaluation protocols: IEMOCAP leave-one-session-out cross-validation (mean ± std over
folds and seeds per model, and per fold) and cross-corpus evaluation (within- vs cross-corpus scores on
the shared emotions, with the label mapping).

Both take *run rows*: ``{"model", "modalities", "seed", "run", ...}`` plus, for session-CV, ``"fold"`` and
the run's ``"test"`` metrics; for cross-corpus ``"train_corpus"``, ``"test_corpus"``, ``"within"`` (the
training corpus's test split) and ``"cross"`` (the other corpus's test split) metrics. Each writer
returns the markdown and writes ``<name>.md`` and ``<name>.csv`` (one row per run) into ``out``.
"""

from __future__ import annotations

from pathlib import Path

from data_reorg.io import write_text_atomic
from data_reorg.tables import markdown_table
from e2e.data.protocols import SESSION_CV_VALID, SHARED_EMOTIONS, SHARED_MAPPING
from e2e.reporting.tables import EXTRA_METRICS, format_mean_std, metric_label, write_csv

CROSS_METRICS = ("acc", "wacc", "f1")  # per-class one-vs-rest means: defined on both corpora


def session_cv_table(rows: list[dict], metrics: tuple[str, ...], out: Path | None = None) -> str:
    """Per model mean ± std over every (fold, seed) run, then per fold over seeds; ``metrics``: the
    task's main metrics (the IEMOCAP 6-way extras are added when the runs have them)."""
    metrics = (*metrics, *(m for m in EXTRA_METRICS if all(m in row["test"] for row in rows)))
    labels = [metric_label(metric) for metric in metrics]
    overall, per_fold = [], []
    for (model, modalities), runs in _by_model(rows).items():
        overall.append([model, modalities, _joined(r["fold"] for r in runs), _joined(r["seed"] for r in runs)])
        overall[-1] += [len(runs), *(_cell(runs, "test", metric) for metric in metrics)]
        for fold in sorted({run["fold"] for run in runs}):
            in_fold = [run for run in runs if run["fold"] == fold]
            per_fold.append([model, modalities, fold, _joined(r["seed"] for r in in_fold)])
            per_fold[-1] += [_cell(in_fold, "test", metric) for metric in metrics]
    numeric = range(4, 5 + len(metrics))
    markdown = "\n\n".join(
        [
            "## IEMOCAP leave-one-session-out cross-validation (test metrics, mean ± std over folds and seeds)",
            f"Fold k tests on session k (both speakers: speaker-independent); valid = {SESSION_CV_VALID}; "
            "train = the rest of the other sessions.",
            markdown_table(["model", "modalities", "folds", "seeds", "runs", *labels], overall, numeric),
            "### Per fold (mean ± std over seeds)",
            markdown_table(["model", "modalities", "fold", "seeds", *labels], per_fold, range(4, 4 + len(metrics))),
        ]
    )
    _write(out, "session_cv", markdown, [_csv_row(row, {"test": metrics}) for row in rows])
    return markdown


def cross_corpus_table(rows: list[dict], out: Path | None = None) -> str:
    """Per (model, direction) mean ± std over seeds of the within-corpus and cross-corpus scores on the
    shared emotions, per-emotion cross-corpus F1, and the label mapping under the table."""
    header = ["model", "modalities", "train → test", "seeds"]
    header += [f"within {metric_label(m)}" for m in CROSS_METRICS] + [f"cross {metric_label(m)}" for m in CROSS_METRICS]
    header += [f"cross F1 {emotion}" for emotion in SHARED_EMOTIONS]
    table = []
    for key, runs in _by_direction(rows).items():
        model, modalities, train_corpus, test_corpus = key
        cells = [model, modalities, f"{train_corpus} → {test_corpus}", _joined(r["seed"] for r in runs)]
        cells += [_cell(runs, "within", metric) for metric in CROSS_METRICS]
        cells += [_cell(runs, "cross", metric) for metric in CROSS_METRICS]
        cells += [format_mean_std([r["cross"]["per_class"][e]["f1"] for r in runs], "f1") for e in SHARED_EMOTIONS]
        table.append(cells)
    markdown = "\n\n".join(
        [
            "## Cross-corpus evaluation on the shared emotions (test metrics, mean ± std over seeds)",
            "within: the training corpus's test split; cross: the other corpus's test split, at the thresholds "
            "tuned on the training corpus's valid split. Every emotion is scored one-vs-rest.",
            markdown_table(header, table, range(4, len(header))),
            "Label mapping (utterances showing none of the shared emotions are left out):\n\n" + mapping_lines(),
        ]
    )
    metrics = {"within": CROSS_METRICS, "cross": CROSS_METRICS}
    _write(out, "cross_corpus", markdown, [_csv_row(row, metrics) for row in rows])
    return markdown


def mapping_lines() -> str:
    """The shared-emotion mapping as a markdown list, one corpus a line."""
    lines = []
    for corpus, mapping in SHARED_MAPPING.items():
        kept = ", ".join(f"{name} → {shared}" for name, shared in mapping.items() if shared)
        dropped = ", ".join(name for name, shared in mapping.items() if not shared)
        lines.append(f"- {corpus}: {kept}; no counterpart: {dropped}")
    return "\n".join(lines)


def _by_model(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["modalities"]), []).append(row)
    return groups


def _by_direction(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["modalities"], row["train_corpus"], row["test_corpus"]), []).append(row)
    return groups


def _cell(runs: list[dict], split: str, metric: str) -> str:
    return format_mean_std([run[split].get(metric) for run in runs], metric)


def _joined(values) -> str:
    return ",".join(str(value) for value in dict.fromkeys(values))


def _csv_row(row: dict, metrics: dict[str, tuple[str, ...]]) -> dict:
    """One run: its identifying fields, then ``<split>_<metric>`` for every split's metrics."""
    flat = {key: value for key, value in row.items() if not isinstance(value, dict)}
    for split, names in metrics.items():
        flat.update({f"{split}_{name}": row[split].get(name) for name in names})
        for emotion, values in row[split].get("per_class", {}).items():
            flat[f"{split}_f1_{emotion}"] = values.get("f1")
    return flat


def _write(out: Path | None, name: str, markdown: str, csv_rows: list[dict]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{name}.md", markdown + "\n")
    write_csv(out / f"{name}.csv", csv_rows)
