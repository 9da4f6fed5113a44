"""The command line as a package: entry points, shared options, defaults that agree with the config,
paths resolved from the project, and which errors become ``e2e: error`` (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import e2e.cli.models
from e2e.cli import main
from e2e.cli.main import build_parser
from e2e.config import REPO_CONFIGS, DataConfig, ModelConfig, TrainConfig, UsageError

REPO = Path(__file__).resolve().parents[3]


def test_python_dash_m_runs_the_cli_from_any_directory(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "e2e.cli", "models"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"fe2e", "mesm", "mult", "tfr_net"} <= set(done.stdout.split())


def test_config_paths_resolve_from_the_project_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--config", "configs/demo/mesm.yaml", "--out", "run"])
    assert args.config == REPO_CONFIGS / "demo" / "mesm.yaml" and args.config.is_file()
    (tmp_path / "configs" / "demo").mkdir(parents=True)
    (tmp_path / "configs" / "demo" / "mesm.yaml").write_text("model:\n  name: mesm\n")
    args = build_parser().parse_args(["train", "--config", "configs/demo/mesm.yaml", "--out", "run"])
    assert args.config == Path("configs/demo/mesm.yaml")  # a file here wins over the project's


@pytest.mark.parametrize(
    "command",
    [
        ["preprocess", "D"],
        ["features", "D"],
        ["eval", "--ckpt", "c.pt"],
        ["predict", "--ckpt", "c.pt", "v.mp4", "--text", "hi"],
    ],
)
def test_device_defaults_to_auto_like_the_config(command):
    assert build_parser().parse_args(command).device == "auto" == TrainConfig.device


def test_train_device_is_a_train_device_override(monkeypatch):
    """``e2e train --device D`` = ``--set train.device=D``; without it the config's value stands."""
    from e2e.cli import train as train_cli
    from e2e.training import trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda config, out, resume: seen.append(config.train.device) or {})
    base = ["train", "--config", "configs/demo/mult.yaml", "--out", "run"]
    for extra in (["--device", "cuda:1"], []):
        assert train_cli.run_train(build_parser().parse_args([*base, *extra])) == 0
    assert seen == ["cuda:1", TrainConfig.device]


@pytest.mark.parametrize("spelling", [["D"], ["--data-dir", "D"], ["--data", "D"]])
def test_one_data_directory_option_with_the_old_spellings(spelling):
    from e2e.cli.options import data_dir

    assert data_dir(build_parser().parse_args(["preprocess", *spelling])) == Path("D")
    if spelling[0].startswith("--"):
        benchmark = build_parser().parse_args(["benchmark", *spelling, "--out", "o"])
        assert data_dir(benchmark) == Path("D")


def test_a_missing_or_doubled_data_directory_is_a_user_error(capsys):
    assert main(["preprocess"]) == 2
    assert "no data directory given" in capsys.readouterr().err
    assert main(["preprocess", "A", "--data-dir", "B"]) == 2
    assert "two data directories given" in capsys.readouterr().err


def test_features_take_the_text_model_of_the_config(monkeypatch):
    import e2e.data.feature_cache

    calls = []

    def record(data_dir, **kwargs):
        calls.append(kwargs)
        raise UsageError("stop here")

    monkeypatch.setattr(e2e.data.feature_cache, "extract_features", record)
    assert main(["features", "D", "--device", "cpu"]) == 2
    assert (calls[-1]["text_model"], calls[-1]["text_max_length"], calls[-1]["img_interval_ms"]) == (
        ModelConfig.text_model,
        ModelConfig.text_max_length,
        DataConfig.img_interval_ms,
    )
    assert main(["features", "D", "--device", "cpu", "--config", "configs/demo/lf_lstm.yaml"]) == 2
    assert (calls[-1]["text_model"], calls[-1]["text_max_length"]) == ("minilm", 32)
    assert (
        main(["features", "D", "--device", "cpu", "--config", "configs/demo/lf_lstm.yaml", "--text-model", "tiny-bert"])
        == 2
    )
    assert calls[-1]["text_model"] == "tiny-bert"


def test_a_user_error_exits_2_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    def user_error(args):
        raise UsageError("that run folder is finished")

    monkeypatch.setattr(e2e.cli.models, "run_models", user_error)
    assert main(["models"]) == 2
    assert capsys.readouterr().err == "e2e: error: that run folder is finished\n"

    def bug(args):
        raise KeyError("results")

    monkeypatch.setattr(e2e.cli.models, "run_models", bug)
    with pytest.raises(KeyError, match="results"):
        main(["models"])


def test_every_command_group_is_its_own_module():
    from e2e.cli.main import GROUPS

    registered = {name for name in build_parser()._subparsers._group_actions[0].choices}
    assert registered == {
        "preprocess",
        "features",
        "train",
        "eval",
        "predict",
        "flops",
        "visualize",
        "sweep",
        "benchmark",
        "table",
        "report",
        "models",
        "status",
    }
    assert len({group.__name__ for group in GROUPS}) == len(GROUPS) == 9
