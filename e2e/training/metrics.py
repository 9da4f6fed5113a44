"""Metrics of every ``data.task``: per-class binary emotion metrics with thresholds tuned on valid (the
MESM protocol), and the regression metrics of MOSEI sentiment and IEMOCAP valence/activation/dominance.

**Emotion.** The model's outputs are logits ``z`` (one per class) trained with
``BCEWithLogitsLoss(pos_weight=w)``, ``w_c`` = negatives / positives of class c on train. Every class is
a binary task: ``sigmoid(z)`` counts as positive iff it is ``>= threshold``; thresholds are chosen per
class on the *valid* split and reused unchanged on test (nothing here looks at test labels to pick a
threshold), so they absorb any per-class offset of the logits. The single-label extras (IEMOCAP 6-way
``multiclass_acc`` and ``weighted_f1``) have no threshold: they take the argmax over classes, and the
weighted loss biases it. The expected weighted BCE of a class with true probability ``p`` is minimal at
``z = log w_c + logit(p)``, so rare classes (large ``w_c``) get logits inflated by ``log w_c`` and would win
the argmax too often. The argmax is therefore taken over ``z_c - log w_c`` (= ``logit(p_c)``, the
prior the weights added removed); ``pos_weight=None`` means the outputs were not trained with a weighted
loss (a constant baseline) and takes the plain argmax.

**Sentiment** (MOSEI, one score in [-3, 3]): MMSA's definitions (``metricsTop.py``,
``__eval_mosei_regression``): ``mae`` = mean |pred - truth| on the unclipped predictions; ``corr`` =
Pearson; ``acc7`` = mean(round(pred) == round(truth)) with both clipped to [-3, 3], ``acc5`` the same
on [-2, 2] (numpy rounding: halves to even); ``acc2_has0`` / ``f1_has0`` = accuracy / weighted F1 of
(pred >= 0) vs (truth >= 0) over all utterances; ``acc2_non0`` / ``f1_non0`` = the same over the
utterances with truth != 0, with (pred > 0) vs (truth > 0).

**MulT's IEMOCAP** (``iemocap4``: four one-vs-rest emotions read from MulT's ``iemocap_data.pkl``):
the emotion metrics above plus MulT's own, per emotion accuracy and weighted F1 of the thresholdless
decision (:func:`with_mult_binary_metrics`).

**CH-SIMS sentiment** (scores in [-1, 1], from MMSA's files): MMSA's ``__eval_sims_regression``, see
:func:`sims_sentiment_metrics`.

**VAD** (IEMOCAP, three dimensions on the annotation scale 1-5, not normalised): per dimension
``mae`` and the concordance correlation coefficient ``ccc`` = 2 cov(p, t) / (var p + var t +
(mean p - mean t)^2) (population moments), and their means over the dimensions.

A value that is undefined on the data (Pearson or CCC of a constant, non-0 metrics without non-0
truths, AUC of a one-valued class) is nan, never a stand-in number; results.json writes it as null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from e2e.config import REGRESSION_TASKS, TASK_DATASETS, UsageError

THRESHOLD_GRID = np.round(np.arange(1, 20) * 0.05, 2)  # 0.05, 0.10, ..., 0.95

_MAIN_METRICS = {
    ("emotion", "iemocap"): ("acc", "f1"),  # the paper's headline metrics, per-class averages
    ("emotion", "mosei"): ("wacc", "f1"),
    ("emotion", "iemocap4"): ("mult_acc", "mult_f1"),  # MulT's per-emotion binary Acc / weighted F1
    ("sentiment", "mosei"): ("acc2_non0", "f1_non0", "mae", "corr", "acc7"),
    ("sentiment", "mosi"): ("acc2_non0", "f1_non0", "mae", "corr", "acc7"),
    ("sentiment", "sims"): ("acc2", "f1", "mae", "corr", "acc5"),
    ("vad", "iemocap"): ("mae", "ccc"),
}
# early stopping: (valid metric, higher is better)
_SELECTION = {"emotion": ("f1", True), "sentiment": ("mae", False), "vad": ("ccc", True)}
_SINGLE_LABEL = {"iemocap": True, "mosei": False, "iemocap4": False}  # one-hot; multi-hot; one-vs-rest
_BINARY_METRICS = ("acc", "precision", "recall", "f1", "auc", "wacc")


def main_metrics(dataset: str, task: str) -> tuple[str, ...]:
    """The headline metrics of ``task`` on ``dataset``: emotion IEMOCAP Acc + F1, MOSEI WAcc + F1 (all
    per-class averages); sentiment non-0 Acc-2, F1, MAE, Corr, Acc-7; vad mean MAE and CCC."""
    if (task, dataset) not in _MAIN_METRICS:
        known = ", ".join(f"{t} on {d}" for t, d in _MAIN_METRICS)
        raise UsageError(f"no metrics for data.task={task!r} on data.dataset={dataset!r}; known: {known}")
    return _MAIN_METRICS[task, dataset]


def selection_metric(task: str) -> tuple[str, bool]:
    """(valid metric, higher is better) that early stopping follows: emotion mean F1, sentiment MAE
    (lower is better), vad mean CCC."""
    if task not in _SELECTION:
        raise UsageError(f"unknown data.task {task!r}; known: {', '.join(TASK_DATASETS)}")
    return _SELECTION[task]


def is_single_label(dataset: str) -> bool:
    """Whether every utterance has exactly one emotion class (adds argmax metrics to :func:`compute_metrics`)."""
    if dataset not in _SINGLE_LABEL:
        raise UsageError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(_SINGLE_LABEL))}")
    return _SINGLE_LABEL[dataset]


@dataclass(frozen=True)
class Scoring:
    """How a run's outputs are scored: its task and dataset, output names (classes or regression
    targets) and, for emotion, the loss's ``pos_weight`` (see the module docstring)."""

    task: str
    dataset: str
    class_names: tuple[str, ...]
    pos_weight: tuple[float, ...] | None = None

    def thresholds(self, outputs: np.ndarray, labels: np.ndarray) -> list[float] | None:
        """Valid-tuned per-class thresholds for emotion; None for a regression task (none exist)."""
        if self.task in REGRESSION_TASKS:
            return None
        return [float(t) for t in choose_thresholds(outputs, labels)]

    def metrics(self, outputs: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] | None) -> dict:
        """The task's metrics of ``outputs`` (logits or predictions, (N, C)) against ``labels``."""
        if self.task == "sentiment":
            return (sims_sentiment_metrics if self.dataset == "sims" else sentiment_metrics)(outputs, labels)
        if self.task == "vad":
            return vad_metrics(outputs, labels, self.class_names)
        if thresholds is None:
            raise UsageError("emotion metrics need the valid-tuned thresholds, got none")
        result = compute_metrics(
            outputs, labels, thresholds, self.class_names, is_single_label(self.dataset), pos_weight=self.pos_weight
        )
        if self.dataset == "iemocap4":
            result = with_mult_binary_metrics(result, outputs, labels, self.class_names, self.pos_weight)
        return result


def choose_thresholds(logits: np.ndarray, labels: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """Per class, the grid threshold on ``sigmoid(logits)`` maximising that class's binary F1; ties go to
    the smallest.

    Call this on valid outputs only. Smallest-on-ties makes the choice deterministic; when F1 is 0
    everywhere (no positives) it yields the grid's first value.
    """
    logits, labels = _as_arrays(logits, labels)
    probs = expit(logits)
    grid = np.asarray(grid, dtype=float)
    counts = _confusion_counts(probs[None] >= grid[:, None, None], labels[None] == 1)  # each (grid, C)
    return grid[np.argmax(_f1(counts), axis=0)]  # argmax returns the first (smallest) maximum


def _confusion_counts(predicted: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """tp / fp / fn / tn of boolean predictions against boolean truth, counted over axis -2 (the samples):
    the binary confusion matrix of sklearn, for many thresholds and classes in one pass."""
    return {
        "tp": (predicted & positive).sum(-2),
        "fp": (predicted & ~positive).sum(-2),
        "fn": (~predicted & positive).sum(-2),
        "tn": (~predicted & ~positive).sum(-2),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0 (sklearn's ``zero_division=0.0``)."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(
        numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape), where=denominator > 0
    )


def _f1(counts: dict[str, np.ndarray]) -> np.ndarray:
    """Binary F1 as sklearn computes it, ``2 tp / (2 tp + fn + fp)``, 0 where undefined."""
    return _ratio(2 * counts["tp"], 2 * counts["tp"] + counts["fn"] + counts["fp"])


def compute_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    thresholds: Sequence[float],
    class_names: Sequence[str],
    single_label: bool,
    *,
    pos_weight: Sequence[float] | None,
) -> dict:
    """Per-class binary metrics of ``sigmoid(logits)`` at the given thresholds, their unweighted means,
    and extras.

    Returns plain Python floats: ``{"n", "acc", "precision", "recall", "f1", "auc", "wacc",
    "per_class": {name: {"threshold", "acc", ..., "wacc"}}}``; with ``single_label`` (one-hot
    labels, IEMOCAP) also ``"multiclass_acc"`` and ``"weighted_f1"`` of the argmax of
    ``logits - log(pos_weight)`` (the module docstring says why; None: no shift).
    ``auc`` is nan for a class whose labels are all equal, and its mean skips such classes.
    """
    logits, labels = _as_arrays(logits, labels)
    thresholds = np.asarray(thresholds, dtype=float)
    if len(class_names) != logits.shape[1] or thresholds.shape != (logits.shape[1],):
        raise UsageError(f"{logits.shape[1]} classes, but {len(class_names)} names and {thresholds.shape} thresholds")
    probs = expit(logits)
    per_class = {
        name: {"threshold": float(thresholds[c]), **_binary_metrics(probs[:, c], labels[:, c], thresholds[c])}
        for c, name in enumerate(class_names)
    }
    result: dict = {"n": int(len(labels))}
    for key in _BINARY_METRICS:
        result[key] = _mean([per_class[name][key] for name in class_names])
    if single_label:
        truth, predicted = labels.argmax(1), unbiased_argmax(logits, pos_weight)
        result["multiclass_acc"] = float(accuracy_score(truth, predicted))
        result["weighted_f1"] = float(f1_score(truth, predicted, average="weighted", zero_division=0.0))
    result["per_class"] = per_class
    return result


def with_mult_binary_metrics(
    result: dict, logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], pos_weight: Sequence[float] | None
) -> dict:
    """``result`` (of :func:`compute_metrics`) plus MulT's IEMOCAP metrics (``eval_iemocap`` in its
    ``src/eval_metrics.py``): per emotion, the accuracy and weighted F1 of the argmax of a two-way output,
    and their means (``mult_acc``, ``mult_f1``), with no threshold.

    Our one logit per emotion plays the two-way output's difference, so its argmax is ``logit > 0``
    (a tie goes to the negative, as numpy's argmax does), taken after removing the weighted loss's prior
    (``logit - log pos_weight``, see the module docstring; MulT trains an unweighted cross-entropy)."""
    logits, labels = _as_arrays(logits, labels)
    shift = np.zeros(logits.shape[1]) if pos_weight is None else np.log(np.asarray(pos_weight, dtype=float))
    predicted = logits - shift > 0
    per_class = {}
    for c, name in enumerate(class_names):
        per_class[name] = {
            "mult_acc": float(accuracy_score(labels[:, c], predicted[:, c])),
            "mult_f1": _weighted_f1(labels[:, c], predicted[:, c]),
        }
        result["per_class"][name].update(per_class[name])
    for key in ("mult_acc", "mult_f1"):
        result[key] = _mean([per_class[name][key] for name in class_names])
    return result


def unbiased_argmax(logits: np.ndarray, pos_weight: Sequence[float] | None) -> np.ndarray:
    """Per row, the class maximising ``logit_c - log(pos_weight_c)``: the weighted loss's prior removed."""
    if pos_weight is None:
        return logits.argmax(1)
    weights = np.asarray(pos_weight, dtype=float)
    if weights.shape != (logits.shape[1],) or not np.all(weights > 0):
        raise UsageError(f"pos_weight must hold {logits.shape[1]} positive values, got {list(weights)}")
    return (logits - np.log(weights)).argmax(1)


def sentiment_metrics(predictions: np.ndarray, truth: np.ndarray) -> dict:
    """MOSEI sentiment metrics of (N, 1) predictions against (N, 1) scores (definitions: module docstring)."""
    predictions, truth = _regression_arrays(predictions, truth, 1)
    predictions, truth = predictions[:, 0], truth[:, 0]
    non0 = truth != 0
    return {
        "n": int(len(truth)),
        "mae": float(np.mean(np.abs(predictions - truth))),
        "corr": pearson(predictions, truth),
        "acc7": _rounded_accuracy(predictions, truth, 3.0),
        "acc5": _rounded_accuracy(predictions, truth, 2.0),
        "acc2_has0": float(accuracy_score(truth >= 0, predictions >= 0)),
        "f1_has0": _weighted_f1(truth >= 0, predictions >= 0),
        "n_non0": int(non0.sum()),
        "acc2_non0": float(accuracy_score(truth[non0] > 0, predictions[non0] > 0)) if non0.any() else float("nan"),
        "f1_non0": _weighted_f1(truth[non0] > 0, predictions[non0] > 0) if non0.any() else float("nan"),
    }


SIMS_EDGES = {  # MMSA's __eval_sims_regression: class i holds the values in (edges[i], edges[i + 1]]
    "acc2": (-1.01, 0.0, 1.01),
    "acc3": (-1.01, -0.1, 0.1, 1.01),
    "acc5": (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),
}


def sims_sentiment_metrics(predictions: np.ndarray, truth: np.ndarray) -> dict:
    """CH-SIMS sentiment metrics of (N, 1) predictions against (N, 1) scores in [-1, 1]: MMSA's
    ``__eval_sims_regression``, which clips both sides to [-1, 1] first (so ``mae`` and ``corr`` are of the
    clipped values), ``acc2`` / ``acc3`` / ``acc5`` the accuracy of the classes of :data:`SIMS_EDGES`,
    ``f1`` the weighted F1 of the two classes."""
    predictions, truth = _regression_arrays(predictions, truth, 1)
    predictions, truth = np.clip(predictions[:, 0], -1.0, 1.0), np.clip(truth[:, 0], -1.0, 1.0)
    classes = {
        name: (np.searchsorted(edges, predictions, side="left"), np.searchsorted(edges, truth, side="left"))
        for name, edges in SIMS_EDGES.items()
    }
    result = {
        "n": int(len(truth)),
        "mae": float(np.mean(np.abs(predictions - truth))),
        "corr": pearson(predictions, truth),
    }
    result.update({name: float(np.mean(p == t)) for name, (p, t) in classes.items()})
    result["f1"] = _weighted_f1(classes["acc2"][1], classes["acc2"][0])
    return result


def vad_metrics(predictions: np.ndarray, truth: np.ndarray, dimensions: Sequence[str]) -> dict:
    """Per dimension MAE and CCC of (N, D) predictions against (N, D) targets, and their means:
    ``{"n", "mae", "ccc", "per_class": {dimension: {"mae", "ccc"}}}``."""
    predictions, truth = _regression_arrays(predictions, truth, len(dimensions))
    per_dimension = {
        name: {
            "mae": float(np.mean(np.abs(predictions[:, d] - truth[:, d]))),
            "ccc": ccc(predictions[:, d], truth[:, d]),
        }
        for d, name in enumerate(dimensions)
    }
    return {
        "n": int(len(truth)),
        "mae": _mean([per_dimension[name]["mae"] for name in dimensions]),
        "ccc": _mean([per_dimension[name]["ccc"] for name in dimensions]),
        "per_class": per_dimension,
    }


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; nan when either side is constant."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def ccc(predictions: np.ndarray, truth: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (population moments); nan when both sides are the same constant."""
    mean_p, mean_t = predictions.mean(), truth.mean()
    covariance = np.mean((predictions - mean_p) * (truth - mean_t))
    denominator = predictions.var() + truth.var() + (mean_p - mean_t) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else float("nan")


def _rounded_accuracy(predictions: np.ndarray, truth: np.ndarray, bound: float) -> float:
    clipped_p, clipped_t = np.clip(predictions, -bound, bound), np.clip(truth, -bound, bound)
    return float(np.mean(np.round(clipped_p) == np.round(clipped_t)))


def _weighted_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(f1_score(truth, predicted, average="weighted", zero_division=0.0))


def _binary_metrics(prob: np.ndarray, label: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (0 where undefined), AUC (nan with one label value) and WAcc of one
    class, as sklearn's scores give them, from one confusion count (sklearn's per-call input checks cost
    more than the training of a small feature model's epoch)."""
    counts = _confusion_counts((prob >= threshold)[:, None], (label == 1)[:, None])
    tp, fp, fn, tn = (int(counts[key][0]) for key in ("tp", "fp", "fn", "tn"))
    rates = []  # WAcc: the mean of the rates that exist (no TPR without positives, no TNR without negatives)
    if tp + fn:
        rates.append(tp / (tp + fn))
    if tn + fp:
        rates.append(tn / (tn + fp))
    return {
        "acc": float((tp + tn) / len(label)),
        "precision": float(_ratio(tp, tp + fp)),
        "recall": float(_ratio(tp, tp + fn)),
        "f1": float(_f1({"tp": tp, "fp": fp, "fn": fn})),
        "auc": float(roc_auc_score(label, prob)) if len(np.unique(label)) == 2 else float("nan"),
        "wacc": float(np.mean(rates)),
    }


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _as_arrays(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=float)
    labels = np.asarray(labels).astype(int)
    if logits.ndim != 2 or logits.shape != labels.shape:
        raise UsageError(f"logits {logits.shape} and labels {labels.shape} must both be (N, C)")
    return logits, labels


def _regression_arrays(predictions: np.ndarray, truth: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    predictions, truth = np.asarray(predictions, dtype=float), np.asarray(truth, dtype=float)
    if predictions.shape != truth.shape or predictions.ndim != 2 or predictions.shape[1] != width:
        raise UsageError(f"predictions {predictions.shape} and targets {truth.shape} must both be (N, {width})")
    return predictions, truth
