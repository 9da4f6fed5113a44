"""The regression tasks end to end on the demo corpora, through the ``e2e`` CLI: ``e2e train`` with
``data.task=sentiment`` on the demo MOSEI (FE2E on raw clips, MulT on two-stage features) and
``data.task=vad`` on the demo IEMOCAP, ``e2e eval`` of a checkpoint, and the tables of their results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from data_reorg.io import read_jsonl
from e2e.cli import main
from e2e.experiments.benchmark import majority_results
from e2e.models import load_config
from e2e.reporting.report import write_report
from e2e.reporting.tables import load_results, results_table

pytestmark = pytest.mark.slow

SENTIMENT_KEYS = {"n", "mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "n_non0", "acc2_non0", "f1_non0"}


@pytest.fixture(scope="module")
def demo_mosei_features(demo_data) -> Path:
    """The demo MOSEI folder with its face/mel and two-stage feature caches (as the demo configs set them)."""
    from e2e.data.feature_cache import extract_features
    from e2e.data.preprocess import preprocess

    assert preprocess(demo_data.mosei, jobs=2, progress=False).problems == []
    assert extract_features(demo_data.mosei, "minilm", 500, 32, progress=False).problems == []
    return demo_data.mosei


def _train(config: str, data_dir: Path, run_dir: Path, *overrides: str) -> dict:
    args = ["train", "--config", config, "--set", f"data.data_dir={data_dir}", "--set", "train.progress=false"]
    for override in (*overrides, "train.epochs=1"):
        args += ["--set", override]
    assert main([*args, "--out", str(run_dir)]) == 0
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def sentiment_runs(demo_mosei_features, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("sentiment")
    task = ("data.dataset=mosei", "data.task=sentiment")
    return {
        model: (root / model, _train(f"configs/demo/{model}.yaml", demo_mosei_features, root / model, *task))
        for model in ("fe2e", "mult")
    }


@pytest.fixture(scope="module")
def vad_run(demo_iemocap_features, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("vad") / "mult"
    return run_dir, _train("configs/demo/mult.yaml", demo_iemocap_features, run_dir, "data.task=vad")


def _finite(metrics: dict, keys) -> bool:
    return all(isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]) for key in keys)


@pytest.mark.parametrize("model", ["fe2e", "mult"])
def test_sentiment_run_records_mmsa_metrics(sentiment_runs, model):
    _, results = sentiment_runs[model]
    assert results["task"] == "sentiment" and results["class_names"] == ["sentiment"]
    assert results["main_metrics"] == ["acc2_non0", "f1_non0", "mae", "corr", "acc7"]
    assert results["selection"] == {"metric": "mae", "higher_is_better": False}
    assert results["thresholds"] is None and results["pos_weight"] is None
    for split in ("valid", "test"):
        assert set(results[split]) == SENTIMENT_KEYS
        assert _finite(results[split], SENTIMENT_KEYS - {"corr"})  # corr is null for a constant prediction
        assert 0 <= results[split]["acc2_non0"] <= 1 and results[split]["mae"] >= 0


def test_eval_of_a_sentiment_checkpoint_reproduces_its_test_metrics(sentiment_runs, capsys):
    run_dir, results = sentiment_runs["mult"]
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run_dir / "checkpoints" / "best.pt"), "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in SENTIMENT_KEYS - {"corr"}:
        assert metrics[key] == pytest.approx(results["test"][key], abs=1e-6), key


def test_vad_run_records_mae_and_ccc_per_dimension(vad_run):
    _, results = vad_run
    assert results["task"] == "vad" and results["class_names"] == ["valence", "activation", "dominance"]
    assert results["main_metrics"] == ["mae", "ccc"] and results["thresholds"] is None
    assert results["selection"] == {"metric": "ccc", "higher_is_better": True}
    test = results["test"]
    assert _finite(test, ("mae", "ccc")) and -1 <= test["ccc"] <= 1
    for name in results["class_names"]:
        assert _finite(test["per_class"][name], ("mae", "ccc"))
    assert test["mae"] == pytest.approx(sum(test["per_class"][n]["mae"] for n in results["class_names"]) / 3)


def test_tables_of_regression_runs(sentiment_runs, vad_run, tmp_path):
    runs = [sentiment_runs["fe2e"][0], sentiment_runs["mult"][0], vad_run[0]]
    results, notes = load_results(runs)
    assert notes == []
    table = results_table(results)
    assert "mosei sentiment test (Acc/F1 in %)" in table and "Acc-2 (non-0)" in table and "MAE" in table
    assert "iemocap vad test MAE/CCC" in table and "valence" in table
    mae = f"{sentiment_runs['mult'][1]['test']['mae']:.3f}"
    assert mae in table
    report = write_report(results, tmp_path)
    assert (
        "mosei sentiment test (% except MAE, Corr" in report
        and "iemocap vad test (as they are, mean±std over runs)" in report
    )
    assert (tmp_path / "report.csv").read_text().count("\n") > 3


def test_the_regression_baseline_is_the_train_mean(demo_mosei_features):
    """MAE of the constant train-mean sentiment on test, computed from the manifest by hand."""
    config = load_config(
        "configs/demo/fe2e.yaml", [f"data.data_dir={demo_mosei_features}", "data.dataset=mosei", "data.task=sentiment"]
    )
    baseline = majority_results(config)
    rows = read_jsonl(demo_mosei_features / "manifest.jsonl")
    train = [row["sentiment"] for row in rows if row["split"] == "train"]
    test = [row["sentiment"] for row in rows if row["split"] == "test"]
    mean = sum(train) / len(train)
    assert baseline["task"] == "sentiment" and baseline["main_metrics"][2] == "mae"
    assert baseline["test"]["mae"] == pytest.approx(sum(abs(t - mean) for t in test) / len(test), abs=1e-6)
    assert math.isnan(baseline["test"]["corr"])  # a constant has no correlation: nan, not 0
