"""Cross-corpus evaluation on the emotions IEMOCAP and MOSEI share: the mapping, metrics on mapped
labels against a hand-computed case, and ``e2e benchmark --cross-corpus`` in both directions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_reorg.manifest import load_manifest
from e2e.cli import main
from e2e.config import UsageError
from e2e.data.protocols import SHARED_EMOTIONS, shared_label
from e2e.experiments.benchmark import BenchmarkRequest
from e2e.experiments.protocols import plan_cross_corpus
from e2e.reporting.tables import format_mean_std
from e2e.training.metrics import Scoring

TINY = ["--set", "train.epochs=1", "--set", "data.max_frames=2", "--set", "data.max_chunks=2"]


def _label(dataset, raw):
    label, problem = shared_label(dataset, raw)
    return problem[0] if problem else label.tolist()


def test_shared_label_mapping():
    assert SHARED_EMOTIONS == ("anger", "happy", "sad")
    assert _label("iemocap", "ang") == [1, 0, 0]
    assert _label("iemocap", "exc") == _label("iemocap", "hap") == [0, 1, 0]  # excited counts as happy
    assert _label("iemocap", "neu") == _label("iemocap", "fru") == "unshared_label"
    assert _label("iemocap", "xxx") == "bad_label"
    assert _label("mosei", [1, 0, 0, 0, 1, 0]) == [1, 0, 1]  # anger + sad
    assert _label("mosei", [0, 1, 1, 0, 0, 1]) == "unshared_label"  # disgust, fear, surprise only
    assert _label("mosei", [0, 0, 0, 1, 0, 1]) == [0, 1, 0]
    assert _label("mosei", [1, 0]) == "bad_label"


def test_metrics_on_mapped_labels_by_hand():
    """Four MOSEI segments mapped to the shared emotions, scored one-vs-rest at threshold 0.5."""
    labels = np.array(
        [
            _label("mosei", raw)
            for raw in ([1, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1])
        ]
    )
    assert labels.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
    logits = np.array([[2.0, -1.0, -1.0], [2.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])
    metrics = Scoring("emotion", "mosei", SHARED_EMOTIONS).metrics(logits, labels, [0.5] * 3)
    # predicted positive (logit > 0): anger rows 0,1 (truth 0,2); happy rows 1,3 (truth 1); sad rows 2,3 (truth 0,3)
    per_class = metrics["per_class"]
    assert per_class["anger"]["f1"] == pytest.approx(0.5) and per_class["anger"]["acc"] == pytest.approx(0.5)
    assert per_class["happy"]["f1"] == pytest.approx(2 / 3) and per_class["happy"]["acc"] == pytest.approx(0.75)
    assert per_class["sad"]["f1"] == pytest.approx(0.5) and per_class["sad"]["wacc"] == pytest.approx(0.5)
    assert metrics["f1"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert metrics["n"] == 4 and "multiclass_acc" not in metrics  # MOSEI is scored multi-label


def test_cross_corpus_needs_both_corpora_and_no_pretraining(demo_data, tmp_path):
    request = BenchmarkRequest(demo_data.iemocap, ["fe2e"], [0], tmp_path, tmp_path)
    with pytest.raises(UsageError, match="pairs iemocap and mosei"):
        plan_cross_corpus(request, demo_data.iemocap)
    with pytest.raises(UsageError, match="conki"):
        plan_cross_corpus(BenchmarkRequest(demo_data.iemocap, ["conki"], [0], tmp_path, tmp_path), demo_data.mosei)
    directions = plan_cross_corpus(request, demo_data.mosei)
    assert directions == [
        ("iemocap", demo_data.iemocap, demo_data.mosei),
        ("mosei", demo_data.mosei, demo_data.iemocap),
    ]


def _shared_test_rows(data_dir, dataset):
    return [row for row in load_manifest(data_dir, "test") if shared_label(dataset, row["label"])[1] is None]


@pytest.mark.slow
def test_cross_corpus_benchmark_both_directions(demo_iemocap_cache, demo_data, tmp_path):
    out = tmp_path / "cross"
    argv = ["benchmark", "--data-dir", str(demo_iemocap_cache), "--models", "fe2e", "--seeds", "0"]
    argv += ["--config-dir", "configs/demo", "--cross-corpus", str(demo_data.mosei), *TINY]
    assert main([*argv, "--set", "train.progress=false", "--out", str(out)]) == 0
    markdown = (out / "cross_corpus.md").read_text(encoding="utf-8")
    assert "- iemocap: ang → anger, exc → happy, hap → happy, sad → sad; no counterpart: fru, neu" in markdown
    assert "- mosei: anger → anger, happy → happy, sad → sad; no counterpart: disgust, fear, surprise" in markdown
    for train_corpus, test_corpus, test_dir in (
        ("iemocap", "mosei", demo_data.mosei),
        ("mosei", "iemocap", demo_iemocap_cache),
    ):
        results = json.loads((out / f"fe2e-{train_corpus}-s0" / "results.json").read_text())
        assert results["config"]["data"]["label_space"] == "shared" and results["class_names"] == list(SHARED_EMOTIONS)
        cross = results["cross_corpus"]
        assert cross["test_corpus"] == test_corpus and cross["mapping"]["iemocap"]["exc"] == "happy"
        assert cross["test"]["n"] == len(_shared_test_rows(test_dir, test_corpus))  # mapped, unshared left out
        assert cross["test"]["skipped"] == {"unshared_label": len(load_manifest(test_dir, "test")) - cross["test"]["n"]}
        row = next(line for line in markdown.splitlines() if f"| {train_corpus} → {test_corpus} |" in line)
        assert format_mean_std([cross["test"]["f1"]], "f1") in row
        assert format_mean_std([results["test"]["f1"]], "f1") in row  # within-corpus F1
    summary = json.loads((out / "cross_corpus.json").read_text())
    assert summary["emotions"] == list(SHARED_EMOTIONS) and len(summary["runs"]) == 2
