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
The loss weights (:class:`MISAConfig`) follow the paper's defaults relative to each other;
``aux_weight`` scales the sum.
With one modality the pairwise similarity loss is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn

from e2e.config import non_negative
from e2e.data.batch import Batch, ModelOutput
from e2e.models.layers.losses import cmd, difference_loss
from e2e.models.layers.sequence import LSTMEncoder, SequenceModelConfig, mlp
from e2e.models.layers.shared_private import SharedPrivate
from e2e.models.registry import register_model


@dataclass
class MISAConfig(SequenceModelConfig):
    """MISA's options. The shared ones mean:

    * ``d_model``: width of the utterance vectors ``u_m`` and of the shared and private representations;
    * ``temporal_layers``: layers of each modality's bidirectional LSTM;
    * ``temporal_heads``, ``temporal_ffn``: heads and FFN width of the one-layer fusion transformer.
    """

    name: str = "misa"
    aux_weight: float = non_negative(0.1)  # weight of the weighted sum of the three auxiliary losses
    similarity_weight: float = non_negative(1.0)  # CMD between the shared representations
    difference_weight: float = non_negative(0.3)  # soft orthogonality of shared/private and private pairs
    reconstruction_weight: float = non_negative(1.0)  # MSE of the decoded s_m + p_m to u_m


class MISA(nn.Module):
    def __init__(self, config: MISAConfig, num_classes: int):
        super().__init__()
        d, self.config = config.d_model, config
        self.representations = SharedPrivate(config, LSTMEncoder)
        modalities = list(self.representations.encoders)
        self.decoders = nn.ModuleDict({m: nn.Linear(d, d) for m in modalities})
        layer = nn.TransformerEncoderLayer(
            d, config.temporal_heads, config.temporal_ffn, config.dropout, batch_first=True
        )
        self.fusion = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = mlp(2 * len(modalities) * d, d, num_classes, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        utterances, shared, private = self.representations(batch)
        tokens = torch.stack([*shared.values(), *private.values()], dim=1)
        logits = self.head(self.fusion(tokens).flatten(1))
        aux = self.config.aux_weight * self.losses(utterances, shared, private) if self.training else None
        return ModelOutput(logits, aux_loss=aux)

    def losses(self, utterances: dict, shared: dict, private: dict) -> torch.Tensor:
        modalities = list(shared)
        similarity = sum((cmd(shared[a], shared[b]) for a, b in combinations(modalities, 2)), torch.tensor(0.0))
        difference = sum(difference_loss(shared[m], private[m]) for m in modalities)
        difference = difference + sum(
            (difference_loss(private[a], private[b]) for a, b in combinations(modalities, 2)), torch.tensor(0.0)
        )
        reconstruction = sum(
            nn.functional.mse_loss(self.decoders[m](shared[m] + private[m]), utterances[m]) for m in modalities
        )
        return (
            self.config.similarity_weight * similarity
            + self.config.difference_weight * difference
            + self.config.reconstruction_weight * reconstruction
        )


@register_model("misa", options=MISAConfig, inputs="features")
def build_misa(config: MISAConfig, class_names: list[str]) -> MISA:
    return MISA(config, len(class_names))
