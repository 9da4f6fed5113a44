"""FDMER's paper structure: each constraint is weighted once by its own option (no global multiplier), the
constraint terms on constructed representations, and the discriminator's gradient reversal."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from e2e.models import build_model, model_options
from tests.helpers.features import feature_batch, small_config

CLASS_NAMES = list("abcdef")
WEIGHTS = ("consistency_weight", "disparity_weight", "adversarial_weight", "reconstruction_weight")


def _model(**weights):
    torch.manual_seed(0)
    return build_model(small_config("fdmer", **weights), CLASS_NAMES)


def _only(name: str, value: float) -> dict[str, float]:
    return {weight: (value if weight == name else 0.0) for weight in WEIGHTS}


def test_no_global_multiplier_scales_the_constraints_a_second_time():
    assert "aux_weight" not in {field.name for field in dataclasses.fields(model_options("fdmer"))}


def test_the_consistency_term_is_the_summed_pairwise_mse_of_the_common_representations():
    model = _model(**_only("consistency_weight", 1.0)).train()
    common = {"t": torch.zeros(4, 16), "a": torch.ones(4, 16), "v": torch.full((4, 16), 3.0)}
    private = {m: torch.rand(4, 16) for m in common}
    utterances = {m: torch.rand(4, 16) for m in common}
    # pairs (t, a), (t, v), (a, v): squared differences 1, 9, 4
    assert model.losses(utterances, common, private).item() == pytest.approx(1 + 9 + 4)


@pytest.mark.parametrize("name", WEIGHTS)
def test_each_constraint_is_weighted_once_by_its_own_option(name):
    batch = feature_batch()
    once, twice = _model(**_only(name, 0.5)).train(), _model(**_only(name, 1.0)).train()
    single, double = once(batch).aux_loss, twice(batch).aux_loss
    assert single.item() > 0
    assert double.item() == pytest.approx(2 * single.item(), rel=1e-5)


def test_the_weighted_sum_adds_the_four_terms():
    batch = feature_batch()
    parts = sum(_model(**_only(name, 1.0)).train()(batch).aux_loss.item() for name in WEIGHTS)
    total = _model(**{name: 1.0 for name in WEIGHTS}).train()(batch).aux_loss.item()
    assert total == pytest.approx(parts, rel=1e-5)


def test_the_discriminator_learns_while_the_common_representations_get_the_reversed_gradient():
    model = _model(**_only("adversarial_weight", 1.0)).train()
    common = {m: torch.randn(5, 16, requires_grad=True) for m in model.modalities}
    model.adversarial_loss(common).backward()
    reversed_grad = {m: c.grad.clone() for m, c in common.items()}
    adversarial_grad = [p.grad.clone() for p in model.discriminator.parameters()]
    model.discriminator.zero_grad()
    inputs = torch.cat([common[m].detach() for m in model.modalities]).requires_grad_()
    targets = torch.arange(3).repeat_interleave(5)
    nn.functional.cross_entropy(model.discriminator(inputs), targets).backward()
    for modality, grad in zip(model.modalities, inputs.grad.split(5)):
        torch.testing.assert_close(reversed_grad[modality], -grad)
    for adversarial, plain in zip(adversarial_grad, model.discriminator.parameters()):
        torch.testing.assert_close(adversarial, plain.grad)  # the discriminator itself is not reversed


def test_one_modality_has_no_pairwise_terms_and_no_discriminator_loss():
    torch.manual_seed(0)
    model = build_model(small_config("fdmer", "t", **_only("consistency_weight", 1.0)), CLASS_NAMES).train()
    assert model(feature_batch()).aux_loss.item() == 0.0
    assert model.adversarial_loss({"t": torch.randn(3, 16)}).item() == 0.0
