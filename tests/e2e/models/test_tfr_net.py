"""TFR-Net's paper structure: pairwise cross-modal and intra-modal transformers, the temporal-axis
transformer before reconstruction, C-GATE fusion, the fixed seeded missing-input protocol, the causal
mask and the weighted reconstruction loss."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from e2e.data.batch import Batch
from e2e.models import build_model, load_config
from e2e.models.layers.crossmodal import future_mask
from e2e.models.layers.mult_transformer import MulTEncoder, official_positions
from e2e.models.layers.sequence import padded_features
from e2e.models.tfr_net import CGate, TFRNetConfig, fixed_step_mask, official_encoder, reconstruction_loss
from tests.helpers.features import NUM_CLASSES, feature_batch, small_config

CLASSES = list("abcdef")


def _model(**overrides) -> nn.Module:
    torch.manual_seed(0)
    return build_model(small_config("tfr_net", **overrides), CLASSES)


def _subset(batch: Batch, rows: list[int]) -> Batch:
    """The utterances ``rows`` of ``batch``, repacked (a different batch composition and padding)."""
    fields = {"ids": [batch.ids[r] for r in rows], "labels": batch.labels[rows]}
    for name in ("text", "audio", "visual"):
        packed, lengths = getattr(batch, f"{name}_features"), getattr(batch, f"{name}_feature_lengths")
        starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        fields[f"{name}_features"] = torch.cat([packed[starts[r] : starts[r + 1]] for r in rows])
        fields[f"{name}_feature_lengths"] = lengths[rows]
    return Batch(**fields)


def test_the_options_are_the_official_sizes():
    options = TFRNetConfig()
    assert (options.d_model, options.temporal_heads, options.temporal_layers) == (30, 6, 3)
    assert (options.intra_layers, options.temporal_axis_layers, options.temporal_ffn) == (3, 3, 120)
    assert (options.fusion_text_hidden, options.fusion_audio_hidden, options.fusion_visual_hidden) == (36, 20, 48)
    assert (options.missing_rate, options.train_missing_rate, options.causal_attention) == (0.2, 0.0, True)


def test_pairwise_crossmodal_intra_and_temporal_axis_transformers():
    model = _model()
    assert set(model.crossmodal) == {"a_to_t", "v_to_t", "t_to_a", "v_to_a", "t_to_v", "a_to_v"}
    assert set(model.intra) == set(model.temporal_axis) == {"t", "a", "v"}
    width = 3 * 16  # the three streams of each modality, concatenated
    assert all(encoder.norm.normalized_shape == (width,) for encoder in model.temporal_axis.values())
    assert all(head.in_features == width for head in model.reconstruct.values())
    assert not any(encoder.positions for encoder in model.temporal_axis.values())
    assert all(encoder.positions for encoder in [*model.intra.values(), *model.crossmodal.values()])


def test_every_encoder_is_the_official_one_with_fairseq_positions_except_the_temporal_axis():
    model = _model().eval()  # no embedding dropout
    ones = torch.ones(1, 3, 16)
    for encoder in [*model.intra.values(), *model.crossmodal.values()]:
        assert isinstance(encoder, MulTEncoder)
        torch.testing.assert_close(encoder.embed(ones), 4.0 * ones + official_positions(3, 16))
    wide = torch.ones(1, 3, 48)
    for encoder in model.temporal_axis.values():
        torch.testing.assert_close(encoder.embed(wide), math.sqrt(48) * wide)  # scaled, no positions


def test_attention_and_ffn_start_xavier_uniform_with_zero_biases():
    model = _model()
    for encoder in [*model.intra.values(), *model.crossmodal.values(), *model.temporal_axis.values()]:
        for block in encoder.blocks:
            layers = (block.attention.out_proj, block.fc1, block.fc2)
            for weight in (block.attention.in_proj_weight, *(layer.weight for layer in layers)):
                fan_out, fan_in = weight.shape  # in_proj: one Xavier draw over all three projections, as officially
                bound = math.sqrt(6.0 / (fan_in + fan_out))  # torch's default Linear bound is 1 / sqrt(fan_in)
                assert 0.8 * bound < weight.abs().max() <= bound
            for bias in (block.attention.in_proj_bias, *(layer.bias for layer in layers)):
                assert not bias.any()


def test_the_embedding_dropout_draws_separately_for_keys_and_values():
    encoder = official_encoder(16, 1, small_config("tfr_net", embed_dropout=0.5), 0.0, positions=True)
    seen = []
    encoder.blocks[0].register_forward_pre_hook(lambda block, args: seen.append(args[1:3]))
    states, padding = torch.randn(2, 4, 16), torch.zeros(2, 4, dtype=torch.bool)
    source, source_padding = torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool)
    torch.manual_seed(0)
    encoder.train()(states, padding, source, source_padding)
    with torch.no_grad():
        encoder.eval()(states, padding, source, source_padding)
    (train_keys, train_values), (eval_keys, eval_values) = seen
    assert not torch.equal(train_keys, train_values) and torch.equal(eval_keys, eval_values)


def test_cross_modal_attention_dropout_follows_the_source_modality():
    model = _model(attn_dropout=0.2, attn_dropout_a=0.1, attn_dropout_v=0.0)
    dropouts = {name: encoder.blocks[0].attention.dropout for name, encoder in model.crossmodal.items()}
    assert dropouts == {"a_to_t": 0.1, "v_to_t": 0.0, "t_to_a": 0.2, "v_to_a": 0.0, "t_to_v": 0.2, "a_to_v": 0.1}


def test_c_gate_fusion_and_batch_norm_classifier():
    model = _model()
    assert all(isinstance(gate, CGate) and gate.gru.bidirectional for gate in model.fusion.values())
    hidden = {m: gate.fc.out_features for m, gate in model.fusion.items()}
    assert hidden == {"t": 36, "a": 20, "v": 48}
    norm, first, activation, _, last = model.classifier
    assert isinstance(norm, nn.BatchNorm1d) and norm.num_features == 36 + 20 + 48
    assert isinstance(activation, nn.LeakyReLU) and first.out_features == 128 and last.out_features == NUM_CLASSES


def test_c_gate_max_pools_over_valid_steps_only():
    torch.manual_seed(0)
    gate = CGate(4, 3, 1, 0.0).eval()
    states = torch.randn(1, 5, 4)
    short = gate(states[:, :3], torch.zeros(1, 3, dtype=torch.bool))
    padded = gate(states.clone().index_fill_(1, torch.tensor([3, 4]), 50.0), torch.tensor([[0, 0, 0, 1, 1]]).bool())
    torch.testing.assert_close(padded, short)


def test_fixed_masks_depend_on_seed_modality_and_id_only():
    ids = [f"utt{i}" for i in range(40)]
    padding = torch.zeros(40, 50, dtype=torch.bool)
    mask = fixed_step_mask(ids, padding, "a", 0.5, 1111, keep_ends=False)
    again = fixed_step_mask(ids[::-1], padding, "a", 0.5, 1111, keep_ends=False)
    assert torch.equal(again, mask.flip(0))  # the order of the batch does not matter
    assert not torch.equal(fixed_step_mask(ids, padding, "v", 0.5, 1111, keep_ends=False), mask)
    assert not torch.equal(fixed_step_mask(ids, padding, "a", 0.5, 7, keep_ends=False), mask)
    assert 0.4 < mask.float().mean() < 0.6  # Bernoulli(0.5) per step, 2000 draws


def test_fixed_masks_never_touch_padding_and_keep_the_text_ends():
    padding = torch.arange(10)[None, :] >= torch.tensor([[4], [10], [1]])
    mask = fixed_step_mask(["x", "y", "z"], padding, "t", 1.0, 1111, keep_ends=True)
    assert not (mask & padding).any()
    assert mask.tolist()[0][:4] == [False, True, True, False] and not mask[1, [0, 9]].any() and not mask[2].any()


def test_the_same_steps_are_dropped_in_training_and_in_eval():
    model, batch = _model(missing_rate=0.5), feature_batch()
    train_masks = model.train()(batch).extras["masks"]
    with torch.no_grad():
        eval_masks = model.eval()(batch).extras["masks"]
    assert all(torch.equal(train_masks[m], eval_masks[m]) and eval_masks[m].any() for m in "tav")


def test_eval_sees_the_inputs_with_the_dropped_steps_zeroed():
    masked, clean = _model(missing_rate=0.5).eval(), _model(missing_rate=0.0).eval()
    batch = feature_batch()
    with torch.no_grad():
        output = masked(batch)
        zeroed = {}
        for m, name in (("t", "text"), ("a", "audio"), ("v", "visual")):
            sequence, padding = padded_features(batch, m)
            kept = sequence.masked_fill(output.extras["masks"][m].unsqueeze(-1), 0.0)[~padding]
            zeroed[f"{name}_features"] = kept
        expected = clean(dataclasses.replace(batch, **zeroed)).logits
    torch.testing.assert_close(output.logits, expected)


def test_redrawn_masks_are_training_only():
    model, batch = _model(missing_rate=0.0, train_missing_rate=0.5), feature_batch()
    assert any(mask.any() for mask in model.train()(batch).extras["masks"].values())
    with torch.no_grad():
        assert not any(mask.any() for mask in model.eval()(batch).extras["masks"].values())


def test_eval_does_not_depend_on_the_batch_composition():
    model, batch = _model().eval(), feature_batch(max_length=9)
    with torch.no_grad():
        full = model(batch).logits
        alone = model(_subset(batch, [4, 1])).logits
    torch.testing.assert_close(alone, full[[4, 1]])


def test_the_future_mask_is_the_official_one_on_each_utterances_lengths():
    padding = torch.tensor([[0, 0, 0], [0, 0, 1]]).bool()
    source_padding = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]).bool()
    assert future_mask(padding, padding)[0].tolist() == [[False, True, True], [False, False, True], [False] * 3]
    # first utterance: n_q 3, n_k 5, query i sees keys j <= i + 2; second: n_q 2, n_k 3, j <= i + 1
    blocked = future_mask(padding, source_padding)
    assert blocked[0].tolist() == [[False] * 3 + [True] * 2, [False] * 4 + [True], [False] * 5]
    assert blocked[1, 0].tolist() == [False, False, True, True, True]


@pytest.mark.parametrize("causal", [True, False])
def test_a_causal_encoder_does_not_look_ahead(causal):
    torch.manual_seed(0)
    config = TFRNetConfig(d_model=8, temporal_heads=2, temporal_ffn=16, dropout=0.0, causal_attention=causal)
    encoder = official_encoder(8, 2, config, 0.0, positions=True).eval()
    states, padding = torch.randn(1, 6, 8), torch.zeros(1, 6, dtype=torch.bool)
    changed = states.clone()
    changed[0, 4:] = torch.randn(2, 8)  # a new pattern (LayerNorm would hide a constant shift)
    with torch.no_grad():
        before, after = encoder(states, padding), encoder(changed, padding)
    assert torch.allclose(before[0, :4], after[0, :4]) == causal


def test_reconstruction_loss_counts_the_dropped_steps_only():
    torch.manual_seed(0)
    target = torch.randn(2, 4, 3)
    padding = torch.zeros(2, 4, dtype=torch.bool)
    dropped = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]]).bool()
    prediction = target + 5.0 * (~dropped).unsqueeze(-1)  # wrong only where nothing was dropped
    assert reconstruction_loss(prediction, target, dropped, padding, 5.0).item() == 0.0
    assert reconstruction_loss(prediction, target, torch.zeros_like(dropped), padding, 5.0).item() == 0.0
    wrong = target + 0.5 * dropped.unsqueeze(-1)  # |error| 0.5 on the dropped steps: SmoothL1 0.125
    without_cmd = reconstruction_loss(wrong, target, dropped, padding, 0.0)
    torch.testing.assert_close(without_cmd, torch.tensor(0.125))
    assert reconstruction_loss(wrong, target, dropped, padding, 5.0) > without_cmd


def test_each_modality_loss_has_its_own_weight():
    batch = feature_batch()
    weights = {f"{name}_reconstruction_weight": 0.0 for name in ("text", "audio", "visual")}
    assert _model(**weights).train()(batch).aux_loss.item() == 0.0
    single = _model(**{**weights, "visual_reconstruction_weight": 1.0}).train()(batch).aux_loss
    double = _model(**{**weights, "visual_reconstruction_weight": 2.0}).train()(batch).aux_loss
    assert single.item() > 0
    torch.testing.assert_close(double, 2 * single)


def test_shipped_mosei_config_takes_mmsas_reconstruction_weights():
    model = load_config("configs/mosei/tfr_net.yaml").model
    assert (model.text_reconstruction_weight, model.audio_reconstruction_weight) == (5e-6, 2e-6)
    assert model.visual_reconstruction_weight == 2e-5
    assert load_config("configs/iemocap/tfr_net.yaml").model.visual_reconstruction_weight == 20.0


@pytest.mark.parametrize("task_outputs", [1, 3])
def test_regression_outputs_one_value_per_target(task_outputs):
    model = build_model(small_config("tfr_net"), [f"y{i}" for i in range(task_outputs)]).eval()
    with torch.no_grad():
        assert model(feature_batch()).logits.shape == (12, task_outputs)
