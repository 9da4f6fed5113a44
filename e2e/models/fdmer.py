"""FDMER (Yang et al., ACM MM 2022, "Disentangled Representation Learning for Multimodal Emotion
Recognition"), on two-stage features.

Per modality a transformer utterance encoder, then common (shared) and private representations as in
MISA (:class:`~e2e.models.layers.shared_private.SharedPrivate`). Constraints, all in training only:

* consistency: the common representations of every modality pair agree (mean squared difference);
* disparity: HSIC (Gaussian kernels) between every pair of private representations and between each
  modality's private and common representation is minimised, so they carry independent information;
* adversarial: a modality discriminator classifies which modality a common representation came from;
  it sees them through a gradient-reversal layer, so one optimiser trains the discriminator to win
  and the shared encoder to make modalities indistinguishable;
* reconstruction: ``common + private`` is decoded back to the utterance vector (MSE), which keeps the
  two parts together informative.

Fusion: the 2M representations attend to each other (multi-head self-attention, a residual and a
LayerNorm); adaptive per-sample weights (a softmax over a learned score of each attended
representation, times 2M so that equal weights leave the tokens unchanged) scale them, and an MLP
classifies their concatenation. With one modality the pairwise terms and the discriminator are absent.
Each constraint weighs 0.1 by default (times ``aux_weight``): at 1.0 the constraints collapsed the
common and private representations to constants before the classifier learned anything (measured on
the synthetic batch of tests/test_feature_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn

from e2e.config import non_negative
from e2e.data.batch import Batch, ModelOutput
from e2e.models.layers.losses import hsic, reverse_gradient
from e2e.models.layers.sequence import PooledTransformer, SequenceModelConfig, mlp
from e2e.models.layers.shared_private import SharedPrivate
from e2e.models.registry import register_model


@dataclass
class FDMERConfig(SequenceModelConfig):
    """FDMER's options. The shared ones mean:

    * ``d_model``: width of the utterance vectors and of the common and private representations;
    * ``temporal_layers``, ``temporal_ffn``: depth and FFN width of each modality's transformer encoder;
    * ``temporal_heads``: heads of those encoders and of the fusion self-attention.
    """

    name: str = "fdmer"
    aux_weight: float = non_negative(0.1)  # weight of the weighted sum of the four constraints
    consistency_weight: float = non_negative(0.1)  # MSE between the common representations
    disparity_weight: float = non_negative(0.1)  # HSIC between private pairs and private/common
    adversarial_weight: float = non_negative(0.1)  # the modality discriminator's cross-entropy
    reconstruction_weight: float = non_negative(0.1)  # MSE of the decoded common + private to the utterance


class FDMER(nn.Module):
    def __init__(self, config: FDMERConfig, num_classes: int):
        super().__init__()
        d, self.config = config.d_model, config
        self.representations = SharedPrivate(config, PooledTransformer)
        self.modalities = list(self.representations.encoders)
        self.discriminator = mlp(d, d, len(self.modalities), config.dropout)
        self.decoders = nn.ModuleDict({m: nn.Linear(d, d) for m in self.modalities})
        self.attention = nn.MultiheadAttention(d, config.temporal_heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.weight_score = nn.Linear(d, 1)
        self.head = mlp(2 * len(self.modalities) * d, d, num_classes, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        utterances, common, private = self.representations(batch)
        tokens = torch.stack([*common.values(), *private.values()], dim=1)
        attended = self.norm(tokens + self.attention(tokens, tokens, tokens, need_weights=False)[0])
        weights = torch.softmax(self.weight_score(attended), dim=1)  # (B, 2M, 1) adaptive fusion weights
        logits = self.head((weights * attended.shape[1] * attended).flatten(1))
        aux = self.config.aux_weight * self.losses(utterances, common, private) if self.training else None
        return ModelOutput(logits, aux_loss=aux, extras={"fusion_weights": weights.squeeze(-1)})

    def losses(self, utterances: dict, common: dict, private: dict) -> torch.Tensor:
        pairs = list(combinations(self.modalities, 2))
        zero = torch.tensor(0.0)
        consistency = sum((nn.functional.mse_loss(common[a], common[b]) for a, b in pairs), zero)
        disparity = sum((hsic(private[a], private[b]) for a, b in pairs), zero)
        disparity = disparity + sum(hsic(private[m], common[m]) for m in self.modalities)
        reconstruction = sum(
            nn.functional.mse_loss(self.decoders[m](common[m] + private[m]), utterances[m]) for m in self.modalities
        )
        return (
            self.config.consistency_weight * consistency
            + self.config.disparity_weight * disparity
            + self.config.adversarial_weight * self.adversarial_loss(common)
            + self.config.reconstruction_weight * reconstruction
        )

    def adversarial_loss(self, common: dict) -> torch.Tensor:
        """Cross-entropy of the modality discriminator on gradient-reversed common representations."""
        if len(common) < 2:
            return torch.tensor(0.0)
        inputs = torch.cat([reverse_gradient(common[m]) for m in self.modalities])
        targets = torch.arange(len(self.modalities)).repeat_interleave(len(common[self.modalities[0]]))
        return nn.functional.cross_entropy(self.discriminator(inputs), targets.to(inputs.device))


@register_model("fdmer", options=FDMERConfig, inputs="features")
def build_fdmer(config: FDMERConfig, class_names: list[str]) -> FDMER:
    return FDMER(config, len(class_names))
