"""EmoEmbs' paper structure (official src/models/eea.py): the text vector is scored against the emotion
embeddings as they are, audio and visual against learned maps of them, by dot products; LSTM read-out at
the last valid step with the directions summed; fusion weights start at 1/M."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from e2e.models.emoembs import EmoEmbs, LastStepLSTM
from e2e.models.layers.sequence import padded_features
from tests.helpers.features import feature_batch, small_config

CLASS_NAMES = ["ang", "exc", "fru", "hap", "neu", "sad"]
WIDTH = 12  # word-embedding width of the constructed prototypes


def _model(modalities: str = "tav", **overrides) -> EmoEmbs:
    torch.manual_seed(0)
    prototypes = torch.randn(len(CLASS_NAMES), WIDTH)
    return EmoEmbs(small_config("emoembs", modalities, **overrides), CLASS_NAMES, prototypes).eval()


def test_widths_text_as_the_embeddings_audio_and_visual_their_own_with_maps_of_the_embeddings():
    model = _model(audio_hidden=7, visual_hidden=5)
    assert {m: e.out_features for m, e in model.encoders.items()} == {"t": WIDTH, "a": 7, "v": 5}
    assert set(model.to_modality) == {"a", "v"}
    assert model.to_modality["a"].in_features == WIDTH and model.to_modality["a"].out_features == 7
    assert not model.prototypes.requires_grad and "prototypes" in dict(model.named_buffers())


def test_scores_are_dot_products_with_the_text_embeddings_and_the_mapped_ones():
    model, batch = _model(), feature_batch()
    with torch.no_grad():
        scores = model(batch).extras["modality_logits"]
        for modality, encoder in model.encoders.items():
            utterance = encoder(*padded_features(batch, modality))
            embeddings = model.prototypes if modality == "t" else model.to_modality[modality](model.prototypes)
            torch.testing.assert_close(scores[modality], utterance @ embeddings.t())


def test_fusion_starts_at_the_average_and_one_modality_is_its_own_scores():
    model, batch = _model(), feature_batch()
    torch.testing.assert_close(model.fusion.weights.weight, torch.full((1, 3), 1 / 3))
    with torch.no_grad():
        output = model(batch)
        average = sum(output.extras["modality_logits"].values()) / 3
        torch.testing.assert_close(output.logits, average)
        single = _model("a")
        assert single.fusion is None
        torch.testing.assert_close(single(batch).logits, single(batch).extras["modality_logits"]["a"])


def test_the_lstm_reads_out_the_last_valid_step_with_the_directions_summed_and_ignores_padding():
    torch.manual_seed(0)
    encoder = LastStepLSTM(4, 3, small_config("emoembs", temporal_layers=2)).eval()
    sequence = torch.randn(2, 6, 4)
    padding = torch.tensor([[False] * 6, [False, False, False, True, True, True]])
    with torch.no_grad():
        vectors = encoder(sequence, padding)
        for row, length in enumerate((6, 3)):
            outputs, _ = encoder.lstm(sequence[row : row + 1, :length])
            expected = outputs[0, -1, :3] + outputs[0, -1, 3:]
            torch.testing.assert_close(vectors[row], expected)
        noisy = sequence.clone()
        noisy[1, 3:] = 100.0
        torch.testing.assert_close(encoder(noisy, padding), vectors)


def test_cosine_scoring_is_bounded_by_the_learned_temperature():
    model, batch = _model(scoring="cosine", initial_temperature=5.0), feature_batch()
    with torch.no_grad():
        scores = model(batch).extras["modality_logits"]
    assert model.log_temperature.exp().item() == pytest.approx(5.0)
    assert all(s.abs().max().item() <= 5.0 + 1e-5 for s in scores.values())


def test_dot_scoring_has_no_temperature_parameter():
    assert not any("temperature" in name for name, _ in _model().named_parameters())
    assert isinstance(_model().to_modality["v"], nn.Linear)
