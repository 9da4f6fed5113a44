"""CARAT's official structure: contrastive classes, queue, prototypes, shuffle, prediction and losses."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from e2e.models import build_model, model_spec
from e2e.models.carat import (
    CARAT,
    ContrastiveQueue,
    LabelPrototypes,
    combined_logit,
    contrastive_views,
    label_wise_shuffle,
    queued_supervised_contrastive,
)
from tests.helpers.features import NUM_CLASSES, feature_batch, small_config

TEMPERATURE = 0.07


def official_supcon(features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The official SupConLoss written out on all rows (batch then queue), every row an anchor."""
    logits = features @ features.t() / TEMPERATURE
    logits = logits - logits.max(1, keepdim=True).values.detach()
    others = 1 - torch.eye(len(features), dtype=features.dtype)
    positives = (classes[:, None] == classes[None, :]).to(features.dtype) * others
    log_prob = logits - torch.log((logits.exp() * others).sum(1, keepdim=True) + 1e-12)
    return -((positives * log_prob).sum(1) / (positives.sum(1) + 1e-12)).mean()


def random_rows(n: int, generator: torch.Generator, num_classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    features = F.normalize(torch.randn(n, 8, generator=generator, dtype=torch.float64), dim=1)
    return features, torch.randint(0, num_classes, (n,), generator=generator)


def test_classes_are_label_times_polarity_times_modality():
    labels = torch.tensor([[1.0, 0.0]])
    _, classes = contrastive_views(torch.randn(2, 1, 2, 4), labels)
    # modality 0: label 0 present -> 0, label 1 absent -> 1 + 2; modality 1: 0 + 4, 1 + 6
    assert classes.tolist() == [0, 3, 4, 7]


@pytest.mark.parametrize("pushes", [0, 1, 3, 7])  # 7 batches of 5 wrap the queue of 16 twice
def test_queued_loss_and_gradient_equal_the_official_loss_on_batch_and_queue(pushes):
    generator = torch.Generator().manual_seed(pushes)
    queue = ContrastiveQueue(16, 8, TEMPERATURE)
    for _ in range(pushes):
        queue.push(*random_rows(5, generator))
    features, classes = random_rows(6, generator)
    features.requires_grad_(True)
    queued = queue.contents()
    ours = queued_supervised_contrastive(features, classes, TEMPERATURE, queued)
    (ours_grad,) = torch.autograd.grad(ours, features)
    stored = queued[0].double()
    reference = official_supcon(torch.cat([features, stored]), torch.cat([classes, queued[1]]))
    (reference_grad,) = torch.autograd.grad(reference, features)
    assert len(stored) == min(16, 5 * pushes)  # only pushed entries, never placeholders
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-5, atol=1e-9)


def test_queue_is_fifo_of_the_latest_entries():
    queue = ContrastiveQueue(4, 2, TEMPERATURE)
    rows = F.normalize(torch.randn(6, 2), dim=1)
    queue.push(rows[:3], torch.tensor([0, 1, 2]))
    assert queue.contents()[1].tolist() == [0, 1, 2]
    queue.push(rows[3:], torch.tensor([3, 4, 5]))  # overwrites the two oldest
    features, classes, _ = queue.contents()
    assert sorted(classes.tolist()) == [2, 3, 4, 5]
    torch.testing.assert_close(features[classes.argsort()], rows[2:])
    assert "queue.features" in CARAT(small_config("carat", queue_size=4), NUM_CLASSES).state_dict()


def test_prototype_update_is_the_official_per_utterance_momentum_average():
    generator = torch.Generator().manual_seed(0)
    latent = F.normalize(torch.randn(5, 3, 4, generator=generator), dim=-1)
    labels = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [1, 0, 0], [0, 1, 1]]).float()
    prototypes = LabelPrototypes(3, 4, momentum=0.9)
    prototypes.prototypes.copy_(torch.randn(2, 3, 4, generator=generator))
    expected = prototypes.prototypes.clone()
    for b in range(5):  # the official loop
        for c in range(3):
            row = 0 if labels[b, c] == 1 else 1
            expected[row, c] = 0.9 * expected[row, c] + 0.1 * latent[b, c]
    prototypes.update(latent, labels)
    torch.testing.assert_close(prototypes.prototypes, expected)


def test_prototype_lookup_is_soft_in_training_and_the_closer_one_at_inference():
    prototypes = LabelPrototypes(1, 2, momentum=0.9)
    prototypes.prototypes.copy_(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))  # present, absent
    latent = F.normalize(torch.tensor([[[1.0, 0.2]]]), dim=-1)  # closer to "present"
    assert prototypes.lookup(latent, hard=True).tolist() == [[[1.0, 0.0]]]
    soft = prototypes.lookup(latent, hard=False)[0, 0]
    assert 0.5 < soft[0] < 1 and 0 < soft[1] < 0.5 and abs(soft.sum().item() - 1) < 1e-6


def coded(batch_size: int, modalities: int, labels: int) -> torch.Tensor:
    """(B, M, C, 3): every embedding holds its own (utterance, modality, label) indices."""
    grid = torch.meshgrid(torch.arange(batch_size), torch.arange(modalities), torch.arange(labels), indexing="ij")
    return torch.stack(grid, -1).float()


def test_label_wise_shuffle_draws_a_donor_per_label_and_slot_and_targets_follow_it():
    labels = (torch.rand(10, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    shuffled, targets = label_wise_shuffle(coded(10, 3, 4), labels, "label_wise", torch.Generator().manual_seed(0))
    donors, sources, label = shuffled.long().unbind(-1)
    assert torch.equal(label, torch.arange(4).expand(10, 3, -1))  # a label's embedding stays that label's
    for c in range(4):
        for m in range(3):
            assert sorted(donors[:, m, c].tolist()) == list(range(10))  # a permutation of the batch
        for b in range(10):
            assert sorted(sources[b, :, c].tolist()) == [0, 1, 2]  # a permutation of the modalities
    assert torch.equal(targets, labels[donors, label])
    assert not torch.equal(donors, torch.arange(10)[:, None, None].expand(-1, 3, 4))


def test_same_label_shuffle_keeps_whole_label_vectors():
    labels = torch.eye(3)[torch.tensor([0, 1, 0, 2, 1, 0])]
    shuffled, targets = label_wise_shuffle(coded(6, 2, 3), labels, "same_label", torch.Generator().manual_seed(0))
    donors = shuffled[..., 0].long()
    assert (donors == donors[..., :1]).all()  # one donor per slot for every label
    assert torch.equal(labels[donors[..., 0]], labels[:, None].expand(-1, 2, -1))
    assert torch.equal(targets, labels[:, None].expand(-1, 2, -1))


def test_prediction_is_the_mean_of_aggregation_and_pooled_probabilities():
    aggregation = torch.tensor([[[2.0, -40.0], [0.0, -30.0], [-1.0, -50.0]]])  # (B=1, M=3, C=2)
    pooled = torch.tensor([[1.0, -60.0]])
    logit = combined_logit(aggregation, pooled)
    expected = (aggregation.sigmoid().mean(1) + pooled.sigmoid()) / 2
    torch.testing.assert_close(logit[:, 0].sigmoid(), expected[:, 0])
    assert torch.isfinite(logit).all() and logit[0, 1] < -29  # confident: finite, not clamped at 0


def test_the_structure_is_the_official_one():
    model = build_model(small_config("carat", modalities="tav", d_model=16, proj_size=8), list("abcdef"))
    assert set(model.classifiers) == {"t", "a", "v"} and model.classifiers["t"].shape == (6, 16)
    assert model.fusions["a"][0].in_features == 3 * 16  # own padding + the two others' reconstructions
    assert model.aggregation[0].in_features == 6 * 16  # every label's beta of one modality
    assert model.projections["v"][-1].out_features == 8 and model.decoders["v"][-1].out_features == 16
    assert model.label_attention["t"].scores.bias is None
    assert model_spec("carat").fidelity is not None and model_spec("carat").tasks == ("emotion",)


@pytest.mark.parametrize("shuffle", ["label_wise", "same_label"])
def test_the_shuffle_is_off_the_main_path(shuffle):
    model = build_model(small_config("carat", queue_size=64, shuffle=shuffle), list("abcdef")).train()
    batch = feature_batch()
    outputs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        outputs.append(copy.deepcopy(model)(batch))
    torch.testing.assert_close(outputs[0].logits, outputs[1].logits)  # the shuffle never reaches them
    assert outputs[0].aux_loss.item() != outputs[1].aux_loss.item()  # it changes only its own loss


def test_training_updates_queue_and_prototypes_and_inference_does_not():
    model = build_model(small_config("carat", queue_size=64), list("abcdef"))
    batch = feature_batch(multi_label=True)
    with torch.no_grad():
        model.eval()(batch)
    assert int(model.queue.filled) == 0 and not model.prototypes["t"].prototypes.any()
    model.train()(batch)
    assert int(model.queue.filled) == 64  # 12 utterances x 9 views x 6 labels, the latest 64 kept
    assert model.prototypes["t"].prototypes.any()


def test_aux_weight_scales_every_auxiliary_loss():
    model = build_model(small_config("carat", queue_size=64), list("abcdef")).train()
    batch = feature_batch(multi_label=True)
    losses = []
    for weight in (1.0, 2.0, 0.0):
        changed = copy.deepcopy(model)
        changed.config = dataclasses.replace(model.config, aux_weight=weight)
        torch.manual_seed(0)
        losses.append(changed(batch).aux_loss.item())
    assert losses[1] == pytest.approx(2 * losses[0], rel=1e-5) and losses[2] == 0.0
