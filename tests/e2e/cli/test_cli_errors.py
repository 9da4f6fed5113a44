"""Clear errors of the ``e2e`` commands: predict's inputs, devices, text models that cannot be had,
tables over run folders. Predict runs on a 1-epoch FE2E checkpoint of the demo
corpus (its quality is not the point here)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from data_reorg.io import read_jsonl
from e2e.cli import main
from e2e.config import ConfigError
from e2e.models import load_config

DEMO_FE2E = "configs/demo/fe2e.yaml"
BOGUS_TEXT_MODEL = "no-such-org/no-such-model"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")


@pytest.fixture(scope="module")
def short_run(demo_iemocap_cache, tmp_path_factory) -> Path:
    """A finished one-epoch FE2E run on the demo corpus (tiny text encoder, few frames and chunks)."""
    run_dir = tmp_path_factory.mktemp("short") / "fe2e-s0"
    overrides = [
        f"data.data_dir={demo_iemocap_cache}",
        "train.epochs=1",
        "train.progress=false",
        "model.text_model=tiny-bert",
        "data.max_frames=4",
        "data.max_chunks=8",
    ]
    assert (
        main(
            [
                "train",
                "--config",
                DEMO_FE2E,
                "--out",
                str(run_dir),
                *(arg for override in overrides for arg in ("--set", override)),
            ]
        )
        == 0
    )
    return run_dir


@pytest.fixture(scope="module")
def checkpoint(short_run) -> Path:
    return short_run / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def test_clip(demo_iemocap_cache) -> dict:
    return next(row for row in read_jsonl(demo_iemocap_cache / "manifest.jsonl") if row["split"] == "test")


def _predict(checkpoint: Path, video: Path, *extra: str) -> list[str]:
    return ["predict", "--ckpt", str(checkpoint), str(video), "--text", "I can't believe it", *extra]


def test_predict_takes_a_reorganized_clips_audio_from_its_wav(checkpoint, demo_iemocap_cache, test_clip, capsys):
    """Reorganized clips carry no audio track: ``DATA/video/<id>.mp4`` uses ``DATA/audio/<id>.wav`` and says so."""
    video = demo_iemocap_cache / test_clip["video"]
    assert main(_predict(checkpoint, video)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "has no audio stream: audio from its reorganized clip" in out
    assert str(demo_iemocap_cache / test_clip["audio"]) in out


def test_predict_on_a_video_without_audio_suggests_audio(checkpoint, demo_iemocap_cache, test_clip, tmp_path, capsys):
    video = shutil.copyfile(demo_iemocap_cache / test_clip["video"], tmp_path / "talk.mp4")
    assert main(_predict(checkpoint, video)) == 2
    err = capsys.readouterr().err
    assert f"{video}: the video has no audio stream" in err and "--audio" in err
    assert main(_predict(checkpoint, video, "--audio", str(tmp_path / "talk.wav"))) == 2
    assert f"{tmp_path / 'talk.wav'}: audio file is missing" in capsys.readouterr().err
    audio = demo_iemocap_cache / test_clip["audio"]
    assert main(_predict(checkpoint, video, "--audio", str(audio))) == 0
    assert "faces found in" in capsys.readouterr().out


@pytest.mark.parametrize(
    "span, message",
    [
        (("--start", "2", "--end", "1"), "--start 2.0 must be before --end 1.0"),
        (("--start", "1.5", "--end", "1.5"), "--start 1.5 must be before --end 1.5"),
        (("--start", "-1"), "--start -1.0 is before the start of the video"),
    ],
)
def test_predict_rejects_an_empty_or_negative_span(checkpoint, demo_iemocap_cache, test_clip, capsys, span, message):
    assert main(_predict(checkpoint, demo_iemocap_cache / test_clip["video"], *span)) == 2
    assert message in capsys.readouterr().err


def test_predict_refuses_a_feature_model_checkpoint(checkpoint, demo_iemocap_cache, test_clip, tmp_path, capsys):
    """Predict cannot build two-stage features for one new video: a feature model's checkpoint says so."""
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    stored["config"]["model"]["name"] = "mult"  # what a MulT run's checkpoint records
    torch.save(stored, tmp_path / "mult.pt")
    assert main(_predict(tmp_path / "mult.pt", demo_iemocap_cache / test_clip["video"])) == 2
    err = capsys.readouterr().err
    assert "predict needs an end-to-end model (fe2e, mesm" in err and "holds 'mult'" in err


@no_cuda
@pytest.mark.parametrize("command", ["preprocess", "features", "eval", "predict", "train"])
def test_cuda_on_a_machine_without_it_fails_first(command, checkpoint, demo_iemocap_cache, test_clip, tmp_path, capsys):
    args = {
        "preprocess": ["preprocess", str(demo_iemocap_cache), "--device", "cuda"],
        "features": ["features", str(demo_iemocap_cache), "--device", "cuda"],
        "eval": ["eval", "--ckpt", str(checkpoint), "--device", "cuda"],
        "predict": _predict(checkpoint, demo_iemocap_cache / test_clip["video"], "--device", "cuda"),
        "train": ["train", "--config", DEMO_FE2E, "--set", "train.device=cuda", "--out", str(tmp_path / "run")],
    }
    started = time.monotonic()
    assert main(args[command]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert time.monotonic() - started < 5  # before any data or model is loaded
    assert not (tmp_path / "run").exists()


@no_cuda
def test_sweep_jobs_check_their_device_when_planned(tmp_path):
    from e2e.experiments.jobs import make_job

    with pytest.raises(ConfigError, match="CUDA is not available"):
        make_job(tmp_path, "fe2e-s0", load_config(DEMO_FE2E, ["train.device=cuda"]))


@pytest.mark.parametrize("command", ["flops", "train"])
def test_a_text_model_that_cannot_be_had_fails_in_seconds_naming_it(command, tmp_path, capsys):
    args = ["--config", DEMO_FE2E, "--set", f"model.text_model={BOGUS_TEXT_MODEL}", "--set", "train.device=cpu"]
    args = [command, *args, "--out", str(tmp_path / "run")] if command == "train" else [command, *args]
    started = time.monotonic()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 15
    assert f"text model {BOGUS_TEXT_MODEL!r}" in err and "minilm" in err and "Traceback" not in err


def test_offline_mode_fails_without_asking_the_hub(monkeypatch):
    import huggingface_hub.constants

    from e2e.data import text

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(text, "model_info", lambda *args, **kwargs: pytest.fail("asked the Hub in offline mode"))
    with pytest.raises(ConfigError, match=f"text model '{BOGUS_TEXT_MODEL}'.*HF_HUB_OFFLINE"):
        text.load_tokenizer(BOGUS_TEXT_MODEL)


def test_loading_a_text_model_shows_no_progress_bar(capfd):
    from e2e.data.text import load_text_encoder

    load_text_encoder("minilm")
    assert "Loading weights" not in capfd.readouterr().err


def test_table_over_a_sweep_folder_skips_what_is_not_a_finished_run(short_run, capsys):
    """``e2e table OUT/*`` over a real run, the sweep's jobs.json and a run that has not finished an epoch."""
    out = short_run.parent
    (out / "jobs.json").write_text("[]\n", encoding="utf-8")
    (out / "fe2e-s1").mkdir(exist_ok=True)
    (out / "fe2e-s1" / "config.yaml").write_text((short_run / "config.yaml").read_text(encoding="utf-8"))
    assert main(["table", *sorted(str(path) for path in out.iterdir())]) == 0
    captured = capsys.readouterr()
    assert "iemocap test Acc/F1" in captured.out and "| fe2e-s0 | fe2e (tav) |" in captured.out
    assert f"e2e: skipped {out / 'jobs.json'}: not a run directory" in captured.err
    assert f"e2e: skipped {out / 'fe2e-s1'}: the run has no finished epoch" in captured.err
