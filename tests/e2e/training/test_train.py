import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import e2e  # noqa: F401  (compat shim first)
from e2e.config import ConfigError
from e2e.data.bundle import DataBundle
from e2e.training import distributed, inference
from e2e.training import trainer as train_module
from e2e.training.checkpoint import load_checkpoint
from e2e.training.inference import evaluate_checkpoint
from e2e.training.metrics import Scoring
from e2e.training.optim import build_optimizer
from e2e.training.trainer import train
from tests.helpers import train as helpers

REPO = Path(__file__).resolve().parents[3]
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
    return json.dumps(train_module.json_safe(left), sort_keys=True) == json.dumps(
        train_module.json_safe(right), sort_keys=True
    )


def test_run_writes_every_output(straight_run):
    run_dir, results = straight_run
    assert read_results(run_dir) == json.loads(json.dumps(train_module.json_safe(results)))
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
    assert [results["test"]["per_class"][name]["threshold"] for name in results["class_names"]] == results["thresholds"]
    assert best["progress"]["best_score"] == results["valid"]["f1"]


def test_checkpoint_loads_weights_only_with_full_state(straight_run):
    run_dir, _ = straight_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 3
    assert set(checkpoint) >= {
        "model",
        "optimizer",
        "scheduler",
        "rng",
        "progress",
        "thresholds",
        "config",
        "class_names",
    }
    assert set(checkpoint["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert checkpoint["scheduler"]["last_epoch"] == 3
    assert checkpoint["config"]["model"]["name"] == helpers.MODEL_NAME
    assert len(checkpoint["thresholds"]) == 6
    assert checkpoint["run_cwd"] == os.getcwd()


def test_best_checkpoint_holds_only_what_eval_needs(straight_run):
    run_dir, results = straight_run
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert set(best) == {
        *("epoch", "model", "reloaded", "thresholds", "pos_weight", "config", "class_names", "progress", "run_cwd")
    }
    assert best["reloaded"] is None  # nothing frozen
    assert best["pos_weight"] == results["pos_weight"] == helpers.make_bundle().pos_weight().tolist()
    assert (run_dir / "checkpoints" / "best.pt").stat().st_size < (run_dir / "checkpoints" / "last.pt").stat().st_size


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
    helpers.assert_same_state(tmp_path, straight_dir)


def test_resume_with_more_epochs_matches_longer_run(tmp_path):
    bundle = helpers.make_bundle()
    train(helpers.make_config(epochs=3), tmp_path / "straight", datasets=bundle)
    train(helpers.make_config(epochs=2), tmp_path / "resumed", datasets=bundle)
    train(helpers.make_config(epochs=3), tmp_path / "resumed", resume=True, datasets=bundle)
    assert read_results(tmp_path / "resumed") == read_results(tmp_path / "straight")
    helpers.assert_same_state(tmp_path / "resumed", tmp_path / "straight")


def test_evaluate_checkpoint_reuses_stored_thresholds(straight_run, monkeypatch):
    run_dir, results = straight_run

    def no_tuning(*args, **kwargs):
        raise AssertionError("evaluate_checkpoint must not choose thresholds")

    monkeypatch.setattr(Scoring, "thresholds", no_tuning)
    best = run_dir / "checkpoints" / "best.pt"
    bundle = helpers.make_bundle()
    assert same_numbers(evaluate_checkpoint(best, datasets=bundle), results["test"])
    assert same_numbers(evaluate_checkpoint(best, "valid", datasets=bundle), results["valid"])


def test_early_stopping_keeps_the_first_best_epoch(tmp_path):
    """lr 0: valid F1 never improves after epoch 1, so patience 2 stops after epoch 3."""
    results = train(
        helpers.make_config(epochs=10, lr=0.0, early_stop_patience=2), tmp_path, datasets=helpers.make_bundle()
    )
    assert (results["best_epoch"], results["epochs_completed"], results["stopped_early"]) == (1, 3, True)
    again = train(
        helpers.make_config(epochs=10, lr=0.0, early_stop_patience=2),
        tmp_path,
        resume=True,
        datasets=helpers.make_bundle(),
    )
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


def test_resume_refuses_a_changed_config_naming_every_key(tmp_path):
    bundle = helpers.make_bundle()
    train(helpers.make_config(epochs=1), tmp_path, datasets=bundle)
    before = (tmp_path / "config.yaml").read_text()
    changed = helpers.make_config(epochs=1, lr=0.5, weight_decay=0.1)
    with pytest.raises(ConfigError) as error:
        train(changed, tmp_path, resume=True, datasets=bundle)
    message = str(error.value)
    assert "last.pt" in message and "train.lr 0.05 -> 0.5" in message and "train.weight_decay 0.0 -> 0.1" in message
    assert "train.epochs" in message  # the allowed keys are listed too
    assert (tmp_path / "config.yaml").read_text() == before
    train(helpers.make_config(epochs=1, scheduler="cosine"), tmp_path / "cosine", datasets=bundle)
    with pytest.raises(ConfigError, match="train.epochs 1 -> 2: the epochs cannot change on resume under"):
        train(helpers.make_config(epochs=2, scheduler="cosine"), tmp_path / "cosine", resume=True, datasets=bundle)
    train(helpers.make_config(epochs=2), tmp_path, resume=True, datasets=bundle)
    with pytest.raises(ConfigError, match="below the 2 epochs"):
        train(helpers.make_config(epochs=1), tmp_path, resume=True, datasets=bundle)


def test_resume_applies_a_new_patience(tmp_path):
    """lr 0: no improvement after epoch 1; patience 1 stops after epoch 2, patience 0 trains on."""
    bundle = helpers.make_bundle()
    stopped = train(helpers.make_config(epochs=4, lr=0.0, early_stop_patience=1), tmp_path, datasets=bundle)
    assert (stopped["epochs_completed"], stopped["stopped_early"]) == (2, True)
    again = train(helpers.make_config(epochs=4, lr=0.0, early_stop_patience=0), tmp_path, resume=True, datasets=bundle)
    assert (again["epochs_completed"], again["stopped_early"], again["best_epoch"]) == (4, False, 1)
    assert again["config"]["train"]["early_stop_patience"] == 0
    assert "early_stop_patience: 0" in (tmp_path / "config.yaml").read_text()


def test_keep_last_false_keeps_only_best(tmp_path):
    bundle = helpers.make_bundle()
    results = train(helpers.make_config(epochs=2, keep_last=False), tmp_path, datasets=bundle)
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"best.pt"}
    assert same_numbers(evaluate_checkpoint(tmp_path / "checkpoints" / "best.pt", datasets=bundle), results["test"])
    assert train(
        helpers.make_config(epochs=2, keep_last=False), tmp_path, resume=True, datasets=bundle
    ) == read_results(tmp_path)
    with pytest.raises(ValueError, match="cannot train further"):
        train(helpers.make_config(epochs=3, keep_last=False), tmp_path, resume=True, datasets=bundle)
    with pytest.raises(FileExistsError, match="best.pt"):
        train(helpers.make_config(epochs=2), tmp_path, datasets=bundle)


def test_resume_with_keep_last_false_deletes_last_at_the_end(straight_run, tmp_path):
    straight_dir, _ = straight_run
    shutil.copytree(straight_dir, tmp_path / "run")
    train(
        helpers.make_config(**STRAIGHT, keep_last=False), tmp_path / "run", resume=True, datasets=helpers.make_bundle()
    )
    assert {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()} == {"best.pt"}
    assert read_results(tmp_path / "run")["test"] == read_results(straight_dir)["test"]


def test_stale_best_that_cannot_be_rebuilt_is_an_error(tmp_path):
    bundle = helpers.make_bundle()
    train(helpers.make_config(epochs=2, lr=0.0), tmp_path, datasets=bundle)  # best epoch 1, last epoch 2
    (tmp_path / "checkpoints" / "best.pt").unlink()
    with pytest.raises(ValueError, match="best.pt is missing or unreadable.*names epoch 1"):
        train(helpers.make_config(epochs=2, lr=0.0), tmp_path, resume=True, datasets=bundle)


def test_frozen_pretrained_text_is_not_stored_and_reloads(tmp_path, monkeypatch):
    """text_lr_factor 0 freezes the text part: the "pretrained" embedding is left out of both checkpoints
    (rebuilt and verified on load), the random frozen text head is stored, neither has optimizer state."""
    bundle = helpers.make_bundle()
    config = helpers.make_config(model=helpers.PRETRAINED_TEXT_MODEL, epochs=2, text_lr_factor=0.0)
    results = train(config, tmp_path, datasets=bundle)
    for name in ("best.pt", "last.pt"):
        raw = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert "embedding.weight" not in raw["model"] and "text_head.weight" in raw["model"]
        assert raw["reloaded"]["names"] == ["embedding.weight"]
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    initial = helpers.pretrained_text_model(None, helpers.CLASSES["iemocap"])
    assert torch.equal(last["model"]["embedding.weight"], initial.embedding.weight)
    assert len(last["optimizer"]["state"]) == 2  # media_head weight and bias only
    best = tmp_path / "checkpoints" / "best.pt"
    assert same_numbers(evaluate_checkpoint(best, datasets=bundle), results["test"])

    shorter = helpers.make_config(model=helpers.PRETRAINED_TEXT_MODEL, epochs=1, text_lr_factor=0.0)
    train(shorter, tmp_path / "resumed", datasets=bundle)
    train(config, tmp_path / "resumed", resume=True, datasets=bundle)
    helpers.assert_same_state(tmp_path / "resumed", tmp_path)
    monkeypatch.setattr(helpers, "PRETRAINED_SEED", 99)  # other "pretrained files" than at training time
    with pytest.raises(ValueError, match="best.pt: the frozen weights"):
        load_checkpoint(best)


def test_eval_resolves_the_data_dir_against_the_run_directory(straight_run, tmp_path, monkeypatch):
    run_dir, results = straight_run
    checkpoint = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    checkpoint["config"]["data"]["data_dir"] = "corpus"
    checkpoint["run_cwd"] = str(tmp_path / "made_here")
    torch.save(checkpoint, tmp_path / "best.pt")
    seen = []
    monkeypatch.setattr(
        inference, "build_datasets", lambda config, inputs: seen.append(config.data.data_dir) or helpers.make_bundle()
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"made_here/corpus does not exist here; pass --data-dir"):
        evaluate_checkpoint(tmp_path / "best.pt")
    (tmp_path / "made_here" / "corpus").mkdir(parents=True)
    assert same_numbers(evaluate_checkpoint(tmp_path / "best.pt"), results["test"])
    assert seen == [str(tmp_path / "made_here" / "corpus")]


def test_cuda_without_a_gpu_is_one_clear_error(straight_run, monkeypatch, capsys):
    from e2e.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available on this machine; use cpu or auto"):
        distributed.resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="'gpu' is not a device"):
        distributed.resolve_device("gpu")
    assert distributed.resolve_device("auto") == torch.device("cpu")
    best = straight_run[0] / "checkpoints" / "best.pt"
    assert main(["eval", "--ckpt", str(best), "--device", "cuda"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "e2e: error: device 'cuda': CUDA is not available on this machine; use cpu or auto "
        "(--device cpu, or --set train.device=cpu for e2e train)"
    ]


def test_one_line_per_epoch_on_stderr_unless_progress_is_off(tmp_path, capsys):
    bundle = helpers.make_bundle()
    train(helpers.make_config(epochs=2, progress=True), tmp_path / "shown", datasets=bundle)
    lines = [line for line in capsys.readouterr().err.splitlines() if re.match(r"epoch \d/2: ", line)]
    assert len(lines) == 2
    assert re.fullmatch(r"epoch 1/2: loss \d\.\d{4}, valid acc \d\.\d{4}, f1 \d\.\d{4} \(best\)", lines[0])
    train(helpers.make_config(epochs=2), tmp_path / "quiet", datasets=bundle)
    assert capsys.readouterr().err == ""


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
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests" / "helpers" / "train.py"),
        str(tmp_path),
    ]
    finished = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    results = read_results(tmp_path)
    assert set(results) == set(single)
    for split in ("valid", "test"):
        assert set(results[split]) == set(single[split])
        assert set(results[split]["per_class"]) == set(single[split]["per_class"])
        assert results[split]["n"] == helpers.SIZES[split]  # gathered: the full split, once
    assert results["epochs_completed"] == 3


def test_early_stopping_follows_the_direction_of_the_task_metric():
    """Sentiment selects on the lowest valid MAE; a nan score never improves."""
    progress, lower = train_module._Progress(), ("mae", False)
    assert progress.record(1, {"mae": 1.0}, {}, None, 2, lower)
    assert progress.record(2, {"mae": 0.8}, {}, None, 2, lower)
    assert not progress.record(3, {"mae": 0.9}, {}, None, 2, lower)
    assert not progress.record(4, {"mae": float("nan")}, {}, None, 2, lower)
    assert (progress.best_epoch, progress.best_score, progress.stopped_early) == (2, 0.8, True)
    higher = train_module._Progress()
    assert higher.record(1, {"ccc": 0.2}, {}, None, 0, ("ccc", True))
    assert higher.record(2, {"ccc": 0.5}, {}, None, 0, ("ccc", True))
    assert not higher.record(3, {"ccc": 0.4}, {}, None, 0, ("ccc", True))


def test_a_checkpoint_without_pos_weight_evaluates_with_the_datas(straight_run, tmp_path, caplog):
    """A best.pt saved before pos_weight was stored: the train split's pos_weight, with a warning."""
    run_dir, results = straight_run
    old = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    del old["pos_weight"]
    torch.save(old, tmp_path / "old.pt")
    with caplog.at_level("WARNING", logger="e2e.training.inference"):
        metrics = evaluate_checkpoint(tmp_path / "old.pt", datasets=helpers.make_bundle())
    assert same_numbers(metrics, results["test"])
    assert "stores no pos_weight" in caplog.text
