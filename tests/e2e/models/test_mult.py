"""MulT: padding invariance, the cross-modal directions, the last-valid read-out, refusing one modality, and
the official structure of the paper preset (future mask, embedding at every encoder, dropout roles)."""

from __future__ import annotations

import math

import pytest
import torch

from e2e.data.batch import Batch
from e2e.models import build_model
from e2e.models.layers.crossmodal import last_valid
from e2e.models.layers.mult_transformer import MulTBlock, blocked_keys, official_positions
from e2e.models.layers.sequence import padded_features
from e2e.models.mult import MemoryEncoder
from tests.helpers.features import feature_batch, small_config

CLASS_NAMES = list("abcdef")
FEATURE_NAMES = ("text", "audio", "visual")


def _model(name: str = "mult", modalities: str = "tav", **options):
    torch.manual_seed(0)
    options = {"temporal_layers": 2, **options}
    return build_model(small_config(name, modalities, **options), CLASS_NAMES).eval()


def _with_a_longer_utterance(batch: Batch, extra_steps: int = 4) -> Batch:
    """``batch`` plus one utterance longer than all others in every modality: the original utterances
    get ``extra_steps`` more padding steps."""
    fields = {}
    for name in FEATURE_NAMES:
        packed, lengths = getattr(batch, f"{name}_features"), getattr(batch, f"{name}_feature_lengths")
        longest = int(lengths.max()) + extra_steps
        fields[f"{name}_features"] = torch.cat([packed, torch.randn(longest, packed.shape[1])])
        fields[f"{name}_feature_lengths"] = torch.cat([lengths, torch.tensor([longest])])
    labels = torch.cat([batch.labels, batch.labels[:1]])
    return Batch(ids=batch.ids + ["longer"], labels=labels, **fields)


@pytest.mark.parametrize("name", ["mult", "mica"])
def test_extra_padding_steps_do_not_change_the_logits(name):
    model, batch = _model(name), feature_batch(batch_size=5)
    with torch.no_grad():
        alone = model(batch).logits
        padded = model(_with_a_longer_utterance(batch)).logits[: len(batch)]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


def test_three_modalities_have_six_directions_and_two_have_two():
    assert set(_model(modalities="tav").crossmodal) == {"t_to_a", "t_to_v", "a_to_t", "a_to_v", "v_to_t", "v_to_a"}
    assert set(_model(modalities="ta").crossmodal) == {"t_to_a", "a_to_t"}


def test_memory_width_is_the_concatenation_of_the_incoming_streams():
    d = small_config("mult").d_model
    assert _model(modalities="tav").memories["t"].norm.normalized_shape == (2 * d,)
    assert _model(modalities="av").memories["a"].norm.normalized_shape == (d,)
    assert _model(modalities="tav").memories["t"].width == 2 * d  # its embedding scales by sqrt(2 d)


@pytest.mark.parametrize("modalities", ["t", "a", "v"])
def test_one_modality_is_refused(modalities):
    with pytest.raises(ValueError, match="mult needs at least two modalities"):
        _model(modalities=modalities)


def test_last_valid_takes_the_last_non_padding_step():
    states = torch.arange(8.0).reshape(2, 4, 1)  # utterance 0: 0 1 2 3, utterance 1: 4 5 6 7
    padding = torch.tensor([[False, False, True, True], [False, False, False, False]])
    assert last_valid(states, padding).flatten().tolist() == [1.0, 7.0]


def test_the_future_mask_lets_query_i_see_keys_up_to_i_plus_the_length_difference():
    query_padding = torch.tensor([[False, False, False, True]])  # 3 valid query steps
    key_padding = torch.tensor([[False, False, False, False, False, True]])  # 5 valid keys: offset 2
    blocked = blocked_keys(query_padding, key_padding, future=True)[0]
    visible = [[j for j in range(6) if not blocked[i, j]] for i in range(4)]
    assert visible == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    without = blocked_keys(query_padding, key_padding, future=False)[0]
    assert without.tolist() == [[False] * 5 + [True]] * 4  # padding only


def test_the_memories_are_causal_under_the_future_mask_and_not_without_it():
    for attn_mask, future_changes in ((True, False), (False, True)):
        torch.manual_seed(0)
        encoder = MemoryEncoder(16, 2, small_config("mult", attn_mask=attn_mask), attention_dropout=0.0).eval()
        states, padding = torch.randn(1, 6, 16), torch.zeros(1, 6, dtype=torch.bool)
        changed = states.clone()
        changed[0, 4] += 3.0 * torch.randn(16)  # not a constant: LayerNorm would remove it
        with torch.no_grad():
            before, after = encoder(states, padding), encoder(changed, padding)
        past_moved = (after[0, :4] - before[0, :4]).abs().max() > 1e-3
        assert past_moved == future_changes
        assert (after[0, 4:] - before[0, 4:]).abs().max() > 1e-3


def test_official_positions_are_fairseqs_sinusoids_from_position_one():
    rate = math.log(10000.0)  # width 4: two frequencies, 1 and 1e-4
    expected = torch.tensor(
        [[math.sin(p), math.sin(p * math.exp(-rate)), math.cos(p), math.cos(p * math.exp(-rate))] for p in (1, 2)]
    )
    torch.testing.assert_close(official_positions(2, 4), expected)
    assert official_positions(3, 5)[:, 4].tolist() == [0.0, 0.0, 0.0]  # odd width: a zero channel last


def test_every_encoder_scales_and_positions_its_own_inputs():
    model = _model()
    for encoder in (model.crossmodal["a_to_t"], model.memories["t"]):
        width = encoder.width
        expected = math.sqrt(width) * torch.ones(1, 3, width) + official_positions(3, width)
        torch.testing.assert_close(encoder.embed(torch.ones(1, 3, width)), expected)


def test_a_crossmodal_encoder_attends_from_its_embedded_target_to_its_embedded_source():
    encoder = _model().crossmodal["a_to_t"]
    target, source = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    target_padding = torch.tensor([[False] * 4, [False, False, True, True]])
    source_padding = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    blocked = blocked_keys(target_padding, source_padding, future=True).repeat_interleave(encoder.heads, dim=0)
    with torch.no_grad():
        states, keys = encoder.embed(target), encoder.embed(source)
        for block in encoder.blocks:
            states = block(states, keys, keys, blocked)
        output, losses = encoder(target, target_padding, source, source_padding)
    torch.testing.assert_close(output, encoder.norm(states))
    assert losses == []


def test_the_embedding_is_the_convolution_alone_with_dropout_on_the_raw_text_only():
    model, batch = _model(embed_dropout=1.0).train(), feature_batch()
    text, _ = model.embed(batch, "t")
    audio, _ = model.embed(batch, "a")
    assert text.abs().max() == 0  # every raw text feature dropped
    assert audio.abs().max() > 0
    features, _ = padded_features(batch, "a")
    with torch.no_grad():
        expected = model.projections["a"](features.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(model.eval().embed(batch, "a")[0], expected)  # no scaling, no positions


def test_attention_dropout_follows_the_source_and_the_other_roles_their_options():
    model = _model(
        dropout=0.11, attn_dropout_a=0.22, attn_dropout_v=0.33, relu_dropout=0.44, res_dropout=0.55, out_dropout=0.66
    )
    rates = {name: encoder.blocks[0].attention.dropout for name, encoder in model.crossmodal.items()}
    assert rates == {"t_to_a": 0.11, "t_to_v": 0.11, "a_to_t": 0.22, "a_to_v": 0.22, "v_to_t": 0.33, "v_to_a": 0.33}
    assert all(memory.blocks[0].attention.dropout == 0.11 for memory in model.memories.values())
    block = model.crossmodal["t_to_a"].blocks[0]
    assert (block.relu_dropout.p, block.res_dropout.p, model.residual[2].p) == (0.44, 0.55, 0.66)


def test_one_layer_norm_serves_queries_keys_and_values():
    block = _model().crossmodal["a_to_t"].blocks[0]
    assert isinstance(block, MulTBlock)
    norms = [name for name, module in block.named_modules() if isinstance(module, torch.nn.LayerNorm)]
    assert norms == ["norm_attention", "norm_ffn"]


def test_the_ffn_width_scales_with_the_block_width():
    model = _model(temporal_ffn=64)  # 4 d for small_config's d 16
    assert model.crossmodal["a_to_t"].blocks[0].fc1.out_features == 64
    assert model.memories["t"].blocks[0].fc1.out_features == 128  # width 2 d: 4 x 2 d


def test_the_memories_have_at_least_min_memory_layers_blocks():
    model = _model(temporal_layers=2, min_memory_layers=3)
    assert len(model.crossmodal["a_to_t"].blocks) == 2 and len(model.memories["t"].blocks) == 3
    assert len(_model(temporal_layers=4, min_memory_layers=3).memories["t"].blocks) == 4


def test_heads_that_do_not_divide_the_width_are_refused_naming_the_keys():
    with pytest.raises(ValueError, match="model.d_model .* model.temporal_heads"):
        _model(temporal_heads=3)


def test_regression_outputs_one_value_per_target():
    torch.manual_seed(0)
    model = build_model(small_config("mult"), ["valence", "activation", "dominance"]).eval()
    with torch.no_grad():
        assert model(feature_batch()).logits.shape == (12, 3)
