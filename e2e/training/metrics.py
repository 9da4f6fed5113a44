"""Per-class binary emotion metrics with thresholds tuned on valid (the MESM protocol).

Every class is a binary task: a probability ``p`` counts as positive iff ``p >= threshold``. Thresholds
are chosen per class on the *valid* split and reused unchanged on test; nothing here looks at test
labels to pick a threshold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from e2e.config import UsageError

THRESHOLD_GRID = np.round(np.arange(1, 20) * 0.05, 2)  # 0.05, 0.10, ..., 0.95

_MAIN_METRICS = {"iemocap": ("acc", "f1"), "mosei": ("wacc", "f1")}
_SINGLE_LABEL = {"iemocap": True, "mosei": False}  # IEMOCAP: one-hot; MOSEI: multi-hot
_BINARY_METRICS = ("acc", "precision", "recall", "f1", "auc", "wacc")


def main_metrics(dataset: str) -> tuple[str, str]:
    """The paper's two headline metrics: IEMOCAP Acc + F1, MOSEI WAcc + F1 (all per-class averages)."""
    if dataset not in _MAIN_METRICS:
        raise UsageError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(_MAIN_METRICS))}")
    return _MAIN_METRICS[dataset]


def is_single_label(dataset: str) -> bool:
    """Whether every utterance has exactly one class (adds argmax metrics to :func:`compute_metrics`)."""
    main_metrics(dataset)  # same error for an unknown dataset
    return _SINGLE_LABEL[dataset]


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """Per class, the grid threshold maximising that class's binary F1; ties go to the smallest.

    Call this on valid probabilities only. Smallest-on-ties makes the choice deterministic; when F1 is 0
    everywhere (no positives) it yields the grid's first value.
    """
    probs, labels = _as_arrays(probs, labels)
    grid = np.asarray(grid, dtype=float)
    chosen = np.empty(probs.shape[1])
    for c in range(probs.shape[1]):
        scores = [f1_score(labels[:, c], probs[:, c] >= t, zero_division=0.0) for t in grid]
        chosen[c] = grid[int(np.argmax(scores))]  # argmax returns the first (smallest) maximum
    return chosen


def compute_metrics(
    probs: np.ndarray, labels: np.ndarray, thresholds: Sequence[float], class_names: Sequence[str], single_label: bool
) -> dict:
    """Per-class binary metrics at the given thresholds, their unweighted means, and extras.

    Returns plain Python floats: ``{"n", "acc", "precision", "recall", "f1", "auc", "wacc",
    "per_class": {name: {"threshold", "acc", ..., "wacc"}}}``; with ``single_label`` (one-hot
    labels, IEMOCAP) also ``"multiclass_acc"`` and ``"weighted_f1"`` of the argmax prediction.
    ``auc`` is nan for a class whose labels are all equal, and its mean skips such classes.
    """
    probs, labels = _as_arrays(probs, labels)
    thresholds = np.asarray(thresholds, dtype=float)
    if len(class_names) != probs.shape[1] or thresholds.shape != (probs.shape[1],):
        raise UsageError(f"{probs.shape[1]} classes, but {len(class_names)} names and {thresholds.shape} thresholds")
    per_class = {
        name: {"threshold": float(thresholds[c]), **_binary_metrics(probs[:, c], labels[:, c], thresholds[c])}
        for c, name in enumerate(class_names)
    }
    result: dict = {"n": int(len(labels))}
    for key in _BINARY_METRICS:
        result[key] = _mean([per_class[name][key] for name in class_names])
    if single_label:
        truth, predicted = labels.argmax(1), probs.argmax(1)
        result["multiclass_acc"] = float(accuracy_score(truth, predicted))
        result["weighted_f1"] = float(f1_score(truth, predicted, average="weighted", zero_division=0.0))
    result["per_class"] = per_class
    return result


def _binary_metrics(prob: np.ndarray, label: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = prob >= threshold
    with warnings.catch_warnings():
        # WAcc with one label value present: sklearn averages the rates that exist (TNR or TPR) and warns.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        wacc = balanced_accuracy_score(label, predicted)
    return {
        "acc": float(accuracy_score(label, predicted)),
        "precision": float(precision_score(label, predicted, zero_division=0.0)),
        "recall": float(recall_score(label, predicted, zero_division=0.0)),
        "f1": float(f1_score(label, predicted, zero_division=0.0)),
        "auc": float(roc_auc_score(label, prob)) if len(np.unique(label)) == 2 else float("nan"),
        "wacc": float(wacc),
    }


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _as_arrays(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels).astype(int)
    if probs.ndim != 2 or probs.shape != labels.shape:
        raise UsageError(f"probs {probs.shape} and labels {labels.shape} must both be (N, C)")
    return probs, labels
