"""Shared pieces of the two-stage feature models (registered with ``inputs="features"``).

A feature model reads ``batch.features(m)`` for each of its modalities (see :mod:`e2e.batch`); the
feature sizes come from :func:`e2e.features.sequences.feature_dims` of ``config.text_model``.
"""
from __future__ import annotations

import torch

from e2e.batch import Batch
from e2e.config import ModelConfig
from e2e.features.sequences import feature_dims
from e2e.models.encoders import pad_packed
from e2e.models.fe2e import parse_modalities


def padded_features(batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, L, D)`` zero-padded feature sequence of ``modality`` and its padding mask (True = padding)."""
    return pad_packed(*batch.features(modality))


def masked_mean(sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Mean over the non-padding steps: ``(B, L, D)``, ``(B, L)`` -> ``(B, D)``."""
    keep = (~padding).unsqueeze(-1).to(sequence.dtype)
    return (sequence * keep).sum(1) / keep.sum(1).clamp(min=1)


def modality_dims(config: ModelConfig) -> dict[str, int]:
    """Input feature size of each modality the model uses, in canonical order (t, a, v)."""
    dims = feature_dims(config.text_model)
    return {modality: dims[modality] for modality in parse_modalities(config.modalities)}

