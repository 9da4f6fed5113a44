"""ConKI's hierarchical contrastive terms on constructed representations, and the loss weighting."""

from __future__ import annotations

import pytest
import torch

from e2e.models import build_model
from e2e.models.conki import hierarchical_contrastive
from tests.helpers.features import feature_batch, small_config

LEVELS = ("knowledge_weight", "modality_weight", "sample_weight")


def _unit(*values: float) -> torch.Tensor:
    return torch.tensor(values).float()


def test_knowledge_level_penalises_only_aligned_pan_and_knowledge_vectors():
    pan = {"t": _unit(1, 0).expand(4, 2), "a": _unit(0, 1).expand(4, 2)}
    opposite = {"t": _unit(-1, 0).expand(4, 2), "a": _unit(0, 1).expand(4, 2)}
    labels = torch.eye(4)
    fused = torch.randn(4, 4)
    knowledge_level = hierarchical_contrastive(pan, opposite, fused, labels)[0]
    assert knowledge_level.item() == pytest.approx(0.5)  # t: cos -1 -> 0; a: cos 1 -> 1; mean over modalities


def test_modality_level_is_lower_when_an_utterances_modalities_agree():
    generator = torch.Generator().manual_seed(0)
    shared = torch.randn(6, 8, generator=generator)
    agreeing = {"t": shared, "a": shared + 0.01 * torch.randn(6, 8, generator=generator)}
    disagreeing = {"t": shared, "a": torch.randn(6, 8, generator=generator)}
    pan = {m: torch.randn(6, 8, generator=generator) for m in agreeing}
    fused, labels = torch.randn(6, 4, generator=generator), torch.eye(6)
    low = hierarchical_contrastive(pan, agreeing, fused, labels)[1]
    high = hierarchical_contrastive(pan, disagreeing, fused, labels)[1]
    assert low.item() < high.item()


def test_sample_level_uses_rounded_labels_as_positives():
    fused = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    pan = knowledge = {"t": torch.randn(4, 3)}
    grouped = hierarchical_contrastive(pan, knowledge, fused, torch.tensor([[1.2], [0.9], [-2.1], [-1.8]]))[2]
    crossed = hierarchical_contrastive(pan, knowledge, fused, torch.tensor([[1.2], [-2.1], [0.9], [-1.8]]))[2]
    assert grouped.item() < crossed.item()


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_is_weighted_by_its_option_times_aux_weight(level):
    batch = feature_batch()

    def loss(aux_weight: float, value: float) -> float:
        torch.manual_seed(0)
        weights = {name: (value if name == level else 0.0) for name in LEVELS}
        return (
            build_model(small_config("conki", aux_weight=aux_weight, **weights), list("abcdef"))
            .train()(batch)
            .aux_loss.item()
        )

    base = loss(0.1, 1.0)
    assert base > 0
    assert loss(0.2, 1.0) == pytest.approx(2 * base, rel=1e-5)
    assert loss(0.1, 3.0) == pytest.approx(3 * base, rel=1e-5)
