"""MICA's losses and gate on small tensors; the auxiliary loss exists in training only and scales with
aux_weight."""

from __future__ import annotations

import math

import pytest
import torch

from e2e.models import build_model
from e2e.models.layers.losses import mmd
from e2e.models.mica import attention_confidence, attention_weights, element_alignment, merging_gate
from tests.helpers.features import feature_batch, small_config

CLASS_NAMES = list("abcdef")


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(small_config("mica", temporal_layers=2, **overrides), CLASS_NAMES)


def test_mmd_is_zero_for_identical_samples_and_grows_with_the_shift():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    assert mmd(x, x).item() == pytest.approx(0.0, abs=1e-6)
    discrepancies = [mmd(x, x + shift).item() for shift in (0.25, 0.5, 1.0, 2.0)]
    assert discrepancies[0] > 0
    assert discrepancies == sorted(discrepancies) and len(set(discrepancies)) == 4


def test_element_alignment_is_zero_for_identical_layers_and_a_weighted_mean_otherwise():
    update = torch.randn(2, 3, 4)
    padding = torch.tensor([[False, False, True], [False, True, True]])
    assert element_alignment(update, update.clone(), padding).item() == 0.0
    previous = update.clone()
    previous[0, 0] += 1.0  # squared error 1 per channel
    previous[1, 0] += 2.0  # squared error 4 per channel
    previous[0, 2] += 100.0  # padding: ignored
    assert element_alignment(update, previous, padding).item() == pytest.approx((1 + 0 + 4) / 3)
    weights = torch.tensor([[1.0, 0.0, 9.0], [0.5, 9.0, 9.0]])
    assert element_alignment(update, previous, padding, weights).item() == pytest.approx((1 + 0.5 * 4) / 1.5)
    assert element_alignment(update, previous, padding, torch.zeros(2, 3)).item() == 0.0


def test_attention_confidence_is_one_for_one_hot_zero_for_uniform_and_one_with_a_single_key():
    padding = torch.tensor([[False, False, False, False], [False, True, True, True]])
    attention = torch.zeros(2, 2, 1, 4)
    attention[0, 0, 0, 2] = 1.0  # head 0: one-hot
    attention[0, 1, 0] = 0.25  # head 1: uniform
    attention[1, :, 0, 0] = 1.0  # one valid key
    assert attention_confidence(attention, padding).tolist() == [[0.5], [1.0]]
    half = torch.tensor([0.5, 0.5, 0.0, 0.0]).expand(1, 1, 1, 4)
    assert attention_confidence(half, padding[:1]).item() == pytest.approx(1 - math.log(2) / math.log(4))


def test_attention_weights_mask_padded_keys_and_sum_to_one():
    queries, keys = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    padding = torch.tensor([[False] * 5, [False, False, True, True, True]])
    weights = attention_weights(queries, keys, padding, heads=2)
    assert weights.shape == (2, 2, 3, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 3))
    assert (weights[1, :, :, 2:] == 0).all()


def test_merging_gate_lies_strictly_between_zero_and_one_and_every_layer_has_one():
    values = merging_gate(torch.nn.Linear(8, 4), 3 * torch.randn(2, 5, 4), 3 * torch.randn(2, 5, 4))
    assert ((values > 0) & (values < 1)).all()
    model = _model()
    for stack in model.crossmodal.values():
        assert len(stack.gates) == len(stack.blocks) == 2


def test_auxiliary_loss_only_in_training_and_scaled_by_aux_weight():
    batch = feature_batch()
    small, large = _model(aux_weight=0.1).train(), _model(aux_weight=0.3).train()
    small_loss, large_loss = small(batch).aux_loss, large(batch).aux_loss
    assert small_loss.dim() == 0 and small_loss.item() > 0
    assert large_loss.item() == pytest.approx(3 * small_loss.item(), rel=1e-5)
    with torch.no_grad():
        assert small.eval()(batch).aux_loss is None


def test_the_default_network_is_mults_iemocap_column():
    from e2e.models import model_options

    options = model_options("mica")()
    assert (options.d_model, options.temporal_layers, options.temporal_heads, options.temporal_ffn) == (40, 4, 10, 160)
    assert options.dropout == 0.25
    assert (options.text_kernel, options.audio_kernel, options.visual_kernel) == (3, 5, 3)
