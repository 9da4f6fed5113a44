import json
import math

import numpy as np
import pytest
from scipy.special import logit

import e2e  # noqa: F401  (compat shim first)
from e2e.config import UsageError
from e2e.training.metrics import (
    THRESHOLD_GRID,
    ccc,
    choose_thresholds,
    compute_metrics,
    is_single_label,
    main_metrics,
    selection_metric,
    sentiment_metrics,
    vad_metrics,
)

BINARY_KEYS = {"acc", "precision", "recall", "f1", "auc", "wacc"}


def test_grid_is_005_to_095():
    assert len(THRESHOLD_GRID) == 19
    assert THRESHOLD_GRID[0] == pytest.approx(0.05) and THRESHOLD_GRID[-1] == pytest.approx(0.95)


def test_perfect_predictions_score_one():
    labels = np.eye(3)[[0, 1, 2, 2, 1]]
    probs = np.where(labels == 1, 0.9, 0.1)
    result = compute_metrics(logit(probs), labels, [0.5] * 3, ["a", "b", "c"], single_label=True, pos_weight=None)
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
    result = compute_metrics(logit(probs), labels, [0.5], ["x"], single_label=False, pos_weight=None)
    expected = {"acc": 0.7, "precision": 1 / 3, "recall": 0.5, "f1": 0.4, "wacc": 0.625, "auc": 0.875}
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key
        assert result["per_class"]["x"][key] == pytest.approx(value), key
    assert "multiclass_acc" not in result


def test_probability_equal_to_threshold_is_positive():
    result = compute_metrics(
        logit(np.array([[0.5], [0.2]])), np.array([[1], [0]]), [0.5], ["x"], single_label=False, pos_weight=None
    )
    assert result["recall"] == 1.0


def test_threshold_maximises_f1_and_ties_go_to_the_smallest():
    """Class 0: every t in (0.3, 0.8] separates perfectly, so 0.35; class 1 has no positives (F1 0
    everywhere), so the first grid value."""
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    probs = np.array([[0.9, 0.6], [0.8, 0.1], [0.3, 0.4], [0.2, 0.9]])
    assert choose_thresholds(logit(probs), labels) == pytest.approx([0.35, 0.05])


def test_thresholds_chosen_on_valid_are_reused_on_test():
    valid_labels, valid_probs = np.array([[1], [1], [0], [0]]), np.array([[0.9], [0.8], [0.3], [0.2]])
    test_labels, test_probs = np.array([[1], [1], [0], [0]]), np.array([[0.4], [0.3], [0.32], [0.1]])
    thresholds = choose_thresholds(logit(valid_probs), valid_labels)
    result = compute_metrics(logit(test_probs), test_labels, thresholds, ["x"], single_label=False, pos_weight=None)
    # At 0.35 only the 0.4 positive is predicted: P 1, R 1/2, F1 2/3. Tuning on test would pick 0.15
    # (F1 0.8): the valid threshold is what is used.
    assert result["per_class"]["x"]["threshold"] == pytest.approx(0.35)
    assert result["f1"] == pytest.approx(2 / 3)
    assert choose_thresholds(logit(test_probs), test_labels) == pytest.approx([0.15])


def test_class_with_one_label_value_has_nan_auc_and_finite_means():
    labels = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    probs = np.array([[0.9, 0.6], [0.1, 0.1], [0.7, 0.2], [0.4, 0.3]])
    result = compute_metrics(logit(probs), labels, [0.5, 0.5], ["a", "b"], single_label=False, pos_weight=None)
    assert math.isnan(result["per_class"]["b"]["auc"])
    assert result["auc"] == result["per_class"]["a"]["auc"] == 1.0  # nan classes are left out of the mean
    assert result["per_class"]["b"]["wacc"] == pytest.approx(0.75)  # no positives: WAcc is the TNR, 3/4
    assert result["per_class"]["b"]["f1"] == 0.0


def test_single_label_extras():
    """Truth 0,1,2,2; argmax 0,1,1,2: accuracy 3/4; per-class F1 1, 2/3, 2/3 with supports 1, 1, 2,
    so weighted F1 = (1 + 2/3 + 2·2/3)/4 = 3/4."""
    labels = np.eye(3)[[0, 1, 2, 2]]
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]])
    result = compute_metrics(logit(probs), labels, [0.5] * 3, ["a", "b", "c"], single_label=True, pos_weight=None)
    assert result["multiclass_acc"] == pytest.approx(0.75)
    assert result["weighted_f1"] == pytest.approx(0.75)


def test_main_metrics_follow_the_paper_and_the_task():
    assert main_metrics("iemocap", "emotion") == ("acc", "f1")
    assert main_metrics("mosei", "emotion") == ("wacc", "f1")
    assert main_metrics("mosei", "sentiment") == ("acc2_non0", "f1_non0", "mae", "corr", "acc7")
    assert main_metrics("iemocap", "vad") == ("mae", "ccc")
    assert is_single_label("iemocap") and not is_single_label("mosei")
    with pytest.raises(UsageError, match="no metrics for data.task='emotion' on data.dataset='meld'"):
        main_metrics("meld", "emotion")
    with pytest.raises(UsageError, match="data.task='vad' on data.dataset='mosei'"):
        main_metrics("mosei", "vad")
    assert selection_metric("emotion") == ("f1", True)
    assert selection_metric("sentiment") == ("mae", False)  # lower is better
    assert selection_metric("vad") == ("ccc", True)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((4, 2)), np.zeros((4, 3)), [0.5] * 2, ["a", "b"], single_label=False, pos_weight=None)
    with pytest.raises(ValueError):
        compute_metrics(np.zeros((4, 2)), np.zeros((4, 2)), [0.5] * 3, ["a", "b"], single_label=False, pos_weight=None)


def test_argmax_removes_the_pos_weight_prior():
    """Weighted BCE inflates class c's logits by log w_c: with w = (1, 1, e^2) the rare class c wins
    the plain argmax of rows 0 and 1 (true class a); z - log w gives a there. Truth a, a, b, c:
    biased 6-way accuracy 2/4, fixed 4/4. The per-class thresholded metrics do not change."""
    labels = np.eye(3)[[0, 0, 1, 2]]
    logits = np.array([[0.5, -1.0, 1.5], [1.0, -1.0, 2.5], [-1.0, 1.0, 0.0], [-1.0, -1.0, 3.0]])
    names, thresholds = ["a", "b", "c"], [0.5] * 3
    biased = compute_metrics(logits, labels, thresholds, names, single_label=True, pos_weight=None)
    fixed = compute_metrics(logits, labels, thresholds, names, single_label=True, pos_weight=[1.0, 1.0, math.e**2])
    assert biased["multiclass_acc"] == pytest.approx(0.5)
    assert fixed["multiclass_acc"] == pytest.approx(1.0)
    assert fixed["weighted_f1"] == pytest.approx(1.0) and biased["weighted_f1"] < 1.0
    assert fixed["per_class"] == biased["per_class"] and fixed["f1"] == biased["f1"]
    with pytest.raises(UsageError, match="pos_weight must hold 3 positive values"):
        compute_metrics(logits, labels, thresholds, names, single_label=True, pos_weight=[1.0, 0.0, 1.0])


def test_sentiment_metrics_hand_computed():
    """Truth -2, 0, 0, 1.4, 2.6, -0.4; predictions -1.6, 0.3, -0.2, 0.4, 2.4, 0.2.

    MAE (0.4 + 0.3 + 0.2 + 1 + 0.2 + 0.6) / 6 = 0.45. Acc-7 on rounded values: -2/-2, 0/0, 0/0, 0/1,
    2/3, 0/0 -> 4/6; Acc-5 clips 2.6 to 2 -> 5/6. Has-0 (>= 0): truth F T T T T F, pred F T F T T T:
    Acc 4/6; F1 of True 3/4 (support 4), of False 1/2 (support 2): weighted 2/3. Non-0 (the four
    non-zero truths, > 0): truth F T T F, pred F T T T: Acc 3/4; F1 True 0.8, False 2/3, equal support:
    weighted 11/15."""
    truth = np.array([[-2.0], [0.0], [0.0], [1.4], [2.6], [-0.4]])
    predictions = np.array([[-1.6], [0.3], [-0.2], [0.4], [2.4], [0.2]])
    result = sentiment_metrics(predictions, truth)
    expected = {
        "mae": 0.45,
        "acc7": 4 / 6,
        "acc5": 5 / 6,
        "acc2_has0": 4 / 6,
        "f1_has0": 2 / 3,
        "acc2_non0": 3 / 4,
        "f1_non0": 11 / 15,
        "corr": np.corrcoef(predictions[:, 0], truth[:, 0])[0, 1],
    }
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key
    assert result["n"] == 6 and result["n_non0"] == 4
    json.dumps(result, allow_nan=False)


def test_sentiment_mae_uses_unclipped_predictions_and_undefined_values_are_nan():
    truth = np.array([[3.0], [0.0]])
    result = sentiment_metrics(np.array([[5.0], [5.0]]), truth)  # a constant prediction
    assert result["mae"] == pytest.approx((2.0 + 5.0) / 2)
    assert result["acc7"] == pytest.approx(0.5)  # 5 clips to 3
    assert math.isnan(result["corr"])  # Pearson of a constant: undefined, not 0
    only_zero = sentiment_metrics(np.array([[0.5]]), np.array([[0.0]]))
    assert math.isnan(only_zero["acc2_non0"]) and math.isnan(only_zero["f1_non0"])


def test_vad_metrics_ccc_penalises_a_shift_that_pearson_ignores():
    """Truth per dimension 1, 2, 3 (var 2/3); prediction truth + 0.5: Pearson 1, MAE 0.5,
    CCC = 2 (2/3) / (2/3 + 2/3 + 0.25) = 16/19."""
    truth = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [3.0, 4.0, 5.0]])
    shifted = vad_metrics(truth + 0.5, truth, ("valence", "activation", "dominance"))
    assert shifted["mae"] == pytest.approx(0.5) and shifted["ccc"] == pytest.approx(16 / 19)
    assert shifted["per_class"]["dominance"] == pytest.approx({"mae": 0.5, "ccc": 16 / 19})
    assert np.corrcoef(truth[:, 0] + 0.5, truth[:, 0])[0, 1] == pytest.approx(1.0)
    perfect = vad_metrics(truth, truth, ("valence", "activation", "dominance"))
    assert perfect["ccc"] == pytest.approx(1.0) and perfect["mae"] == 0.0
    assert ccc(np.full(3, 2.0), truth[:, 0]) == 0.0  # a constant prediction: no concordance
    with pytest.raises(UsageError, match=r"must both be \(N, 3\)"):
        vad_metrics(truth[:, :2], truth[:, :2], ("valence", "activation", "dominance"))


def test_counted_metrics_equal_sklearns_scores():
    """Thresholds and per-class metrics come from confusion counts; they equal sklearn's scores exactly on
    random cases, including classes without positives or without negatives."""
    import warnings

    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_score, recall_score

    from e2e.training.metrics import THRESHOLD_GRID

    rng = np.random.default_rng(0)
    for case in range(8):
        n = int(rng.integers(1, 40))
        logits, labels = np.round(rng.normal(0, 2, (n, 4)), 1), (rng.random((n, 4)) < rng.random()).astype(int)
        labels[:, 0] = case % 2  # all negative / all positive
        chosen = choose_thresholds(logits, labels)
        result = compute_metrics(logits, labels, chosen, "abcd", False, pos_weight=None)
        probs = 1 / (1 + np.exp(-logits))
        for c, name in enumerate("abcd"):
            scores = [f1_score(labels[:, c], probs[:, c] >= t, zero_division=0.0) for t in THRESHOLD_GRID]
            assert chosen[c] == THRESHOLD_GRID[int(np.argmax(scores))]
            predicted, truth, mine = probs[:, c] >= chosen[c], labels[:, c], result["per_class"][name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wacc = balanced_accuracy_score(truth, predicted)
            assert mine["acc"] == accuracy_score(truth, predicted) and mine["wacc"] == wacc
            assert mine["precision"] == precision_score(truth, predicted, zero_division=0.0)
            assert mine["recall"] == recall_score(truth, predicted, zero_division=0.0)
            assert mine["f1"] == f1_score(truth, predicted, zero_division=0.0)
