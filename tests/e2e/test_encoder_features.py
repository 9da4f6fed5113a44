"""Foundation-encoder features for the feature models (``e2e features --audio-encoder --visual-encoder``),
with tiny random-weight ViT / wav2vec2 folders on the demo corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_reorg.manifest import load_manifest
from e2e.cli import main
from e2e.config import ConfigError
from e2e.data.encoder_features import step_means, with_encoder_dims
from e2e.data.feature_cache import extract_features, feature_cache_dir, feature_path
from e2e.data.feature_dataset import FeatureDataset
from e2e.data.preprocess import cache_path
from e2e.models import load_config

AUDIO_HIDDEN, VISUAL_HIDDEN, TINY_BERT_HIDDEN = 24, 40, 32


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> tuple[str, str]:
    """(wav2vec2 folder, ViT folder), random weights, each with its preprocessor_config.json."""
    from transformers import ViTConfig, ViTModel, Wav2Vec2Config, Wav2Vec2Model

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    small = {"num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    audio = Wav2Vec2Model(
        Wav2Vec2Config(
            hidden_size=AUDIO_HIDDEN,
            **small,
            conv_dim=(8, 8, 8),
            conv_kernel=(10, 8, 8),
            conv_stride=(5, 8, 8),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        )
    )
    visual = ViTModel(ViTConfig(hidden_size=VISUAL_HIDDEN, **small, image_size=32, patch_size=8))
    processors = {"audio": {"do_normalize": True}, "visual": {"image_mean": [0.5] * 3, "image_std": [0.25] * 3}}
    for name, model in (("audio", audio), ("visual", visual)):
        model.save_pretrained(root / name)
        (root / name / "preprocessor_config.json").write_text(json.dumps(processors[name]), encoding="utf-8")
    return str(root / "audio"), str(root / "visual")


@pytest.fixture(scope="module")
def encoder_cache(demo_iemocap_cache, encoders) -> Path:
    summary = extract_features(demo_iemocap_cache, "tiny-bert", 500, 32, False, "cpu", None, False, *encoders)
    assert summary.problems == [] and summary.built == summary.total
    return summary.cache_dir


def test_step_means_follow_the_100_ms_steps():
    frames = np.arange(12, dtype=np.float32)[:, None]  # 20 ms frames: 5 per step, the last step has 2
    assert step_means(frames, 320).ravel().tolist() == [2.0, 7.0, 10.5]


def test_encoder_features_have_the_encoders_sizes(demo_iemocap_cache, encoders, encoder_cache):
    from transformers import ViTModel

    assert encoder_cache != feature_cache_dir(demo_iemocap_cache, "tiny-bert", 500)
    assert encoder_cache == feature_cache_dir(demo_iemocap_cache, "tiny-bert", 500, *encoders)
    vit = ViTModel.from_pretrained(encoders[1]).eval()
    for row in load_manifest(demo_iemocap_cache)[:6]:
        with np.load(feature_path(demo_iemocap_cache, "tiny-bert", 500, row["id"], *encoders)) as archive:
            text, audio, visual, source = (archive[k] for k in ("text", "audio", "visual", "source"))
        with np.load(cache_path(demo_iemocap_cache, 500, row["id"])) as archive:
            faces, found = archive["faces"], archive["face_found"]
        assert text.shape[1] == TINY_BERT_HIDDEN and json.loads(str(source))["visual_encoder"] == encoders[1]
        assert audio.shape[1] == AUDIO_HIDDEN and abs(len(audio) - row["num_samples"] / 1600) <= 1.5
        assert visual.shape == (len(faces), VISUAL_HIDDEN + 1) and np.isfinite(audio).all()
        assert np.array_equal(visual[:, -1], found.astype(np.float32))
        # the first frame: 48 px crop resized to 32 px, the processor's mean / std, the CLS token
        face = torch.from_numpy(faces[:1]).permute(0, 3, 1, 2).float() / 255
        face = torch.nn.functional.interpolate(face, size=(32, 32), mode="bilinear", align_corners=False)
        with torch.no_grad():
            cls = vit(pixel_values=(face - 0.5) / 0.25).last_hidden_state[0, 0].numpy()
        assert np.allclose(visual[0, :-1], cls, atol=1e-4)


def test_a_feature_model_trains_on_encoder_features(demo_iemocap_cache, encoders, encoder_cache, tmp_path):
    from e2e.training.trainer import train

    overrides = [
        f"data.data_dir={demo_iemocap_cache}",
        "model.text_model=tiny-bert",
        f"model.feature_audio_encoder={encoders[0]}",
        f"model.feature_visual_encoder={encoders[1]}",
        "train.epochs=1",
        "train.progress=false",
        "train.device=cpu",
    ]
    config = load_config("configs/demo/lf_lstm.yaml", overrides)
    with pytest.raises(ConfigError, match="model.input_dims"):  # not recorded: the model would get other sizes
        FeatureDataset(demo_iemocap_cache, "train", config)
    results = train(config, tmp_path / "run")  # train reads the sizes from the cache and records them
    assert results["epochs_completed"] == 1 and results["test"] and "missing_features" not in str(results["skipped"])
    dims = f"t={TINY_BERT_HIDDEN},a={AUDIO_HIDDEN},v={VISUAL_HIDDEN + 1}"
    assert results["config"]["model"]["input_dims"] == with_encoder_dims(config).model.input_dims == dims


def test_missing_cache_and_bad_ids_name_the_fix(demo_iemocap_cache, encoders, capsys):
    config = load_config(
        "configs/demo/lf_lstm.yaml",
        [f"data.data_dir={demo_iemocap_cache}", "model.feature_visual_encoder=tiny-clip-vision"],
    )
    with pytest.raises(ConfigError, match=r"run `e2e features .* --visual-encoder tiny-clip-vision`"):
        with_encoder_dims(config)
    with pytest.raises(ConfigError, match="only for data.source files"):
        load_config("configs/demo/lf_lstm.yaml", ["model.input_dims=t=1,a=2,v=3"])
    bad = str(Path(encoders[0]).parent / "no-such-encoder")
    argv = ["features", str(demo_iemocap_cache), "--text-model", "tiny-bert", "--no-progress"]
    assert main([*argv, "--audio-encoder", bad]) != 0
    assert "--audio-encoder='" + bad in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"--visual-encoder=.*'wav2vec2' model, not a supported visual encoder"):
        extract_features(demo_iemocap_cache, "tiny-bert", 500, 32, progress=False, visual_encoder=encoders[0])
