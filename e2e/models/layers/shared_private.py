"""Shared (modality-invariant) and private (modality-specific) representations: MISA's, also used by FDMER."""

from __future__ import annotations

from torch import nn

from e2e.data.batch import Batch
from e2e.models.layers.sequence import FeatureModelConfig, encode_utterances, utterance_encoders


class SharedPrivate(nn.Module):
    """Utterance encoders (``encoder_class`` per modality), one shared encoder for all modalities and one
    private encoder per modality, both Linear + Sigmoid."""

    def __init__(self, config: FeatureModelConfig, encoder_class: type[nn.Module]):
        super().__init__()
        d = config.d_model
        self.encoders = utterance_encoders(config, encoder_class)
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.encoders})

    def forward(self, batch: Batch) -> tuple[dict, dict, dict]:
        """Utterance vectors, shared and private representations, each ``{m: (B, d)}``."""
        utterances = encode_utterances(self.encoders, batch)
        shared = {m: self.shared(u) for m, u in utterances.items()}
        private = {m: self.private[m](u) for m, u in utterances.items()}
        return utterances, shared, private
