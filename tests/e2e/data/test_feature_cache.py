"""Two-stage features (``e2e features``) and the FeatureDataset on the real-format demo corpus."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from data_reorg.io import read_jsonl
from data_reorg.manifest import load_manifest
from e2e.cli import main
from e2e.data.bundle import build_datasets
from e2e.data.feature_cache import extract_features, feature_cache_dir, feature_path
from e2e.data.feature_dataset import FeatureDataset, collate_features
from e2e.data.preprocess import cache_path
from e2e.data.sequences import AUDIO_DESCRIPTORS, AUDIO_DIM, VISUAL_DIM, audio_descriptors
from e2e.models import load_config, model_inputs

DEMO_CONFIG = "configs/demo/lf_trans.yaml"


def test_audio_descriptors_of_a_200_hz_tone():
    t = np.arange(16000) / 16000
    descriptors = audio_descriptors((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    assert descriptors.shape == (11, AUDIO_DIM)  # 1 + 16000 // 200 = 81 centred frames -> 11 steps of 8
    log_f0, voiced = AUDIO_DESCRIPTORS.index("log_f0"), AUDIO_DESCRIPTORS.index("voiced")
    inner = descriptors[1:-1]
    assert np.allclose(inner[:, voiced], 1.0)
    assert np.allclose(np.exp(inner[:, log_f0]), 200, rtol=0.02)


def test_feature_files_match_the_clips(demo_iemocap_features):
    rows = load_manifest(demo_iemocap_features)
    for row in rows[:10]:
        with np.load(feature_path(demo_iemocap_features, "minilm", 500, row["id"])) as archive:
            text, audio, visual = archive["text"], archive["audio"], archive["visual"]
        with np.load(cache_path(demo_iemocap_features, 500, row["id"])) as archive:
            frames, found = len(archive["faces"]), archive["face_found"]
        assert text.shape[1] == 384 and 3 <= len(text) <= 32  # CLS + words + SEP, max_length 32
        assert audio.shape[1] == AUDIO_DIM and abs(len(audio) - row["num_samples"] / 1600) <= 1.5
        assert visual.shape == (frames, VISUAL_DIM)
        assert np.isfinite(text).all() and np.isfinite(audio).all() and np.isfinite(visual).all()
        interocular = visual[:, 256 + 10]
        assert (interocular[found] > 0.1).all()  # eyes are apart on a detected 48 px face crop
        assert np.array_equal(visual[:, -1], found.astype(np.float32))


def test_rerun_reuses_and_bad_items_are_reported_by_id(demo_iemocap_features, tmp_path):
    copy = tmp_path / "iemocap"
    shutil.copytree(demo_iemocap_features, copy)
    summary = extract_features(copy, "minilm", 500, 32, progress=False)
    assert summary.built == 0 and summary.reused == summary.total
    rows = load_manifest(copy)
    broken, missing_audio = rows[0]["id"], rows[1]
    cache_path(copy, 500, broken).write_bytes(b"not a zip")
    for row in (rows[0], missing_audio):
        feature_path(copy, "minilm", 500, row["id"]).unlink()
    (copy / "audio" / f"{missing_audio['id']}.wav").unlink()
    summary = extract_features(copy, "minilm", 500, 32, progress=False)
    assert summary.built == 0 and {p["id"] for p in summary.problems} == {broken, missing_audio["id"]}
    problems = read_jsonl(feature_cache_dir(copy, "minilm", 500) / "problems.jsonl")
    assert any(broken in p["error"] for p in problems)
    other = extract_features(copy, "tiny-bert", 500, 32, progress=False)
    assert other.cache_dir != summary.cache_dir and other.built == other.total - 2


def test_cli_features_reports_counts(demo_iemocap_features, capsys):
    assert (
        main(
            [
                "features",
                str(demo_iemocap_features),
                "--text-model",
                "minilm",
                "--text-max-length",
                "32",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "144 reused" in capsys.readouterr().out
    # the text model and length of a config: the same cache as the demo configs use
    assert main(["features", str(demo_iemocap_features), "--config", str(DEMO_CONFIG), "--no-progress"]) == 0
    assert "144 reused" in capsys.readouterr().out


def test_dataset_standardises_with_train_statistics(demo_iemocap_features):
    config = load_config(DEMO_CONFIG, [f"data.data_dir={demo_iemocap_features}"])
    data = build_datasets(config, model_inputs(config.model.name))
    assert isinstance(data.train, FeatureDataset) and data.test.statistics is data.train.statistics
    audio = torch.cat([data.train[i]["a"] for i in range(len(data.train))])
    assert torch.allclose(audio.mean(0), torch.zeros(AUDIO_DIM), atol=1e-3)
    assert torch.allclose(audio.std(0, unbiased=False), torch.ones(AUDIO_DIM), atol=1e-3)
    batch = collate_features([data.test[0], data.test[1]])
    assert batch.text_features.shape[0] == batch.text_feature_lengths.sum() and batch.text_features.shape[1] == 384
    assert batch.visual_features.shape[1] == VISUAL_DIM and batch.faces is None


def test_missing_feature_files_are_skipped_with_a_hint(demo_iemocap_features, tmp_path):
    copy = tmp_path / "iemocap"
    shutil.copytree(demo_iemocap_features, copy)
    config = load_config(DEMO_CONFIG, [f"data.data_dir={copy}"])
    test_ids = [row["id"] for row in load_manifest(copy, "test")]
    feature_path(copy, "minilm", 500, test_ids[0]).unlink()
    dataset = FeatureDataset(copy, "test", config)
    assert dataset.skipped == {"missing_features": [test_ids[0]]}
    other_model = load_config(DEMO_CONFIG, [f"data.data_dir={copy}", "model.text_model=tiny-bert"])
    with pytest.raises(ValueError, match="no usable utterances"):
        FeatureDataset(copy, "test", other_model)
