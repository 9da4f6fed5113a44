"""MISA (Hazarika et al., ACM MM 2020, "MISA: Modality-Invariant and -Specific Representations for
Multimodal Sentiment Analysis"), for emotion classification on two-stage features.

Per modality an utterance vector ``u_m`` (the paper: BERT for text, sLSTM for audio/visual; here the
same bidirectional LSTM over every feature sequence, text features being frozen token states), a
projection to ``d_model``, then one **shared** encoder for all modalities (modality-invariant
``s_m``) and one **private** encoder per modality (modality-specific ``p_m``), both Linear + Sigmoid as
in the paper. Auxiliary losses:

* similarity: CMD (5 moments) between the shared representations of every modality pair;
* difference: soft orthogonality between ``s_m`` and ``p_m`` and between every pair of privates;
* reconstruction: a decoder per modality maps ``s_m + p_m`` back to ``u_m`` (MSE).

Fusion: a transformer layer over the 2M representations as tokens, concatenated, then an MLP.
The weights below follow the paper's defaults relative to each other; ``aux_weight`` scales the sum.
With one modality the pairwise similarity loss is absent.
"""
from __future__ import annotations

from itertools import combinations

import torch
from torch import nn

from e2e.batch import Batch, ModelOutput
from e2e.config import ModelConfig
from e2e.models.losses import cmd, difference_loss
from e2e.models.registry import register_model
from e2e.models.sequence import LSTMEncoder, encode_utterances, mlp, utterance_encoders

SIMILARITY_WEIGHT, DIFFERENCE_WEIGHT, RECONSTRUCTION_WEIGHT = 1.0, 0.3, 1.0


class SharedPrivate(nn.Module):
    """Utterance encoders, the shared encoder and the private encoders (also used by FDMER)."""

    def __init__(self, config: ModelConfig, encoder_class: type[nn.Module] = LSTMEncoder):
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


class MISA(nn.Module):
    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__()
        d, self.aux_weight = config.d_model, config.aux_weight
        self.representations = SharedPrivate(config)
        modalities = list(self.representations.encoders)
        self.decoders = nn.ModuleDict({m: nn.Linear(d, d) for m in modalities})
        layer = nn.TransformerEncoderLayer(d, config.temporal_heads, config.temporal_ffn, config.dropout,
                                           batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = mlp(2 * len(modalities) * d, d, num_classes, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        utterances, shared, private = self.representations(batch)
        tokens = torch.stack([*shared.values(), *private.values()], dim=1)
        logits = self.head(self.fusion(tokens).flatten(1))
        aux = self.aux_weight * self.losses(utterances, shared, private) if self.training else None
        return ModelOutput(logits, aux_loss=aux)

    def losses(self, utterances: dict, shared: dict, private: dict) -> torch.Tensor:
        modalities = list(shared)
        similarity = sum((cmd(shared[a], shared[b]) for a, b in combinations(modalities, 2)), torch.tensor(0.0))
        difference = sum(difference_loss(shared[m], private[m]) for m in modalities)
        difference = difference + sum((difference_loss(private[a], private[b]) for a, b in combinations(modalities, 2)),
                                      torch.tensor(0.0))
        reconstruction = sum(nn.functional.mse_loss(self.decoders[m](shared[m] + private[m]), utterances[m])
                             for m in modalities)
        return (SIMILARITY_WEIGHT * similarity + DIFFERENCE_WEIGHT * difference
                + RECONSTRUCTION_WEIGHT * reconstruction)


@register_model("misa", inputs="features")
def build_misa(config: ModelConfig, class_names: list[str]) -> MISA:
    return MISA(config, len(class_names))
