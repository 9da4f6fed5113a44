"""Hugging Face speech / vision encoders in FE2E and MESM (e2e/models/layers/hf_encoders.py): tiny random-weight
models saved with save_pretrained and loaded by path through the real code path; freezing, normalisation,
lr groups, errors, and 1-epoch training on the demo corpus with and without token pruning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from e2e.config import ConfigError, TrainConfig, UsageError
from e2e.models import build_model, load_config
from e2e.models.layers.hf_encoders import IMAGENET_MEAN, EncoderOptions, HFEncoder
from e2e.training.optim import build_optimizer

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
SPEECH_CONVS = {
    "conv_dim": (16, 16, 16),
    "conv_kernel": (10, 8, 8),
    "conv_stride": (5, 8, 8),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


def save_tiny_models(root: Path, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Random-weight tiny encoder folders (and a BERT, the wrong kind) under ``root``: ``names`` or all."""
    from transformers import (
        BertConfig,
        BertModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        Data2VecAudioConfig,
        Data2VecAudioModel,
        Dinov2Config,
        Dinov2Model,
        HubertConfig,
        HubertModel,
        SiglipVisionConfig,
        SiglipVisionModel,
        ViTConfig,
        ViTModel,
        Wav2Vec2Config,
        Wav2Vec2Model,
        WavLMConfig,
        WavLMModel,
    )

    torch.manual_seed(0)
    models = {
        "vit": ViTModel(ViTConfig(**SMALL, image_size=48, patch_size=8)),
        "clip": CLIPVisionModel(CLIPVisionConfig(**SMALL, image_size=32, patch_size=8)),
        "wav2vec2": Wav2Vec2Model(Wav2Vec2Config(**SMALL, **SPEECH_CONVS)),
        "wavlm": WavLMModel(WavLMConfig(**SMALL, **SPEECH_CONVS, num_buckets=16, max_bucket_distance=32)),
        "bert": BertModel(BertConfig(**SMALL, vocab_size=100)),
        "dinov2": Dinov2Model(Dinov2Config(**SMALL, image_size=48, patch_size=8)),
        "siglip": SiglipVisionModel(SiglipVisionConfig(**SMALL, image_size=48, patch_size=8)),
        "hubert": HubertModel(HubertConfig(**SMALL, **SPEECH_CONVS)),
        "data2vec-audio": Data2VecAudioModel(Data2VecAudioConfig(**SMALL, **SPEECH_CONVS)),
        "wav2vec2-stable": Wav2Vec2Model(
            Wav2Vec2Config(**SMALL, **SPEECH_CONVS, do_stable_layer_norm=True, feat_extract_norm="layer")
        ),
    }
    folders = {}
    for name, model in models.items():
        if names is not None and name not in names:
            continue
        model.save_pretrained(root / name)
        folders[name] = str(root / name)
    if "clip" in folders:
        (root / "clip" / "preprocessor_config.json").write_text(
            json.dumps({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2]}), encoding="utf-8"
        )
    if "wav2vec2" in folders:
        (root / "wav2vec2" / "preprocessor_config.json").write_text(
            json.dumps({"do_normalize": False}), encoding="utf-8"
        )
    return folders


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    return save_tiny_models(tmp_path_factory.mktemp("encoders"))


def _encoder(folder: str, kind: str, **options) -> HFEncoder:
    return HFEncoder(EncoderOptions(folder, f"model.{kind}_encoder", **options), kind, None)


def test_normalisation_follows_the_checkpoint_preprocessor(folders):
    clip, vit = _encoder(folders["clip"], "visual"), _encoder(folders["vit"], "visual")
    assert clip.pixel_mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert vit.pixel_mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN) and "ImageNet" in vit.normalisation
    faces = torch.rand(3, 3, 48, 48)
    assert clip.prepare(faces).shape == (3, 3, 32, 32)  # resized to the encoder's resolution
    raw, normalised = _encoder(folders["wav2vec2"], "audio"), _encoder(folders["wavlm"], "audio")
    audio = 3 + 2 * torch.randn(2, 4000)
    assert torch.equal(raw.prepare(audio), audio)  # do_normalize: false
    prepared = normalised.prepare(audio)  # no feature extractor: zero mean, unit variance per chunk
    assert prepared.mean(1).abs().max() < 1e-4 and (prepared.std(1, unbiased=False) - 1).abs().max() < 1e-3


LAYER_BY_LAYER = [
    ("vit", "visual"),
    ("clip", "visual"),
    ("dinov2", "visual"),
    ("siglip", "visual"),
    ("wav2vec2", "audio"),
    ("wav2vec2-stable", "audio"),
    ("hubert", "audio"),
    ("data2vec-audio", "audio"),
]


@pytest.mark.parametrize(("model", "kind"), LAYER_BY_LAYER)
def test_layer_by_layer_run_equals_the_models_own_forward(folders, model, kind):
    """Every pooled hidden state of the layer-by-layer run (which pruning needs) is the model's own."""
    encoder = _encoder(folders[model], kind).eval()
    inputs = torch.rand(2, 3, 48, 48) if kind == "visual" else torch.randn(2, 8000)
    prepared = encoder.prepare(inputs)
    with torch.no_grad():
        reference = encoder.backbone(prepared, output_hidden_states=True)
        pooled, _ = encoder._layer_by_layer(prepared, None)
    states = list(reference.hidden_states)
    # the last state after the final norm: CLIP applies its post-LayerNorm to the pooled CLS only (per token)
    last = reference.last_hidden_state
    states[-1] = encoder.backbone.post_layernorm(last) if model == "clip" else last
    for mine, theirs in zip(pooled, states, strict=True):
        expected = theirs[:, 0] if encoder.pool_cls else theirs.mean(1)
        assert torch.allclose(mine, expected, atol=1e-5)


def test_weighted_layer_sum_learns(folders):
    encoder = _encoder(folders["wavlm"], "audio")  # through the model's own forward (output_hidden_states)
    assert encoder.layer_logits.shape == (3,)
    features, traces = encoder(torch.randn(2, 4000))
    assert features.shape == (2, 32) and traces == []
    features.square().sum().backward()
    assert encoder.layer_logits.grad.abs().sum() > 0


@pytest.mark.parametrize("freeze", ["all", "none", "first_n"])
def test_freeze_modes_freeze_the_right_parameters(folders, freeze):
    encoder = _encoder(folders["vit"], "visual", freeze=freeze, freeze_layers=1)
    trainable = {name for name, p in encoder.backbone.named_parameters() if p.requires_grad}
    everything = {name for name, _ in encoder.backbone.named_parameters()}
    if freeze == "all":
        assert trainable == set()
    elif freeze == "none":
        assert trainable == everything
    else:
        assert trainable == {n for n in everything if n.startswith(("layers.1.", "layernorm."))}
    assert encoder.layer_logits.requires_grad


def test_bad_ids_and_options_are_errors_naming_them(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"model.audio_encoder=.*empty"):
        _encoder(str(tmp_path / "empty"), "audio")
    with pytest.raises(ConfigError, match=r"model.visual_encoder=.*'bert' model"):
        _encoder(folders["bert"], "visual")
    with pytest.raises(ConfigError, match=r"'vit' model, not a supported audio encoder"):
        _encoder(folders["vit"], "audio")
    with pytest.raises(ConfigError, match="first_n"):
        load_config("configs/demo-encoders/fe2e.yaml", ["model.encoder_freeze=some"])
    with pytest.raises(ConfigError, match="audio_encoder must be str"):
        load_config("configs/demo-encoders/fe2e.yaml", ["model.audio_encoder=3"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("configs/demo-encoders/fe2e.yaml", ["model.audio_encoders=vgg"])


def test_encoders_get_their_own_lr_group(folders):
    config = load_config(
        "configs/demo-encoders/mesm.yaml",
        [f"model.audio_encoder={folders['wav2vec2']}", "model.encoder_lr_factor=0.25", "model.text_model=tiny-bert"],
    )
    model = build_model(config.model, ["a", "b"])
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3, text_lr_factor=0.5))
    groups = {round(group["lr"], 8): {id(p) for p in group["params"]} for group in optimizer.param_groups}
    backbones = {id(p) for modality in "av" for p in model.cnns[modality].backbone.parameters()}
    assert groups[2.5e-4] == backbones
    assert groups[2.5e-4] | groups[5e-4] | groups[1e-3] == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("config", ["fe2e", "mesm"])
def test_trains_one_epoch_on_the_demo_corpus(demo_iemocap_cache, folders, tmp_path, config):
    """A tiny wav2vec2 loaded by path with, in FE2E (no pruning), a tiny VideoMAE on clips of 4 face crops, and
    in MESM (pruning after layer 1), a tiny ViT loaded by path."""
    from e2e.cli import main

    out = tmp_path / "run"
    visual = "tiny-videomae" if config == "fe2e" else folders["vit"]
    overrides = [
        f"data.data_dir={demo_iemocap_cache}",
        f"model.audio_encoder={folders['wav2vec2']}",
        f"model.visual_encoder={visual}",
        "model.text_model=tiny-bert",
        "train.epochs=1",
        "train.progress=false",
        "data.batch_size=16",
        "data.max_frames=2",
        "data.max_chunks=2",
    ]
    args = ["train", "--config", f"configs/demo-encoders/{config}.yaml", "--out", str(out)]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["config"]["model"]["audio_encoder"] == folders["wav2vec2"]
    assert results["config"]["model"]["visual_encoder"] == visual
    assert 0.0 <= results["test"]["multiclass_acc"] <= 1.0 and results["epochs_completed"] == 1
    if config == "mesm":  # one pruning step per modality: the share of scored tokens top-p kept
        kept = results["kept_fraction"]
        assert set(kept) == {"a", "v"} and all(len(steps) == 1 and 0 < steps[0] < 1 for steps in kept.values())
    _check_flops_and_maps(out, demo_iemocap_cache, pruned=config == "mesm")


def _check_flops_and_maps(run: Path, data_dir: Path, pruned: bool) -> None:
    """``e2e flops`` counts every encoder layer with the tokens it ran on; ``e2e visualize`` draws MESM's kept
    tokens (one pruning step per modality)."""
    from data_reorg.manifest import load_manifest
    from e2e.analysis.flops import measure_flops
    from e2e.reporting.attention_maps import visualize
    from e2e.training.checkpoint import load_checkpoint, model_from_checkpoint

    checkpoint = load_checkpoint(run / "checkpoints" / "best.pt")
    config, model = model_from_checkpoint(checkpoint, run)
    report = measure_flops(config, data_dir, max_utterances=4, state_dict=model.state_dict())
    layers = {(row["modality"], row["layer"]): row["active_fraction"] for row in report["layers"]}
    assert set(layers) == {(m, name) for m in "av" for name in ("layers.1", "layers.2", "embeddings")}
    assert layers[("v", "layers.1")] == 1.0 and report["attention_gflops"] >= 0
    if not pruned:
        assert layers[("v", "layers.2")] == 1.0 and report["ratio"] == pytest.approx(1.0)
        return
    assert 0 < layers[("v", "layers.2")] < 1 and 0 < layers[("a", "layers.2")] < 1 and report["ratio"] < 1
    test_id = next(row["id"] for row in load_manifest(data_dir, "test"))
    maps = visualize(run / "checkpoints" / "best.pt", [test_id], run / "maps", data_dir)
    assert Path(maps["images"][0]).is_file()
    assert {m: len(steps) for m, steps in maps["density"]["per_utterance"][test_id].items()} == {"a": 1, "v": 1}


def test_prune_modalities_leaves_an_unprunable_encoder_whole(folders):
    overrides = [
        f"model.audio_encoder={folders['wavlm']}",
        f"model.visual_encoder={folders['vit']}",
        "model.text_model=tiny-bert",
        "model.prune_layers=1",
    ]
    with pytest.raises(UsageError, match=r"model.audio_encoder=.*wavlm"):
        build_model(load_config("configs/demo-encoders/mesm.yaml", overrides).model, ["a", "b"])
    config = load_config("configs/demo-encoders/mesm.yaml", [*overrides, "model.prune_modalities=v"])
    model = build_model(config.model, ["a", "b"])
    assert list(model.cnns["v"].pruners) == ["1"] and not model.cnns["a"].pruners


def test_whisper_encoder_pools_only_the_frames_of_its_chunk(tmp_path):
    """Whisper's encoder (of a full Whisper checkpoint) gets its log-mel over its fixed window (here 1 s:
    50 positions); a chunk of half the window is pooled over its own 25 frames, the padding left out."""
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    whisper = {"encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_layers": 1}
    config = WhisperConfig(
        d_model=32, **whisper, decoder_attention_heads=2, decoder_ffn_dim=64, max_source_positions=50
    )
    WhisperModel(config).save_pretrained(tmp_path / "whisper")
    encoder = HFEncoder(EncoderOptions(str(tmp_path / "whisper"), "model.audio_encoder"), "audio", None).eval()
    assert type(encoder.backbone).__name__ == "WhisperEncoder" and encoder.normalisation.startswith("Whisper")
    chunks = torch.randn(3, 8000)
    with torch.no_grad():
        vectors, traces = encoder(chunks)
        states = encoder.backbone(encoder.prepare(chunks), output_hidden_states=True).hidden_states
    assert vectors.shape == (3, 32) and traces == [] and encoder.valid_tokens == 25
    expected = torch.stack([state[:, :25].mean(1) for state in states]).mean(0)  # layer weights start equal
    assert torch.allclose(vectors, expected, atol=1e-5)
    with pytest.raises(UsageError, match="exceed Whisper's window of 16000 samples"):
        encoder(torch.randn(1, 16001))


def test_videomae_encodes_clips_of_consecutive_face_crops():
    """VideoMAE takes a fixed number of frames (the tiny one: 4): an utterance's frames are cut into
    consecutive clips, the last one filled up with its last frame, and each clip is one step of the temporal
    transformer, pooled over its tokens; pruning it is refused (its attention takes no padding mask)."""
    torch.manual_seed(0)
    encoder = _encoder("tiny-videomae", "visual").eval()
    faces, lengths = torch.rand(9, 3, 48, 48), torch.tensor([3, 6])
    clips, counts = encoder.clips(faces, lengths)
    assert clips.shape == (3, 4, 3, 48, 48) and counts.tolist() == [1, 2]
    assert torch.equal(clips[0, 3], faces[2]) and torch.equal(clips[2, :2], faces[7:9])
    assert torch.equal(clips[2, 3], faces[8])
    with torch.no_grad():
        vectors, traces = encoder(clips)
        states = encoder.backbone(encoder.prepare(clips), output_hidden_states=True).hidden_states
    expected = torch.stack([state.mean(1) for state in states]).mean(0)  # layer weights start equal
    assert vectors.shape == (3, 32) and traces == [] and torch.allclose(vectors, expected, atol=1e-5)
    with pytest.raises(UsageError, match=r"token pruning .* not 'videomae'"):
        HFEncoder(EncoderOptions("tiny-videomae", "model.visual_encoder", prune_layers=1), "visual", 32)
