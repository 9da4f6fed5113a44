"""LF-LSTM and LF-TRANS are the official late-fusion baselines: one encoder and one classifier per
modality, learned weights over the modality logits, the official sizes, padding never read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from e2e.data.batch import Batch
from e2e.data.sequences import feature_dims
from e2e.models import build_model, load_config, model_options
from tests.helpers.features import NUM_CLASSES, TEXT_MODEL, feature_batch

CLASS_NAMES = ["ang", "exc", "fru", "hap", "neu", "sad"]
DIMS = feature_dims(TEXT_MODEL)  # t 32, a 28, v 274
MODELS = ("lf_lstm", "lf_trans")


def _build(name: str, class_names=CLASS_NAMES, **options) -> nn.Module:
    """The model with its official options (LF-TRANS with FFN 64, to stay small), then ``options``."""
    torch.manual_seed(0)
    small = {"temporal_ffn": 64} if name == "lf_trans" else {}
    config = model_options(name)(text_model=TEXT_MODEL, **{**small, **options})
    return build_model(config, class_names).eval()


def _subset(batch: Batch, keep: list[int]) -> Batch:
    """The utterances ``keep`` of ``batch`` as a batch of their own (so its padding is shorter)."""
    fields = {}
    for name in ("text", "audio", "visual"):
        packed, lengths = getattr(batch, f"{name}_features"), getattr(batch, f"{name}_feature_lengths")
        rows = packed.split(lengths.tolist())
        fields[f"{name}_features"] = torch.cat([rows[i] for i in keep])
        fields[f"{name}_feature_lengths"] = lengths[keep]
    return Batch(ids=[batch.ids[i] for i in keep], labels=batch.labels[keep], **fields)


def test_lf_lstm_has_the_official_structure():
    model = _build("lf_lstm")
    assert list(model.encoders) == ["t", "a", "v"]
    for modality, encoder in model.encoders.items():
        lstm = encoder.lstm
        assert (lstm.input_size, lstm.hidden_size) == (DIMS[modality], DIMS[modality])  # hidden = feature size
        assert lstm.num_layers == 1 and lstm.bidirectional
        head = model.heads[modality]
        assert [type(layer) for layer in head] == [nn.Linear, nn.ReLU, nn.Linear]  # no dropout
        assert (head[0].in_features, head[0].out_features) == (2 * DIMS[modality], DIMS[modality])
        assert head[2].out_features == NUM_CLASSES
    assert model.fusion.weights.weight.shape == (1, 3) and model.fusion.weights.bias is None


def test_lf_lstm_unidirectional_heads_halve_the_feature_size():
    model = _build("lf_lstm", bidirectional=False)
    assert model.heads["a"][0].in_features == DIMS["a"] and model.heads["a"][0].out_features == DIMS["a"] // 2


def test_lf_trans_has_the_official_structure():
    model = _build("lf_trans")
    widths = {"t": 32, "a": 28, "v": 275}  # no projection; visual 274 padded to a multiple of its 5 heads
    heads = {"t": 4, "a": 2, "v": 5}
    for modality, encoder in model.encoders.items():
        assert encoder.out_features == widths[modality] and encoder.cls.shape == (widths[modality],)
        assert len(encoder.encoder.layers) == 2
        attention = encoder.encoder.layers[0].self_attn
        assert (attention.embed_dim, attention.num_heads) == (widths[modality], heads[modality])
        assert model.heads[modality][0].in_features == widths[modality]
        assert not any(isinstance(layer, nn.Dropout) for layer in model.heads[modality])


def test_lf_trans_reads_the_cls_output_and_has_no_positions_by_default():
    """Without positions the CLS output cannot depend on step order; with them it does."""
    batch = feature_batch(batch_size=4, max_length=6)
    reversed_batch = _reverse_steps(batch)
    for positional, order_matters in ((False, False), (True, True)):
        model = _build("lf_trans", positional_encoding=positional)
        with torch.no_grad():
            same = torch.allclose(model(batch).logits, model(reversed_batch).logits, atol=1e-4)
        assert same is not order_matters
    model = _build("lf_trans")
    with torch.no_grad():
        before = model(batch).logits
        model.encoders["a"].cls.add_(1.0)
        assert not torch.allclose(model(batch).logits, before, atol=1e-4)


def _reverse_steps(batch: Batch) -> Batch:
    fields = {}
    for name in ("text", "audio", "visual"):
        packed, lengths = getattr(batch, f"{name}_features"), getattr(batch, f"{name}_feature_lengths")
        fields[f"{name}_features"] = torch.cat([rows.flip(0) for rows in packed.split(lengths.tolist())])
        fields[f"{name}_feature_lengths"] = lengths
    return Batch(ids=batch.ids, labels=batch.labels, **fields)


@pytest.mark.parametrize("name", MODELS)
def test_padding_never_changes_a_prediction(name):
    """An utterance's logits are the same alone and next to longer utterances (official text padding was read)."""
    batch = feature_batch(batch_size=6, max_length=9)
    shortest = int(batch.text_feature_lengths.argmin())
    model = _build(name)
    with torch.no_grad():
        together = model(batch).logits[shortest]
        alone = model(_subset(batch, [shortest])).logits[0]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_fused_logits_are_the_learned_weighting_of_the_modality_logits(name):
    model, batch = _build(name), feature_batch()
    with torch.no_grad():
        model.fusion.weights.weight.copy_(torch.tensor([[0.5, 0.0, 2.0]]))
        output = model(batch)
    logits = output.extras["modality_logits"]
    assert list(logits) == ["t", "a", "v"]
    torch.testing.assert_close(output.logits, 0.5 * logits["t"] + 2.0 * logits["v"])


@pytest.mark.parametrize("name", MODELS)
def test_one_modality_gives_its_own_logits_without_fusion(name):
    model = _build(name, modalities="a")
    assert model.fusion is None and list(model.encoders) == ["a"]
    with torch.no_grad():
        output = model(feature_batch())
    torch.testing.assert_close(output.logits, output.extras["modality_logits"]["a"])


@pytest.mark.parametrize("name", MODELS)
def test_fusion_init_torch_is_the_linear_default_and_average_is_one_over_m(name):
    torch_weights = _build(name).fusion.weights.weight
    assert torch_weights.abs().max() <= 3**-0.5 and torch_weights.unique().numel() == 3
    average = _build(name, fusion_init="average").fusion.weights.weight
    torch.testing.assert_close(average, torch.full((1, 3), 1 / 3))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("targets", [["sentiment"], ["valence", "activation", "dominance"]])
def test_regression_outputs_one_value_per_target(name, targets):
    model = _build(name, class_names=targets)
    with torch.no_grad():
        assert model(feature_batch()).logits.shape == (12, len(targets))


@pytest.mark.parametrize("name", MODELS)
def test_the_paper_preset_is_the_readme_command(name):
    config = load_config(f"configs/iemocap/{name}.yaml")
    train = config.train
    assert (config.data.batch_size, train.lr, train.epochs, train.early_stop_patience) == (32, 5e-4, 60, 8)
    assert (train.grad_clip, train.bf16, train.scheduler) == (2.0, False, "none")
    assert config.model == model_options(name)(text_model="albert-base-v2", text_max_length=100)
