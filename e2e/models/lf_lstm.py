"""LF-LSTM: the MESM paper's late-fusion LSTM baseline on two-stage features.

Per modality a bidirectional LSTM reads the valid steps of the feature sequence (packed, so padding
never enters); its final forward and backward states make the utterance vector. Late fusion: the
modality vectors are concatenated and a two-layer MLP gives the logits.
"""
from __future__ import annotations

import torch
from torch import nn

from e2e.batch import Batch, ModelOutput
from e2e.config import ModelConfig
from e2e.models.registry import register_model
from e2e.models.sequence import LSTMEncoder, mlp, modality_dims, padded_features


class LateFusionLSTM(nn.Module):
    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        self.encoders = nn.ModuleDict({m: LSTMEncoder(dim, config) for m, dim in dims.items()})
        self.head = mlp(len(dims) * config.d_model, config.d_model, num_classes, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        vectors = [encoder(*padded_features(batch, m)) for m, encoder in self.encoders.items()]
        return ModelOutput(self.head(torch.cat(vectors, dim=1)))


@register_model("lf_lstm", inputs="features")
def build_lf_lstm(config: ModelConfig, class_names: list[str]) -> LateFusionLSTM:
    return LateFusionLSTM(config, len(class_names))
