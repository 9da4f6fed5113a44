"""Shared (modality-invariant) and private (modality-specific) representations: MISA's, also used by FDMER."""

from __future__ import annotations

from torch import nn

from e2e.data.batch import Batch
from e2e.models.layers.sequence import FeatureModelConfig, encode_utterances, utterance_encoders


def utterance_projection(in_features: int, out_features: int) -> nn.Sequential:
    """MISA's ``project_m``: Linear -> ReLU -> LayerNorm, mapping each modality's utterance vector to the
    common width."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.ReLU(), nn.LayerNorm(out_features))


class SharedPrivate(nn.Module):
    """Utterance encoders (``encoder_class`` per modality), one shared encoder for all modalities and one
    private encoder per modality, both Linear + Sigmoid.

    ``project``: put :func:`utterance_projection` after each encoder (MISA); the encoders then give
    ``encoder.out_features`` values and the returned utterance vectors are the projected ones. Without
    it (FDMER) the encoders give ``d_model`` values, used as they are."""

    def __init__(self, config: FeatureModelConfig, encoder_class: type[nn.Module], project: bool = False):
        super().__init__()
        d = config.d_model
        self.encoders = utterance_encoders(config, encoder_class)
        if project:
            self.projections = nn.ModuleDict(
                {m: utterance_projection(encoder.out_features, d) for m, encoder in self.encoders.items()}
            )
        else:
            self.projections = None
        self.shared = nn.Sequential(nn.Linear(d, d), nn.Sigmoid())
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.encoders})

    def forward(self, batch: Batch) -> tuple[dict, dict, dict]:
        """Utterance vectors, shared and private representations, each ``{m: (B, d)}``."""
        utterances = encode_utterances(self.encoders, batch)
        if self.projections is not None:
            utterances = {m: self.projections[m](u) for m, u in utterances.items()}
        shared = {m: self.shared(u) for m, u in utterances.items()}
        private = {m: self.private[m](u) for m, u in utterances.items()}
        return utterances, shared, private
