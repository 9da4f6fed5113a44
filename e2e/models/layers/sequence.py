"""Shared pieces of the two-stage feature models (registered with ``inputs="features"``).

A feature model reads ``batch.features(m)`` for each of its modalities (see :mod:`e2e.data.batch`); the
feature sizes come from :func:`e2e.data.sequences.feature_dims` of ``config.text_model``, or from
``config.input_dims`` for a ``data.source`` feature file (:func:`modality_dims`).

Options: most feature models' options classes derive from :class:`FeatureModelConfig` (width and depth of
their sequence encoders) or, when they also have attention, from :class:`SequenceModelConfig` (LF-LSTM and
LF-TRANS, whose widths are the feature sizes, derive from ``ModelConfig``); each model's options
docstring says what these shared options mean for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import ModelConfig, parse_input_dims, parse_modalities, positive
from e2e.data.batch import Batch
from e2e.data.sequences import feature_dims
from e2e.models.fidelity import PerDataset, Setting, unread_setting
from e2e.models.layers.encoders import pad_packed, sinusoidal_encoding


@dataclass
class FeatureModelConfig(ModelConfig):
    """What every two-stage feature model has: the width and depth of its sequence encoders."""

    d_model: int = positive(64)  # width of the encoded sequences
    temporal_layers: int = positive(4)  # layers of each sequence encoder


@dataclass
class SequenceModelConfig(FeatureModelConfig):
    """A feature model whose sequence encoders (or fusion) use multi-head attention."""

    temporal_heads: int = positive(4)  # attention heads
    temporal_ffn: int = positive(2048)  # feed-forward width of each transformer layer


def unread_sequence_settings(source: str) -> tuple[Setting, ...]:
    """Fidelity rows for the encoder sizes and training of a :class:`SequenceModelConfig` model whose paper's
    values could not be read (``source`` says why): the choices FDMER and ConKI share."""
    rows = (
        ("representation width", "model.d_model", 40),
        ("encoder layers", "model.temporal_layers", 4),
        ("attention heads", "model.temporal_heads", 8),
        ("encoder FFN width", "model.temporal_ffn", 160),
        ("dropout", "model.dropout", 0.1),
        ("batch size", "data.batch_size", PerDataset({"iemocap": 32, "mosei": 64})),
        ("learning rate (Adam)", "train.lr", 1e-3),
        ("gradient clipping (max norm)", "train.grad_clip", 0.8),
        ("epochs", "train.epochs", 40),
        ("early-stop patience", "train.early_stop_patience", 8),
    )
    return tuple(unread_setting(setting, source, key, value) for setting, key, value in rows)


def padded_features(batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L, D)`` zero-padded feature sequence of ``modality`` and its padding mask (True = padding)."""
    return pad_packed(*batch.features(modality))


def masked_mean(sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Mean over the non-padding steps: ``(B, L, D)``, ``(B, L)`` -> ``(B, D)``."""
    keep = (~padding).unsqueeze(-1).to(sequence.dtype)
    return (sequence * keep).sum(1) / keep.sum(1).clamp(min=1)


def modality_dims(config: ModelConfig) -> dict[str, int]:
    """Input feature size of each modality the model uses, in canonical order (t, a, v): those of a
    ``data.source`` file where ``config.input_dims`` records them, else those of our cached features."""
    dims = parse_input_dims(config.input_dims) if config.input_dims else feature_dims(config.text_model)
    return {modality: dims[modality] for modality in parse_modalities(config.modalities)}


def mlp(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout -> Linear``: the heads and fusion layers of the feature models."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_features)
    )


class SequenceEncoder(nn.Module):
    """Linear projection to ``d_model``, sinusoidal positions, post-LN transformer encoder with key padding
    masks. ``forward`` returns the per-step states ``(B, L, d)``; :func:`masked_mean` pools them."""

    def __init__(self, in_features: int, config: SequenceModelConfig):
        super().__init__()
        self.projection = nn.Linear(in_features, config.d_model)
        layer = nn.TransformerEncoderLayer(
            config.d_model, config.temporal_heads, config.temporal_ffn, config.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.temporal_layers, enable_nested_tensor=False)

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        states = self.projection(sequence)
        states = states + sinusoidal_encoding(states.shape[1], states.shape[2], states.device)
        return self.encoder(states, src_key_padding_mask=padding)


class LSTMEncoder(nn.Module):
    """Bidirectional LSTM over the valid steps only (packed); the utterance vector is the last layer's final
    forward and backward states, projected to ``d_model``."""

    def __init__(self, in_features: int, config: FeatureModelConfig):
        super().__init__()
        self.lstm = nn.LSTM(
            in_features,
            config.d_model,
            config.temporal_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.temporal_layers > 1 else 0.0,
        )
        self.output = nn.Linear(2 * config.d_model, config.d_model)

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        lengths = (~padding).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(sequence, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return self.output(torch.cat([hidden[-2], hidden[-1]], dim=1))


class PooledTransformer(nn.Module):
    """:class:`SequenceEncoder` mean-pooled over the valid steps: one vector per utterance."""

    def __init__(self, in_features: int, config: SequenceModelConfig):
        super().__init__()
        self.encoder = SequenceEncoder(in_features, config)

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.encoder(sequence, padding), padding)


def utterance_encoders(config: FeatureModelConfig, encoder_class: type[nn.Module]) -> nn.ModuleDict:
    """One ``encoder_class(feature size, config)`` per configured modality (LSTMEncoder, PooledTransformer)."""
    return nn.ModuleDict({m: encoder_class(dim, config) for m, dim in modality_dims(config).items()})


def encode_utterances(encoders: nn.ModuleDict, batch: Batch) -> dict[str, torch.Tensor]:
    """``{m: (B, d)}``: each modality's padded feature sequence through its utterance encoder."""
    return {m: encoder(*padded_features(batch, m)) for m, encoder in encoders.items()}
