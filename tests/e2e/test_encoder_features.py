"""Foundation-encoder features for the feature models (``e2e features --audio-encoder --visual-encoder``),
with tiny random-weight ViT / wav2vec2 folders on the demo corpus; rebuilt when the weights change; read
from the face cache of another ``--face-size``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data_reorg.manifest import load_manifest
from e2e.cli import main
from e2e.config import ConfigError
from e2e.data.encoder_features import EncoderFaces, features_command, step_means, with_encoder_dims
from e2e.data.feature_cache import extract_features, feature_cache_dir, feature_path, feature_source
from e2e.data.feature_dataset import FeatureDataset
from e2e.data.hf_inputs import weights_fingerprint
from e2e.data.preprocess import cache_path, preprocess
from e2e.data.sequences import AUDIO_DIM
from e2e.models import load_config
from tests.helpers.executor_runs import first_utterances

AUDIO_HIDDEN, VISUAL_HIDDEN, TINY_BERT_HIDDEN = 24, 40, 32
TINY_VIT_HIDDEN = 32  # hf_inputs' tiny-vit


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


def save_vit(folder: Path, seed: int) -> str:
    """A 1-layer ViT of random weights (``seed``) saved to ``folder``, over what was there."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    small = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
    ViTModel(ViTConfig(**small, image_size=16, patch_size=8)).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def few(demo_iemocap_cache, tmp_path_factory) -> Path:
    """Three demo utterances whose 48 px face cache is the demo's (linked); other caches are their own."""
    corpus = first_utterances(demo_iemocap_cache, tmp_path_factory.mktemp("few"), {"train": 3})
    (corpus / "cache").unlink()
    (corpus / "cache").mkdir()
    (corpus / "cache" / "i500").symlink_to(demo_iemocap_cache / "cache" / "i500")
    return corpus


def visual_features(cache_dir: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """file name -> (visual features, source) of every file of ``cache_dir``."""
    result = {}
    for path in sorted(cache_dir.glob("*.npz")):
        with np.load(path) as archive:
            result[path.name] = archive["visual"], json.loads(str(archive["source"]))
    return result


def test_changed_encoder_weights_rebuild_the_features(few, tmp_path):
    folder = save_vit(tmp_path / "vit", seed=0)
    build = {"text_max_length": 8, "progress": False, "visual_encoder": folder}
    first = extract_features(few, "tiny-bert", **build)
    assert first.built == first.total == 3 and first.problems == []
    before = visual_features(first.cache_dir)
    unchanged = extract_features(few, "tiny-bert", **build)
    assert (unchanged.reused, unchanged.built) == (3, 0)
    save_vit(tmp_path / "vit", seed=1)  # same config and folder, other weights
    rebuilt = extract_features(few, "tiny-bert", **build)
    assert rebuilt.cache_dir == first.cache_dir and (rebuilt.reused, rebuilt.built) == (0, 3)
    after = visual_features(rebuilt.cache_dir)
    assert before.keys() == after.keys()
    for name, (visual, source) in after.items():
        old_visual, old_source = before[name]
        assert visual.shape == old_visual.shape and not np.allclose(visual, old_visual)
        assert source["visual_encoder"] == old_source["visual_encoder"] == folder
        assert source["visual_encoder_weights"] == weights_fingerprint(folder) != old_source["visual_encoder_weights"]


def test_weights_fingerprint_follows_the_files(tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder = save_vit(tmp_path / "vit", seed=0)
    fingerprint = weights_fingerprint(folder)
    copy = str(shutil.copytree(folder, tmp_path / "copy"))
    assert fingerprint.startswith("sha256:") and weights_fingerprint(copy) == fingerprint  # contents, not path
    (tmp_path / "copy" / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5]}', encoding="utf-8")
    assert weights_fingerprint(copy) != fingerprint
    # a Hub id: its snapshot in the HF cache, else (not cached) its name; tiny-*: a fixed tag
    hub = tmp_path / "hub"
    shutil.copytree(folder, hub / "models--someone--vit" / "snapshots" / "abc123")
    (hub / "models--someone--vit" / "refs").mkdir()
    (hub / "models--someone--vit" / "refs" / "main").write_text("abc123", encoding="utf-8")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert weights_fingerprint("someone/vit") == fingerprint
    assert weights_fingerprint("someone/other") == "someone/other"
    assert weights_fingerprint("tiny-vit") == weights_fingerprint("tiny-vit") != "tiny-vit"
    # the text model: its weights only for a local folder (the default ids' fingerprint stays as it was)
    row = {"sha256": {"video": "0"}}
    assert json.loads(feature_source(row, folder, 8))["text_weights"] == fingerprint
    default = {"clips": row["sha256"], "text_model": "tiny-bert", "max_length": 8}
    assert json.loads(feature_source(row, "tiny-bert", 8)) == default


def test_features_of_another_face_size(few, capsys):
    argv = ["features", str(few), "--text-model", "tiny-bert", "--text-max-length", "8", "--no-progress"]
    assert main([*argv, "--face-size", "32"]) == 2  # the O-Net substitute takes only the 48 px crops
    assert "--face-size / data.face_size=32 without a visual encoder" in capsys.readouterr().err
    build = {"text_max_length": 8, "progress": False, "visual_encoder": "tiny-vit", "face_size": 32}
    missing = extract_features(few, "tiny-bert", **build)
    assert missing.built == 0 and len(missing.problems) == 3
    assert all(f"run `e2e preprocess {few} --face-size 32` first" in problem["error"] for problem in missing.problems)
    assert preprocess(few, face_size=32, progress=False).problems == []
    summary = extract_features(few, "tiny-bert", **build)
    assert summary.built == 3 and summary.cache_dir.name == "tiny-bert-i500-f32-vtiny-vit"
    assert feature_cache_dir(few, "tiny-bert", 500, "", "tiny-vit", 48).name == "tiny-bert-i500-vtiny-vit"
    faces = EncoderFaces("tiny-vit")
    for row in load_manifest(few):
        with np.load(cache_path(few, 500, row["id"], face_size=32)) as archive:
            crops, found = archive["faces"], archive["face_found"]
        with np.load(feature_path(few, "tiny-bert", 500, row["id"], "", "tiny-vit", 32)) as archive:
            visual, source = archive["visual"], json.loads(str(archive["source"]))
        assert crops.shape[1:] == (32, 32, 3) and source["face_size"] == 32
        assert visual.shape == (len(crops), TINY_VIT_HIDDEN + 1) and np.allclose(visual, faces(crops, found), atol=1e-5)
    assert main([*argv, "--visual-encoder", "tiny-vit", "--face-size", "32"]) == 0
    assert "3 utterances, 0 built, 3 reused" in capsys.readouterr().out
    overrides = [f"data.data_dir={few}", "model.text_model=tiny-bert", "model.text_max_length=8", "data.face_size=32"]
    config = load_config("configs/demo/lf_lstm.yaml", [*overrides, "model.feature_visual_encoder=tiny-vit"])
    assert features_command(config).endswith("--visual-encoder tiny-vit --face-size 32")
    assert with_encoder_dims(config).model.input_dims == f"t={TINY_BERT_HIDDEN},a={AUDIO_DIM},v={TINY_VIT_HIDDEN + 1}"
    config = load_config("configs/demo/lf_lstm.yaml", [*overrides, "model.feature_audio_encoder=tiny-wav2vec2"])
    with pytest.raises(ConfigError, match="data.face_size=32 without a visual encoder"):
        with_encoder_dims(config)


def test_videomae_features_are_one_row_per_clip_of_frames():
    """VideoMAE (4 frames a clip here) gives a row per clip: the mean of its last hidden states and the share
    of the clip's frames with a face; the last clip is filled up with the utterance's last crop."""
    encoder = EncoderFaces("tiny-videomae")
    crops = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    rows = encoder(crops, np.array([1, 1, 0, 1, 0, 0]))
    assert rows.shape == (2, encoder.hidden_size + 1) and rows[:, -1].tolist() == [0.75, 0.0]
    last = crops[[4, 5, 5, 5]]  # the second clip: frames 4, 5 and 5 twice more
    assert np.allclose(encoder(last, np.zeros(4))[0, :-1], rows[1, :-1], atol=1e-5)
