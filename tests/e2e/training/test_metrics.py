import json
import math

import numpy as np
import pytest

import e2e  # noqa: F401  (compat shim first)
from e2e.training.metrics import THRESHOLD_GRID, choose_thresholds, compute_metrics, is_single_label, main_metrics

BINARY_KEYS = {"acc", "precision", "recall", "f1", "auc", "wacc"}


def test_grid_is_005_to_095():
    assert len(THRESHOLD_GRID) == 19
    assert THRESHOLD_GRID[0] == pytest.approx(0.05) and THRESHOLD_GRID[-1] == pytest.approx(0.95)


def test_perfect_predictions_score_one():
    labels = np.eye(3)[[0, 1, 2, 2, 1]]
    probs = np.where(labels == 1, 0.9, 0.1)
    result = compute_metrics(probs, labels, [0.5] * 3, ["a", "b", "c"], single_label=True)
    for key in BINARY_KEYS | {"multiclass_acc", "weighted_f1"}:
        assert result[key] == 1.0, key
    assert result["n"] == 5
    assert all(value == 1.0 for name in "abc" for key, value in result["per_class"][name].items() if key != "threshold")
    json.dumps(result, allow_nan=False)  # plain Python values only


def test_worked_binary_example():
    """P = 2, N = 8 at threshold 0.5: TP 1, FN 1, FP 2, TN 6.

    Acc 7/10; precision 1/3; recall 1/2; F1 = 2·(1/3·1/2)/(1/3+1/2) = 0.4;
    WAcc = (TPR + TNR)/2 = (1/2 + 6/8)/2 = 0.625 = (TP·N/P + TN)/(2N) = (4 + 6)/16;
    AUC: the 0.9 positive outranks all 8 negatives, the 0.2 positive the six at 0.1: 14/16.
    """
    labels = np.array([[1], [1], [0], [0], [0], [0], [0], [0], [0], [0]])
    probs = np.array([[0.9], [0.2], [0.8], [0.7], [0.1], [0.1], [0.1], [0.1], [0.1], [0.1]])
    result = compute_metrics(probs, labels, [0.5], ["x"], single_label=False)
    expected = {"acc": 0.7, "precision": 1 / 3, "recall": 0.5, "f1": 0.4, "wacc": 0.625, "auc": 0.875}
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key
        assert result["per_class"]["x"][key] == pytest.approx(value), key
    assert "multiclass_acc" not in result


def test_probability_equal_to_threshold_is_positive():
    result = compute_metrics(np.array([[0.5], [0.2]]), np.array([[1], [0]]), [0.5], ["x"], single_label=False)
    assert result["recall"] == 1.0


def test_threshold_maximises_f1_and_ties_go_to_the_smallest():
    """Class 0: every t in (0.3, 0.8] separates perfectly, so 0.35; class 1 has no positives (F1 0
    everywhere), so the first grid value."""
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    probs = np.array([[0.9, 0.6], [0.8, 0.1], [0.3, 0.4], [0.2, 0.9]])
    assert choose_thresholds(probs, labels) == pytest.approx([0.35, 0.05])


def test_thresholds_chosen_on_valid_are_reused_on_test():
    valid_labels, valid_probs = np.array([[1], [1], [0], [0]]), np.array([[0.9], [0.8], [0.3], [0.2]])
    test_labels, test_probs = np.array([[1], [1], [0], [0]]), np.array([[0.4], [0.3], [0.32], [0.1]])
    thresholds = choose_thresholds(valid_probs, valid_labels)
    result = compute_metrics(test_probs, test_labels, thresholds, ["x"], single_label=False)
    # At 0.35 only the 0.4 positive is predicted: P 1, R 1/2, F1 2/3. Tuning on test would pick 0.15
    # (F1 0.8): the valid threshold is what is used.
    assert result["per_class"]["x"]["threshold"] == pytest.approx(0.35)
    assert result["f1"] == pytest.approx(2 / 3)
    assert choose_thresholds(test_probs, test_labels) == pytest.approx([0.15])


def test_class_with_one_label_value_has_nan_auc_and_finite_means():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    probs = np.array([[0.9, 0.6], [0.1, 0.1], [0.7, 0.2], [0.4, 0.3]])
    result = compute_metrics(probs, labels, [0.5, 0.5], ["a", "b"], single_label=False)
    assert math.isnan(result["per_class"]["b"]["auc"])
    assert result["auc"] == result["per_class"]["a"]["auc"] == 1.0  # nan classes are left out of the mean
    assert result["per_class"]["b"]["wacc"] == pytest.approx(0.75)  # no positives: WAcc is the TNR, 3/4
    assert result["per_class"]["b"]["f1"] == 0.0


def test_single_label_extras():
    """Truth 0,1,2,2; argmax 0,1,1,2: accuracy 3/4; per-class F1 1, 2/3, 2/3 with supports 1, 1, 2,
    so weighted F1 = (1 + 2/3 + 2·2/3)/4 = 3/4."""
    labels = np.eye(3)[[0, 1, 2, 2]]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]])
    result = compute_metrics(probs, labels, [0.5] * 3, ["a", "b", "c"], single_label=True)
    assert result["multiclass_acc"] == pytest.approx(0.75)
    assert result["weighted_f1"] == pytest.approx(0.75)


def test_main_metrics_follow_the_paper():
    assert main_metrics("iemocap") == ("acc", "f1")
    assert main_metrics("mosei") == ("wacc", "f1")
    assert is_single_label("iemocap") and not is_single_label("mosei")
    with pytest.raises(ValueError, match="unknown dataset"):
        main_metrics("meld")


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((4, 2)), np.zeros((4, 3)), [0.5] * 2, ["a", "b"], single_label=False)
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((4, 2)), np.zeros((4, 2)), [0.5] * 3, ["a", "b"], single_label=False)
