"""TFR-Net (Yuan et al., ACM MM 2021, "Transformer-based Feature Reconstruction Network for Robust
Multimodal Sentiment Analysis"), for emotion classification on two-stage features.

* Training-time masking: in every utterance and modality, ``round(train_missing_rate * L)`` of the L
  valid steps (at most L - 1, so one always stays) are chosen at random and set to zero; padding is
  never touched. No masking in eval.
* Intra-modal transformers (self-attention per modality) and inter-modal transformers: each modality
  attends to the concatenated states of the other modalities (their padding masked).
* Reconstruction: a linear head predicts the original (standardised) features from each modality's
  inter-modal states; SmoothL1 on the masked positions only, times ``aux_weight``, is the auxiliary loss.
* Fusion: a CNN-gated encoder per modality (a 1-D convolution whose output is gated by a sigmoid
  convolution, GLU-style), mean-pooled over the valid steps; the modality vectors are concatenated and
  an MLP classifies them. With one modality the inter-modal step is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import fraction, non_negative, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.layers.losses import masked_smooth_l1
from e2e.models.layers.sequence import (
    SequenceEncoder,
    SequenceModelConfig,
    masked_mean,
    mlp,
    modality_dims,
    padded_features,
)
from e2e.models.registry import register_model


@dataclass
class TFRNetConfig(SequenceModelConfig):
    """TFR-Net's options. The shared ones mean:

    * ``d_model``: width of the intra-modal states, the inter-modal attention and the gated convolutions;
    * ``temporal_layers``, ``temporal_ffn``: depth and FFN width of each intra-modal transformer;
    * ``temporal_heads``: heads of the intra-modal transformers and of the inter-modal attention.
    """

    name: str = "tfr_net"
    aux_weight: float = non_negative(0.1)  # weight of the reconstruction loss on the masked steps
    train_missing_rate: float = fraction(0.0)  # fraction of valid feature steps masked at random in training
    gate_kernel: int = positive(3)  # kernel of the fusion's gated convolutions (odd keeps the length)


def random_step_mask(padding: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L) bool: ``round(rate * L_b)`` random valid steps per utterance (at most L_b - 1); never padding."""
    valid = ~padding
    lengths = valid.sum(1)
    counts = torch.minimum((rate * lengths.float()).round().long(), lengths - 1)
    scores = torch.rand(padding.shape, generator=generator, device=padding.device).masked_fill(padding, 2.0)
    ranks = scores.argsort(1).argsort(1)  # rank of each step among its utterance's steps, valid ones first
    return (ranks < counts[:, None]) & valid


class GatedConvEncoder(nn.Module):
    """``conv(x) * sigmoid(gate(x))`` over time, mean-pooled over the valid steps."""

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2)
        self.gate = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2)

    def forward(self, states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        states = states.masked_fill(padding.unsqueeze(-1), 0.0).transpose(1, 2)
        gated = self.conv(states) * torch.sigmoid(self.gate(states))
        return masked_mean(gated.transpose(1, 2), padding)


class TFRNet(nn.Module):
    def __init__(self, config: TFRNetConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        d = config.d_model
        self.missing_rate, self.aux_weight = config.train_missing_rate, config.aux_weight
        self.intra = nn.ModuleDict({m: SequenceEncoder(dim, config) for m, dim in dims.items()})
        self.inter = nn.ModuleDict(
            {m: nn.MultiheadAttention(d, config.temporal_heads, dropout=config.dropout, batch_first=True) for m in dims}
            if len(dims) > 1
            else {}
        )
        self.norms = nn.ModuleDict({m: nn.LayerNorm(d) for m in dims})
        self.reconstruct = nn.ModuleDict({m: nn.Linear(d, dim) for m, dim in dims.items()})
        self.fusion = nn.ModuleDict({m: GatedConvEncoder(d, config.gate_kernel) for m in dims})
        self.head = mlp(len(dims) * d, d, num_classes, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        inputs = {m: padded_features(batch, m) for m in self.intra}
        masks = {
            m: random_step_mask(padding, self.missing_rate)
            if self.training and self.missing_rate > 0
            else torch.zeros_like(padding)
            for m, (_, padding) in inputs.items()
        }
        intra = {
            m: self.intra[m](sequence.masked_fill(masks[m].unsqueeze(-1), 0.0), padding)
            for m, (sequence, padding) in inputs.items()
        }
        states = {m: self.norms[m](intra[m] + self._attend_others(m, intra, inputs)) for m in intra}
        vectors = [self.fusion[m](states[m], inputs[m][1]) for m in states]
        logits = self.head(torch.cat(vectors, dim=1))
        aux = None
        if self.training:
            aux = self.aux_weight * sum(
                masked_smooth_l1(self.reconstruct[m](states[m]), inputs[m][0], masks[m]) for m in states
            )
        return ModelOutput(logits, aux_loss=aux, extras={"masks": masks})

    def _attend_others(self, modality: str, intra: dict, inputs: dict) -> torch.Tensor:
        """Inter-modal update: ``modality`` attends to the other modalities' concatenated states."""
        if modality not in self.inter:
            return torch.zeros_like(intra[modality])
        others = [m for m in intra if m != modality]
        keys = torch.cat([intra[m] for m in others], dim=1)
        key_padding = torch.cat([inputs[m][1] for m in others], dim=1)
        update, _ = self.inter[modality](intra[modality], keys, keys, key_padding_mask=key_padding, need_weights=False)
        return update


@register_model("tfr_net", options=TFRNetConfig, inputs="features")
def build_tfr_net(config: TFRNetConfig, class_names: list[str]) -> TFRNet:
    return TFRNet(config, len(class_names))
