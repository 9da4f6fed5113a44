"""The seed-paper models' own losses on small tensors with values checkable by hand."""

from __future__ import annotations

import pytest
import torch

from e2e.models import model_spec
from e2e.models.carat import label_wise_contrastive, same_label_shuffle
from e2e.models.conki import ConKI
from e2e.models.layers.losses import (
    cmd,
    difference_loss,
    hsic,
    label_positives,
    masked_smooth_l1,
    mmd,
    reverse_gradient,
    supervised_contrastive,
)
from e2e.models.mica import element_alignment, merging_gate
from e2e.models.tfr_net import random_step_mask
from tests.helpers.features import feature_batch, small_config


def test_cmd_is_zero_for_identical_samples_and_grows_with_shift():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert cmd(x, x).item() == 0.0
    assert cmd(x, x + 1).item() == pytest.approx(2.0, abs=1e-5)  # only the means differ: |(1,1,1,1)| = 2
    assert cmd(x, x + 2).item() > cmd(x, x + 1).item()


def test_difference_loss_is_zero_for_orthogonal_bases_and_one_for_equal_columns():
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # zero-mean columns
    b = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])  # zero-mean, orthogonal to both columns of a
    assert difference_loss(a, b).item() == pytest.approx(0.0, abs=1e-12)
    assert difference_loss(b, 3 * b).item() == pytest.approx(1.0)


def test_mmd_of_equal_samples_is_zero():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    assert mmd(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert mmd(x, x + 0.5).item() < mmd(x, x + 2.0).item()


def test_hsic_is_near_zero_for_independent_and_larger_for_dependent_variables():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(200, 2, generator=generator), torch.randn(200, 2, generator=generator)
    independent, dependent = hsic(x, y).item(), hsic(x, x).item()
    assert independent < 0.01 and dependent > 5 * independent


def test_contrastive_loss_falls_when_positives_move_together():
    labels = torch.tensor([0, 0, 1, 1])
    positives = label_positives(torch.nn.functional.one_hot(labels).float())
    apart = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # positives orthogonal
    together = torch.tensor([[1.0, 0.1], [1.0, -0.1], [-1.0, 0.1], [-1.0, -0.1]])  # positives aligned
    assert supervised_contrastive(together, positives) < supervised_contrastive(apart, positives)
    assert positives.tolist()[0] == [True, True, False, False]


def test_label_wise_contrastive_prefers_label_aligned_embeddings():
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    aligned = torch.zeros(1, 3, 2, 2)
    aligned[0, :2, 0] = torch.tensor([1.0, 0.0])  # label 0 present: same direction
    aligned[0, 2, 0] = torch.tensor([0.0, 1.0])
    aligned[0, :, 1] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    scattered = aligned.clone()
    scattered[0, 1, 0] = torch.tensor([-1.0, 0.0])
    assert label_wise_contrastive(aligned, labels) < label_wise_contrastive(scattered, labels)


def test_reconstruction_loss_is_zero_on_identity_and_counts_masked_positions_only():
    target = torch.randn(2, 5, 3)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 1] = True
    assert masked_smooth_l1(target.clone(), target, mask).item() == 0.0
    wrong_elsewhere = target.clone()
    wrong_elsewhere[1] += 10.0  # unmasked row: must not count
    assert masked_smooth_l1(wrong_elsewhere, target, mask).item() == 0.0
    wrong_masked = target.clone()
    wrong_masked[0, 1] += 0.5  # SmoothL1 (beta 1) of 0.5 is 0.5 * 0.5² = 0.125
    assert masked_smooth_l1(wrong_masked, target, mask).item() == pytest.approx(0.125)


def test_reverse_gradient_flips_the_sign():
    x = torch.ones(3, requires_grad=True)
    (2 * reverse_gradient(x, 0.5)).sum().backward()
    assert x.grad.tolist() == [-1.0, -1.0, -1.0]


def test_mica_gate_and_element_alignment():
    gate = torch.nn.Linear(8, 4)
    values = merging_gate(gate, torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    assert ((values > 0) & (values < 1)).all()
    update, padding = torch.randn(2, 3, 4), torch.tensor([[False, False, True], [False, True, True]])
    assert element_alignment(update, update.clone(), padding).item() == 0.0
    shifted = update.clone()
    shifted[0, 2] += 100.0  # a padding position: ignored
    assert element_alignment(update, shifted, padding).item() == 0.0


def test_tfr_net_mask_keeps_a_step_never_touches_padding_and_hits_the_rate():
    padding = torch.arange(10)[None, :] >= torch.tensor([10, 4, 1, 7])[:, None]
    generator = torch.Generator().manual_seed(0)
    masks = torch.stack([random_step_mask(padding, 0.3, generator) for _ in range(200)])
    assert not (masks & padding).any()
    assert ((~masks & ~padding).sum(-1) >= 1).all()
    assert masks[:, 0].sum(-1).float().mean().item() == 3.0  # round(0.3 * 10)
    assert not masks[:, 2].any()  # a single step is never masked


def test_carat_shuffle_only_swaps_same_label_utterances():
    labels = torch.tensor([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]]).float()
    permutation = same_label_shuffle(labels, torch.Generator().manual_seed(0))
    assert sorted(permutation.tolist()) == list(range(5))
    assert torch.equal(labels[permutation], labels)


def test_conki_adapters_are_named_for_knowledge_injection():
    model = ConKI(small_config("conki"), 6)
    adapter_names = [name for name in model.state_dict() if "adapter" in name.lower()]
    assert adapter_names and all(name.startswith("adapters.") for name in adapter_names)
    assert model_spec("conki").pretrain_prefix == "adapters."
    donor = ConKI(small_config("conki"), 6)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.load_state_dict({k: v for k, v in donor.state_dict().items() if k.startswith("adapters.")}, strict=False)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, donor.state_dict()[name] if name.startswith("adapters.") else before[name])


@pytest.mark.parametrize("name", ["misa", "fdmer", "mica", "conki", "carat", "tfr_net"])
def test_auxiliary_losses_exist_in_training_only(name):
    from e2e.models import build_model

    overrides = {"train_missing_rate": 0.3} if name == "tfr_net" else {}  # TFR-Net reconstructs masked steps
    model = build_model(small_config(name, **overrides), list("abcdef"))
    batch = feature_batch()
    assert model.train()(batch).aux_loss is not None
    with torch.no_grad():
        assert model.eval()(batch).aux_loss is None
