"""``e2e benchmark`` and ``e2e sweep missing``: all twelve models on the demo corpus, one table.

The slow test is the issue's acceptance check: on the demo IEMOCAP corpus (ConKI's knowledge from the
demo MOSEI corpus) every model trains, evaluates and beats the majority-class baseline on test; the
missing-input sweep then reuses the same runs, and at rate 0 reproduces their test metrics.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from e2e.cli import main
from e2e.config import ConfigError
from e2e.experiments.benchmark import BenchmarkRequest, dataset_of, parse_models, plan_benchmark, summarize
from e2e.models import shipped_models
from e2e.training.checkpoint import copy_pretrained
from tests.conftest import demo_benchmark_options

DEMO_CONFIGS = Path("configs/demo")
ALL_MODELS = shipped_models()


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_parse_models():
    assert parse_models("all") == ALL_MODELS and len(ALL_MODELS) == 12  # not the tests' own registered models
    assert parse_models("mult, lf_lstm,mult") == ["mult", "lf_lstm"]
    with pytest.raises(ValueError, match="nope"):
        parse_models("fe2e,nope")


def test_every_model_has_demo_and_dataset_configs():
    for model in ALL_MODELS:
        for folder in ("demo", "iemocap", "mosei"):
            assert (Path("configs") / folder / f"{model}.yaml").is_file(), f"configs/{folder}/{model}.yaml"


def test_plan_chains_conki_to_its_knowledge_run(demo_data, tmp_path):
    plan = plan_benchmark(
        BenchmarkRequest(
            demo_data.iemocap, ["lf_lstm", "conki"], [0, 1], DEMO_CONFIGS, tmp_path, knowledge_data=demo_data.mosei
        )
    )
    assert [job.name for job in plan.pretrain] == ["conki-knowledge-s0", "conki-knowledge-s1"]
    assert [job.name for _, _, job in plan.runs] == ["lf_lstm-s0", "lf_lstm-s1", "conki-s0", "conki-s1"]
    stage1, stage2 = plan.pretrain[1].config, plan.runs[3][2].config
    assert stage1.data.dataset == "mosei" and stage2.data.dataset == "iemocap"
    assert stage2.train.init_checkpoint == str(tmp_path / "conki-knowledge-s1" / "checkpoints" / "best.pt")
    assert stage2.train.init_prefix == "adapters." and stage2.train.seed == 1
    with pytest.raises(ValueError, match="knowledge-data"):
        plan_benchmark(BenchmarkRequest(demo_data.iemocap, ["conki"], [0], DEMO_CONFIGS, tmp_path))
    assert dataset_of(demo_data.mosei) == "mosei"


def test_copy_pretrained_copies_only_the_prefix(tmp_path):
    source, target = (
        torch.nn.ModuleDict({"adapters": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 2)}),
        torch.nn.ModuleDict({"adapters": torch.nn.Linear(3, 3), "head": torch.nn.Linear(3, 2)}),
    )
    torch.save({"model": source.state_dict()}, tmp_path / "best.pt")
    head_before = target["head"].weight.clone()
    names = copy_pretrained(target, tmp_path / "best.pt", "adapters.")
    assert sorted(names) == ["adapters.bias", "adapters.weight"]
    torch.testing.assert_close(target["adapters"].weight, source["adapters"].weight)
    torch.testing.assert_close(target["head"].weight, head_before)
    with pytest.raises(ValueError, match="no parameters start with"):
        copy_pretrained(target, tmp_path / "best.pt", "encoders.")
    torch.save({"model": {"adapters.weight": torch.zeros(4, 4)}}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="does not fit"):
        copy_pretrained(target, tmp_path / "wrong.pt", "adapters.")


def test_summary_compares_with_the_majority_baseline():
    majority = {"dataset": "iemocap", "test": {"multiclass_acc": 0.25, "f1": 0.05}}
    results = [
        {"model": "a", "run": "a-s0", "test": {"multiclass_acc": 0.5, "f1": 0.4}},
        {"model": "a", "run": "a-s1", "test": {"multiclass_acc": 0.3, "f1": 0.2}},
        {"model": "b", "run": "b-s0", "test": {"multiclass_acc": 0.2, "f1": 0.3}},
    ]
    summary = summarize(results, majority)
    assert summary["metric"] == "multiclass_acc"
    assert summary["models"]["a"]["multiclass_acc"] == pytest.approx(0.4)
    assert summary["models"]["a"]["runs"] == ["a-s0", "a-s1"]
    assert summary["models"]["a"]["beats_majority"] and not summary["models"]["b"]["beats_majority"]


def test_regression_summary_compares_mae_with_the_train_mean():
    majority = {"dataset": "mosei", "task": "sentiment", "test": {"mae": 1.0, "acc2_non0": 0.5}}
    results = [
        {"model": "a", "run": "a-s0", "test": {"mae": 0.8}},
        {"model": "a", "run": "a-s1", "test": {"mae": 0.9}},
        {"model": "b", "run": "b-s0", "test": {"mae": 1.2}},
    ]
    summary = summarize(results, majority)
    assert (summary["task"], summary["metric"], summary["majority"]) == ("sentiment", "mae", {"mae": 1.0})
    assert summary["models"]["a"]["mae"] == pytest.approx(0.85) and "f1" not in summary["models"]["a"]
    assert summary["models"]["a"]["beats_majority"] and not summary["models"]["b"]["beats_majority"]


def test_all_models_of_a_task_and_conki_knowledge_on_emotion(demo_data, tmp_path):
    assert parse_models("all", "vad") == [name for name in ALL_MODELS if name not in ("carat", "conki", "emoembs")]
    assert parse_models("all", "sentiment") == [name for name in ALL_MODELS if name not in ("carat", "emoembs")]
    sentiment = ["data.task=sentiment"]
    plan = plan_benchmark(
        BenchmarkRequest(demo_data.mosei, ["conki"], [0], DEMO_CONFIGS, tmp_path, sentiment, demo_data.iemocap)
    )
    stage1, stage2 = plan.pretrain[0].config, plan.runs[0][2].config
    assert (stage1.data.dataset, stage1.data.task) == ("iemocap", "emotion")  # only the adapters are copied
    assert (stage2.data.dataset, stage2.data.task) == ("mosei", "sentiment")
    with pytest.raises(ConfigError, match="model 'carat' does not support data.task='sentiment'"):
        plan_benchmark(BenchmarkRequest(demo_data.mosei, ["carat"], [0], DEMO_CONFIGS, tmp_path, sentiment))


@pytest.mark.slow
def test_all_twelve_models_beat_the_majority_baseline_on_the_demo(demo_benchmark):
    summary = json.loads((demo_benchmark / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["models"]) == set(ALL_MODELS)
    losers = {name: entry for name, entry in summary["models"].items() if not entry["beats_majority"]}
    assert not losers, f"majority {summary['majority']}; not beaten by {losers}"
    table = (demo_benchmark / "report.md").read_text(encoding="utf-8")
    for name in (*ALL_MODELS, "majority"):
        assert f"| {name} |" in table
    rows = _read_csv(demo_benchmark / "report.csv")
    assert {row["model"] for row in rows} == {*ALL_MODELS, "majority"}
    assert (demo_benchmark / "conki-knowledge-s0" / "results.json").is_file()
    conki = json.loads((demo_benchmark / "conki-s0" / "results.json").read_text(encoding="utf-8"))
    assert conki["config"]["train"]["init_prefix"] == "adapters."


@pytest.mark.slow
def test_missing_sweep_reuses_the_runs_and_writes_csv_and_plot(demo_benchmark, demo_data):
    stamps = {path: path.stat().st_mtime_ns for path in demo_benchmark.glob("*/results.json")}
    options = demo_benchmark_options(demo_data, demo_benchmark)
    assert main(["sweep", "missing", *options, "--rates", "0,0.5,0.9"]) == 0
    assert {path: path.stat().st_mtime_ns for path in demo_benchmark.glob("*/results.json")} == stamps
    rows = _read_csv(demo_benchmark / "missing.csv")
    assert len(rows) == len(ALL_MODELS) * 2 * 3
    assert (demo_benchmark / "missing.png").stat().st_size > 10_000
    for row in rows:
        if float(row["rate"]) == 0.0:  # nothing dropped: the run's own test metrics
            results = json.loads((demo_benchmark / row["run"] / "results.json").read_text(encoding="utf-8"))
            assert float(row["acc"]) == pytest.approx(results["test"]["acc"], abs=1e-6), row["run"]
