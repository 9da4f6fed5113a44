"""LF-TRANS: the MESM paper's late-fusion transformer baseline on two-stage features.

Per modality a transformer encoder (linear projection, sinusoidal positions, key padding masks)
whose states are mean-pooled over the valid steps; the modality vectors are concatenated and a
two-layer MLP gives the logits. Mean pooling rather than a CLS token: with the short demo sequences
and few epochs it trains more stably, and it is padding-invariant by construction.
"""
from __future__ import annotations

import torch
from torch import nn

from e2e.batch import Batch, ModelOutput
from e2e.config import ModelConfig
from e2e.models.registry import register_model
from e2e.models.sequence import SequenceEncoder, masked_mean, mlp, modality_dims, padded_features


class LateFusionTransformer(nn.Module):
    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        self.encoders = nn.ModuleDict({m: SequenceEncoder(dim, config) for m, dim in dims.items()})
        self.head = mlp(len(dims) * config.d_model, config.d_model, num_classes, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        vectors = []
        for modality, encoder in self.encoders.items():
            sequence, padding = padded_features(batch, modality)
            vectors.append(masked_mean(encoder(sequence, padding), padding))
        return ModelOutput(self.head(torch.cat(vectors, dim=1)))


@register_model("lf_trans", inputs="features")
def build_lf_trans(config: ModelConfig, class_names: list[str]) -> LateFusionTransformer:
    return LateFusionTransformer(config, len(class_names))
