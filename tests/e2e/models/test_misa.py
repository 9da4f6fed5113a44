"""MISA follows the official code (declare-lab/MISA): sLSTM encoders, projections, shared/private
encoders, fusion, and the official weighting and normalisation of its auxiliary losses."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch
from torch import nn

from e2e.data.sequences import feature_dims
from e2e.models import build_model
from e2e.models.layers.losses import cmd, difference_loss, sample_normalised_difference_loss
from e2e.models.layers.sequence import padded_features
from e2e.models.misa import MISA, MISAConfig, StackedLSTM
from tests.helpers.features import TEXT_MODEL, feature_batch, small_config


def _misa(**overrides) -> MISA:
    torch.manual_seed(0)
    return build_model(small_config("misa", **overrides), list("abcdef"))


def test_defaults_are_the_official_config():
    config = MISAConfig()
    assert (config.d_model, config.temporal_layers, config.temporal_heads, config.temporal_ffn) == (128, 2, 2, 2048)
    assert config.dropout == 0.5
    assert (config.similarity_weight, config.difference_weight, config.reconstruction_weight) == (1.0, 0.3, 1.0)
    assert (config.aux_weight, config.difference_normalisation) == (1.0, "sample")


def test_each_modality_has_a_two_layer_slstm_of_its_feature_size_with_layernorm_between():
    model = _misa(temporal_layers=2)
    for modality, dim in feature_dims(TEXT_MODEL).items():
        encoder = model.representations.encoders[modality]
        assert isinstance(encoder, StackedLSTM)
        assert [(lstm.input_size, lstm.hidden_size, lstm.bidirectional) for lstm in encoder.lstms] == [
            (dim, dim, True),
            (2 * dim, dim, True),
        ]
        assert [norm.normalized_shape for norm in encoder.norms] == [(2 * dim,)]
        assert encoder.out_features == 4 * dim


def test_slstm_reads_both_layers_final_states_and_ignores_padding():
    torch.manual_seed(0)
    encoder = StackedLSTM(3, small_config("misa", temporal_layers=2)).eval()
    sequence = torch.randn(1, 5, 3)
    with torch.no_grad():
        vector = encoder(sequence, torch.zeros(1, 5, dtype=torch.bool))
        padded = torch.cat([sequence, 100 * torch.ones(1, 2, 3)], dim=1)
        assert torch.allclose(vector, encoder(padded, torch.tensor([[False] * 5 + [True] * 2])), atol=1e-6)
        states, (first, _) = encoder.lstms[0](sequence)
        _, (second, _) = encoder.lstms[1](encoder.norms[0](states))
    expected = torch.cat([first[0], first[1], second[0], second[1]], dim=1)
    assert vector.shape == (1, 12)
    assert torch.allclose(vector, expected, atol=1e-6)


def test_recurrent_weights_start_orthogonal():
    encoder = StackedLSTM(4, small_config("misa", temporal_layers=2))
    for lstm in encoder.lstms:
        for name, weight in lstm.named_parameters():
            if name.startswith("weight_hh"):
                assert torch.allclose(weight.t() @ weight, torch.eye(4), atol=1e-5), name


def test_projections_shared_and_private_encoders_have_the_official_layers():
    model = _misa()
    parts = model.representations
    for modality in "tav":
        linear, activation, norm = parts.projections[modality]
        assert isinstance(linear, nn.Linear) and isinstance(activation, nn.ReLU) and isinstance(norm, nn.LayerNorm)
        assert linear.in_features == parts.encoders[modality].out_features
        assert [type(layer) for layer in parts.private[modality]] == [nn.Linear, nn.Sigmoid]
    assert [type(layer) for layer in parts.shared] == [nn.Linear, nn.Sigmoid]
    assert (model.head[0].in_features, model.head[0].out_features) == (6 * 16, 3 * 16)
    assert len(model.fusion.layers) == 1 and model.fusion.layers[0].self_attn.num_heads == 2


def test_utterance_vectors_are_the_layer_normed_projections():
    """The reconstruction target is u_m after project_m (Linear -> ReLU -> LayerNorm), as officially."""
    model, batch = _misa().eval(), feature_batch()
    parts = model.representations
    with torch.no_grad():
        utterances, shared, private = parts(batch)
        for modality, vector in utterances.items():
            encoded = parts.encoders[modality](*padded_features(batch, modality))
            assert torch.equal(vector, parts.projections[modality](encoded))
            assert vector.shape == (12, 16)
            assert vector.mean(1).abs().max().item() < 1e-4  # LayerNorm at init: zero mean per row
    for modality in utterances:
        assert ((shared[modality] > 0) & (shared[modality] < 1)).all()  # sigmoid outputs
        assert ((private[modality] > 0) & (private[modality] < 1)).all()


def _representations(seed: int = 0) -> tuple[dict, dict, dict]:
    generator = torch.Generator().manual_seed(seed)
    return tuple({m: torch.rand(8, 16, generator=generator) for m in "tav"} for _ in range(3))


def test_similarity_is_the_mean_cmd_over_modality_pairs():
    model = _misa(similarity_weight=1.0, difference_weight=0.0, reconstruction_weight=0.0)
    utterances, shared, private = _representations()
    expected = sum(cmd(shared[a], shared[b]) for a, b in combinations("tav", 2)) / 3
    assert model.losses(utterances, shared, private).item() == pytest.approx(expected.item(), rel=1e-5)


def test_difference_is_the_sum_over_the_six_pairs_of_the_sample_normalised_loss():
    model = _misa(similarity_weight=0.0, difference_weight=1.0, reconstruction_weight=0.0)
    utterances, shared, private = _representations()
    pairs = [(private[m], shared[m]) for m in "tav"] + [(private[a], private[b]) for a, b in combinations("tav", 2)]
    expected = sum(sample_normalised_difference_loss(a, b) for a, b in pairs)
    assert model.losses(utterances, shared, private).item() == pytest.approx(expected.item(), rel=1e-5)
    improved = _misa(
        similarity_weight=0.0, difference_weight=1.0, reconstruction_weight=0.0, difference_normalisation="feature"
    )
    expected = sum(difference_loss(a, b) for a, b in pairs)
    assert improved.losses(utterances, shared, private).item() == pytest.approx(expected.item(), rel=1e-5)


def test_reconstruction_is_the_mean_mse_of_the_decoded_sum_to_the_utterance_vector():
    model = _misa(similarity_weight=0.0, difference_weight=0.0, reconstruction_weight=1.0)
    utterances, shared, private = _representations()
    with torch.no_grad():
        expected = (
            sum(nn.functional.mse_loss(model.decoders[m](shared[m] + private[m]), utterances[m]) for m in "tav") / 3
        )
        assert model.losses(utterances, shared, private).item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_weights_combine_the_terms_and_aux_weight_scales_the_sum():
    utterances, shared, private = _representations()
    terms = {}
    for name in ("similarity_weight", "difference_weight", "reconstruction_weight"):
        only = {key: float(key == name) for key in ("similarity_weight", "difference_weight", "reconstruction_weight")}
        terms[name] = _misa(**only).losses(utterances, shared, private).item()
    model = _misa()  # the official weights 1.0, 0.3, 1.0
    expected = terms["similarity_weight"] + 0.3 * terms["difference_weight"] + terms["reconstruction_weight"]
    assert model.losses(utterances, shared, private).item() == pytest.approx(expected, rel=1e-5)
    batch = feature_batch()
    torch.manual_seed(1)
    single = _misa(dropout=0.0).train()(batch).aux_loss
    torch.manual_seed(1)
    double = _misa(dropout=0.0, aux_weight=2.0).train()(batch).aux_loss
    assert double.item() == pytest.approx(2 * single.item(), rel=1e-5)


def test_sample_normalised_difference_loss_matches_the_official_diffloss_by_hand():
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # zero-mean columns, unit rows
    # a^T a = [[2, 0], [0, 0]]: mean of squares 4 / 4 (the column version: 1 / (2 * 2))
    assert sample_normalised_difference_loss(a, a).item() == pytest.approx(1.0, rel=1e-5)
    assert difference_loss(a, a).item() == pytest.approx(0.25)
    b = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    c = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # a constant column: zero after centring
    assert sample_normalised_difference_loss(a, c).item() == 0.0
    assert sample_normalised_difference_loss(a, b).item() == pytest.approx(1.0, rel=1e-5)


def test_sample_norms_are_constants_for_the_gradient():
    """Official DiffLoss detaches the row norms: the loss is quadratic in a's scale for the gradient, so
    the derivative along a is twice the loss (it would be 0 if the norms were differentiated)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, generator=generator)
    a = (a - a.mean(0)).requires_grad_()
    b = torch.randn(6, 4, generator=generator)
    loss = sample_normalised_difference_loss(a, b)
    loss.backward()
    assert (a.grad * a).sum().item() == pytest.approx(2 * loss.item(), rel=1e-4)


def test_one_modality_has_no_similarity_term_and_regression_gets_one_output_per_target():
    model = build_model(
        small_config("misa", "a", similarity_weight=1.0, difference_weight=0.0, reconstruction_weight=0.0),
        list("abcdef"),
    ).train()
    assert model(feature_batch()).aux_loss.item() == 0.0
    regressor = build_model(small_config("misa"), ["valence", "activation", "dominance"]).eval()
    with torch.no_grad():
        assert regressor(feature_batch()).logits.shape == (12, 3)


def test_fdmer_keeps_its_shared_private_without_projections():
    fdmer = build_model(small_config("fdmer"), list("abcdef"))
    assert fdmer.representations.projections is None
    assert not any("projections" in name for name in fdmer.state_dict())
    batch = feature_batch()
    with torch.no_grad():
        utterances, _, _ = fdmer.eval().representations(batch)
        encoded = fdmer.representations.encoders["a"](*padded_features(batch, "a"))
    assert torch.equal(utterances["a"], encoded)


def _fit(model: MISA, steps: int) -> tuple[MISA, torch.Tensor]:
    batch = feature_batch(batch_size=18)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model.train()
        optimizer.zero_grad()
        output = model(batch)
        (nn.functional.binary_cross_entropy_with_logits(output.logits, batch.labels) + output.aux_loss).backward()
        optimizer.step()
    return model.eval(), batch


def test_all_three_losses_with_feature_normalisation_leave_the_batch_learnable():
    model, batch = _fit(_misa(difference_normalisation="feature"), 100)
    with torch.no_grad():
        predicted = model(batch).logits.argmax(1)
    assert (predicted == batch.labels.argmax(1)).float().mean() >= 0.8


def test_the_official_difference_loss_collapses_the_shared_spread_at_a_high_lr():
    """Documented in docs/fidelity/misa.md: with the sample norms detached the loss pays for the scale of
    the centred representations, so at lr 3e-3 the shared vectors shrink towards one constant."""
    model = _misa(similarity_weight=0.0, reconstruction_weight=0.0)
    batch = feature_batch(batch_size=18)
    with torch.no_grad():
        before = model.eval().representations(batch)[1]["t"].std(0).mean()
    model, _ = _fit(model, 60)
    with torch.no_grad():
        after = model.representations(batch)[1]["t"].std(0).mean()
    assert after < 0.1 * before
