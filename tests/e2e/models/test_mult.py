"""MulT: padding invariance, the cross-modal directions, the last-valid read-out, refusing one modality."""

from __future__ import annotations

import pytest
import torch

from e2e.data.batch import Batch
from e2e.models import build_model
from e2e.models.layers.crossmodal import last_valid
from tests.helpers.features import feature_batch, small_config

CLASS_NAMES = list("abcdef")
FEATURE_NAMES = ("text", "audio", "visual")


def _model(name: str = "mult", modalities: str = "tav"):
    torch.manual_seed(0)
    return build_model(small_config(name, modalities, temporal_layers=2), CLASS_NAMES).eval()


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


@pytest.mark.parametrize("modalities", ["t", "a", "v"])
def test_one_modality_is_refused(modalities):
    with pytest.raises(ValueError, match="mult needs at least two modalities"):
        _model(modalities=modalities)


def test_last_valid_takes_the_last_non_padding_step():
    states = torch.arange(8.0).reshape(2, 4, 1)  # utterance 0: 0 1 2 3, utterance 1: 4 5 6 7
    padding = torch.tensor([[False, False, True, True], [False, False, False, False]])
    assert last_valid(states, padding).flatten().tolist() == [1.0, 7.0]
