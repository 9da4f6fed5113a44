import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import e2e  # noqa: F401  (compat shim first)
import helpers_train as helpers
from e2e import train as train_module
from e2e.train import DataBundle, build_optimizer, evaluate_checkpoint, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
# A straight run that exercises the optional paths too: cosine schedule, clipping, text lr group.
STRAIGHT = {"epochs": 3, "scheduler": "cosine", "grad_clip": 1.0}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    results = train(helpers.make_config(**STRAIGHT), run_dir, datasets=helpers.make_bundle())
    return run_dir, results


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def same_numbers(left: dict, right: dict) -> bool:
    """Equal metric dicts, where nan (in memory) matches None (in results.json)."""
    return json.dumps(train_module._json_safe(left), sort_keys=True) == \
        json.dumps(train_module._json_safe(right), sort_keys=True)


def test_run_writes_every_output(straight_run):
    run_dir, results = straight_run
    assert read_results(run_dir) == json.loads(json.dumps(train_module._json_safe(results)))
    assert (run_dir / "config.yaml").read_text().startswith("data:")
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    assert results["epochs_completed"] == 3 and 1 <= results["best_epoch"] <= 3
    assert results["main_metrics"] == ["acc", "f1"]
    assert results["test"]["n"] == helpers.SIZES["test"] and results["valid"]["n"] == helpers.SIZES["valid"]
    assert {"multiclass_acc", "weighted_f1"} <= set(results["test"])
    assert results["config"]["train"]["scheduler"] == "cosine"
    assert "attention_mode" not in results  # only for MESM models


def test_results_are_the_best_valid_epoch(straight_run):
    run_dir, results = straight_run
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["epoch"] == results["best_epoch"]
    assert best["thresholds"] == results["thresholds"]
    assert [results["test"]["per_class"][name]["threshold"] for name in results["class_names"]] \
        == results["thresholds"]
    assert best["progress"]["best_score"] == results["valid"]["f1"]


def test_checkpoint_loads_weights_only_with_full_state(straight_run):
    run_dir, _ = straight_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 3
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "rng", "progress", "thresholds", "config",
                               "class_names"}
    assert set(checkpoint["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert checkpoint["scheduler"]["last_epoch"] == 3
    assert checkpoint["config"]["model"]["name"] == helpers.MODEL_NAME
    assert len(checkpoint["thresholds"]) == 6


def test_resume_after_kill_matches_uninterrupted_run(straight_run, tmp_path):
    """Killed in the middle of epoch 3 (after last.pt of epoch 2), then resumed to the end."""
    straight_dir, _ = straight_run
    bundle = helpers.make_bundle()
    batches_per_epoch = sum(math.ceil(size / 8) for size in helpers.SIZES.values())
    killed = DataBundle(**{**vars(bundle), "collate_fn": helpers.CrashAfter(2 * batches_per_epoch + 2)})
    with pytest.raises(helpers.SimulatedKill):
        train(helpers.make_config(**STRAIGHT), tmp_path, datasets=killed)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 2

    train(helpers.make_config(**STRAIGHT), tmp_path, resume=True, datasets=bundle)
    assert (tmp_path / "results.json").read_text() == (straight_dir / "results.json").read_text()
    assert_same_state(tmp_path, straight_dir)


def test_resume_with_more_epochs_matches_longer_run(tmp_path):
    bundle = helpers.make_bundle()
    train(helpers.make_config(epochs=3), tmp_path / "straight", datasets=bundle)
    train(helpers.make_config(epochs=2), tmp_path / "resumed", datasets=bundle)
    train(helpers.make_config(epochs=3), tmp_path / "resumed", resume=True, datasets=bundle)
    assert read_results(tmp_path / "resumed") == read_results(tmp_path / "straight")
    assert_same_state(tmp_path / "resumed", tmp_path / "straight")


def assert_same_state(run_dir: Path, reference_dir: Path) -> None:
    ours = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    theirs = load_checkpoint(reference_dir / "checkpoints" / "last.pt")
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    for index, state in theirs["optimizer"]["state"].items():
        assert all(torch.equal(ours["optimizer"]["state"][index][key], value) for key, value in state.items())
    assert ours["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]
    assert ours["scheduler"] == theirs["scheduler"] and ours["progress"] == theirs["progress"]
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])


def test_evaluate_checkpoint_reuses_stored_thresholds(straight_run, monkeypatch):
    run_dir, results = straight_run

    def no_tuning(*args, **kwargs):
        raise AssertionError("evaluate_checkpoint must not choose thresholds")

    monkeypatch.setattr(train_module, "choose_thresholds", no_tuning)
    best = run_dir / "checkpoints" / "best.pt"
    bundle = helpers.make_bundle()
    assert same_numbers(evaluate_checkpoint(best, datasets=bundle), results["test"])
    assert same_numbers(evaluate_checkpoint(best, "valid", datasets=bundle), results["valid"])


def test_early_stopping_keeps_the_first_best_epoch(tmp_path):
    """lr 0: valid F1 never improves after epoch 1, so patience 2 stops after epoch 3."""
    results = train(helpers.make_config(epochs=10, lr=0.0, early_stop_patience=2), tmp_path,
                    datasets=helpers.make_bundle())
    assert (results["best_epoch"], results["epochs_completed"], results["stopped_early"]) == (1, 3, True)
    again = train(helpers.make_config(epochs=10, lr=0.0, early_stop_patience=2), tmp_path, resume=True,
                  datasets=helpers.make_bundle())
    assert again == results  # a stopped run stays stopped


def test_training_learns(tmp_path):
    results = train(helpers.make_config(epochs=6, lr=0.1), tmp_path, datasets=helpers.make_bundle())
    first = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert results["best_epoch"] > 1 and first["progress"]["best_score"] > 0.6


def test_multilabel_run_reports_wacc(tmp_path):
    results = train(helpers.make_config("mosei", epochs=1), tmp_path, datasets=helpers.make_bundle("mosei"))
    assert results["main_metrics"] == ["wacc", "f1"]
    assert "wacc" in results["test"] and "multiclass_acc" not in results["test"]
    assert results["class_names"] == helpers.CLASSES["mosei"]


def test_run_dir_is_not_overwritten_and_resume_needs_a_checkpoint(straight_run, tmp_path):
    run_dir, _ = straight_run
    with pytest.raises(FileExistsError):
        train(helpers.make_config(**STRAIGHT), run_dir, datasets=helpers.make_bundle())
    with pytest.raises(FileNotFoundError):
        train(helpers.make_config(), tmp_path, resume=True, datasets=helpers.make_bundle())


def test_text_parameters_get_the_text_lr():
    model = helpers.TinyModel(6)
    config = helpers.make_config(lr=1e-3, text_lr_factor=0.1, weight_decay=0.01)
    optimizer = build_optimizer(model, config.train)
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    assert len(groups) == len(list(model.parameters()))
    for p in model.text_parameters():
        assert groups[id(p)]["lr"] == pytest.approx(1e-4)
    assert groups[id(model.media_head.weight)]["lr"] == 1e-3
    assert all(group["weight_decay"] == 0.01 for group in optimizer.param_groups)


def test_pos_weight_is_negatives_over_positives():
    bundle = helpers.make_bundle()
    labels = torch.stack([item["label"] for item in bundle.train.items])
    positives = labels.sum(0)
    assert torch.allclose(bundle.pos_weight(), (len(labels) - positives) / positives)
    empty = DataBundle(**{**vars(bundle), "train_positives": [0, 1, 2, 3, 4, 5]})
    assert empty.pos_weight()[0] == len(labels)


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process_shape(straight_run, tmp_path):
    _, single = straight_run
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "tests" / "helpers_train.py"), str(tmp_path)]
    finished = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = read_results(tmp_path)
    assert set(results) == set(single)
    for split in ("valid", "test"):
        assert set(results[split]) == set(single[split])
        assert set(results[split]["per_class"]) == set(single[split]["per_class"])
        assert results[split]["n"] == helpers.SIZES[split]  # gathered: the full split, once
    assert results["epochs_completed"] == 3
