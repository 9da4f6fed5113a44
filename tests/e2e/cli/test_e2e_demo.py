"""End to end on the demo corpus: preprocess -> train -> eval -> predict, through the ``e2e`` CLI.

The proof that the models learn from pixels and waveforms: FE2E restricted to one modality (text only,
audio only, visual only) must beat the majority-class baseline clearly on the test split, and all three
together must do at least as well as the best single modality (allowing noise).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import pytest

from data_reorg.io import read_jsonl
from e2e.cli import main

DEMO_FE2E = "configs/demo/fe2e.yaml"
MARGIN = 0.15  # over the majority-class 6-way accuracy (about 0.21 on the demo test split)

pytestmark = pytest.mark.slow


def _train(data_dir: Path, run_dir: Path, config: str = DEMO_FE2E, *overrides: str) -> dict:
    args = [
        "train",
        "--config",
        config,
        "--set",
        f"data.data_dir={data_dir}",
        "--set",
        "train.progress=false",
        "--out",
        str(run_dir),
    ]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 0
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def _majority_accuracy(data_dir: Path) -> float:
    labels = [row["label"] for row in read_jsonl(data_dir / "manifest.jsonl") if row["split"] == "test"]
    return Counter(labels).most_common(1)[0][1] / len(labels)


@pytest.fixture(scope="module")
def runs(demo_iemocap_cache, demo_benchmark, tmp_path_factory) -> dict[str, dict]:
    """FE2E on one modality each, trained here through ``e2e train``, and on all three: the demo
    benchmark's ``fe2e-s0`` run, the same config (configs/demo/fe2e.yaml, seed 0)."""
    root = tmp_path_factory.mktemp("runs")
    runs = {
        modalities: _train(demo_iemocap_cache, root / modalities, DEMO_FE2E, f"model.modalities={modalities}")
        for modalities in ("t", "a", "v")
    }
    return {**runs, "tav": json.loads((demo_benchmark / "fe2e-s0" / "results.json").read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def tav_checkpoint(demo_benchmark) -> Path:
    return demo_benchmark / "fe2e-s0" / "checkpoints" / "best.pt"


@pytest.mark.parametrize("modalities", ["t", "a", "v"])
def test_each_modality_alone_beats_majority(runs, demo_iemocap_cache, modalities):
    majority = _majority_accuracy(demo_iemocap_cache)
    accuracy = runs[modalities]["test"]["multiclass_acc"]
    assert accuracy >= majority + MARGIN, f"{modalities}: 6-way acc {accuracy:.3f}, majority {majority:.3f}"


def test_all_modalities_at_least_as_good_as_the_best_one(runs):
    best_single = max(runs[m]["test"]["multiclass_acc"] for m in ("t", "a", "v"))
    assert runs["tav"]["test"]["multiclass_acc"] >= best_single - 0.07


def test_results_hold_the_paper_metrics(runs):
    results = runs["tav"]
    assert results["main_metrics"] == ["acc", "f1"]
    assert set(results["test"]["per_class"]) == {"ang", "exc", "fru", "hap", "neu", "sad"}
    for name in ("acc", "f1", "precision", "recall", "auc", "wacc", "multiclass_acc", "weighted_f1"):
        assert 0.0 <= results["test"][name] <= 1.0
    assert len(results["thresholds"]) == 6 and all(0.05 <= t <= 0.95 for t in results["thresholds"])


def test_mesm_trains_on_the_demo(demo_iemocap_cache, demo_benchmark):
    """MESM as configs/demo/mesm.yaml trains it (the demo benchmark's run)."""
    run = demo_benchmark / "mesm-s0"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert results["config"]["model"]["name"] == "mesm"
    assert results["attention_mode"] == "trainable" and results["top_p"] == 0.5
    assert results["test"]["multiclass_acc"] >= _majority_accuracy(demo_iemocap_cache) + MARGIN
    assert (run / "checkpoints" / "best.pt").is_file()
    assert any((run / "tb").iterdir())


def test_eval_reproduces_the_test_metrics_at_stored_thresholds(runs, tav_checkpoint, capsys):
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(tav_checkpoint), "--split", "test"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["f1"] == pytest.approx(runs["tav"]["test"]["f1"], abs=1e-6)
    assert metrics["multiclass_acc"] == pytest.approx(runs["tav"]["test"]["multiclass_acc"], abs=1e-6)


def _mux(video: Path, audio: Path, out: Path) -> Path:
    """A clip with its audio as the video's own track (what a user's recording looks like)."""
    streams = [ffmpeg.input(str(video)).video, ffmpeg.input(str(audio)).audio]
    ffmpeg.output(*streams, str(out), vcodec="copy", acodec="aac").overwrite_output().run(
        cmd=imageio_ffmpeg.get_ffmpeg_exe(), quiet=True
    )
    return out


def test_predict_on_new_videos(tav_checkpoint, demo_iemocap_cache, tmp_path, capsys):
    ckpt = tav_checkpoint
    rows = [row for row in read_jsonl(demo_iemocap_cache / "manifest.jsonl") if row["split"] == "test"][:3]
    correct = 0
    for row in rows:
        clip = _mux(demo_iemocap_cache / row["video"], demo_iemocap_cache / row["audio"], tmp_path / "clip.mp4")
        capsys.readouterr()
        assert main(["predict", "--ckpt", str(ckpt), str(clip), "--text", row["text"]]) == 0
        lines = capsys.readouterr().out.splitlines()
        scores = {line.split()[0]: float(line.split()[1]) for line in lines[1:7]}
        assert set(scores) == {"ang", "exc", "fru", "hap", "neu", "sad"}
        assert all(0.0 <= value <= 1.0 for value in scores.values())
        correct += max(scores, key=scores.get) == row["label"]
    assert correct >= 2


def test_predict_on_a_time_range_with_separate_audio(tav_checkpoint, demo_data, capsys):
    ckpt = tav_checkpoint
    video = next((demo_data.raw_mosei / "Raw" / "Videos" / "Full" / "Combined").glob("*.mp4"))
    audio = demo_data.raw_mosei / "Raw" / "Audio" / "Full" / "WAV_16000" / f"{video.stem}.wav"
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--ckpt",
                str(ckpt),
                str(video),
                "--audio",
                str(audio),
                "--start",
                "0.5",
                "--end",
                "2.5",
                "--text",
                "this is wonderful",
            ]
        )
        == 0
    )
    assert "faces found in" in capsys.readouterr().out


def test_predict_errors_are_clear(tav_checkpoint, demo_iemocap_cache, tmp_path, capsys):
    ckpt = tav_checkpoint
    clip = next((demo_iemocap_cache / "video").glob("*.mp4"))  # clips carry no audio track
    silent_video = tmp_path / "silent.mp4"  # the same clip outside its reorganized folder: no wav to find
    shutil.copyfile(clip, silent_video)
    assert main(["predict", "--ckpt", str(ckpt), str(silent_video), "--text", "hello"]) == 2
    error = capsys.readouterr().err
    assert "silent.mp4" in error and "no audio stream" in error and "--audio" in error
    assert main(["predict", "--ckpt", str(ckpt), str(clip), "--text", "hello"]) == 0  # finds audio/<id>.wav
    assert (
        f"audio from its reorganized clip {demo_iemocap_cache / 'audio' / (clip.stem + '.wav')}"
        in capsys.readouterr().out
    )
    assert main(["predict", "--ckpt", str(ckpt), str(tmp_path / "missing.mp4"), "--text", "hi"]) == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_unknown_config_key_is_an_error_naming_it(tmp_path, capsys):
    assert main(["train", "--config", DEMO_FE2E, "--set", "train.epochz=3", "--out", str(tmp_path / "r")]) == 2
    assert "train.'epochz'" in capsys.readouterr().err


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    assert {"fe2e", "mesm"} <= set(capsys.readouterr().out.split())
