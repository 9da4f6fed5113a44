"""MulT (Tsai et al., ACL 2019, "Multimodal Transformer for Unaligned Multimodal Language Sequences").

Each modality's feature sequence is projected to ``d_model`` by a temporal 1-D convolution (kernel
:data:`CONV_KERNEL`; zero padding at the ends equals the zero padding of shorter utterances, so the
result does not depend on batch padding), scaled by sqrt(d) and given sinusoidal positions. For every
ordered pair (source -> target) a cross-modal transformer lets the target attend to the source
(pre-LN blocks, ``temporal_layers`` deep, source padding masked): six directions for three
modalities, two for two. Per target the streams it received are concatenated and pass a
self-attention transformer; its last *valid* step (padding-aware) summarises the target. The
summaries are concatenated, go through the paper's residual projection block and a linear output.
One modality has no cross-modal direction: MulT refuses it.
"""
from __future__ import annotations

import math
from itertools import permutations

import torch
from torch import nn

from e2e.batch import Batch, ModelOutput
from e2e.config import ModelConfig
from e2e.models.encoders import sinusoidal_encoding
from e2e.models.registry import register_model
from e2e.models.sequence import modality_dims, padded_features

CONV_KERNEL = 3


class CrossModalBlock(nn.Module):
    """Pre-LN block: the target attends to the source (keys/values), then a position-wise FFN."""

    def __init__(self, d_model: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norm_target, self.norm_source, self.norm_ffn = (nn.LayerNorm(d_model) for _ in range(3))
        self.attention = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d_model))
        self.dropout = nn.Dropout(dropout)

    def attend(self, target: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor) -> torch.Tensor:
        """The attention update for ``target`` (before the residual)."""
        source = self.norm_source(source)
        update, _ = self.attention(self.norm_target(target), source, source, key_padding_mask=source_padding,
                                   need_weights=False)
        return self.dropout(update)

    def feed_forward(self, states: torch.Tensor) -> torch.Tensor:
        return states + self.dropout(self.ffn(self.norm_ffn(states)))

    def forward(self, target, source, source_padding):
        return self.feed_forward(target + self.attend(target, source, source_padding))


class CrossModalTransformer(nn.Module):
    """``layers`` cross-modal blocks; returns the target's states and this stack's auxiliary losses
    (none here; see MICA)."""

    def __init__(self, d_model: int, config: ModelConfig):
        super().__init__()
        self.blocks = nn.ModuleList(CrossModalBlock(d_model, config.temporal_heads, config.temporal_ffn,
                                                    config.dropout) for _ in range(config.temporal_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, target, target_padding, source, source_padding) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for block in self.blocks:
            target = block(target, source, source_padding)
        return self.norm(target), []


class MulT(nn.Module):
    crossmodal_class = CrossModalTransformer

    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        if len(dims) < 2:
            raise ValueError(f"{config.name} needs at least two modalities for cross-modal attention, "
                             f"got {config.modalities!r}")
        d = config.d_model
        self.d_model, self.dropout = d, nn.Dropout(config.dropout)
        self.projections = nn.ModuleDict({m: nn.Conv1d(dim, d, CONV_KERNEL, padding=CONV_KERNEL // 2, bias=False)
                                          for m, dim in dims.items()})
        self.crossmodal = nn.ModuleDict({source + target: self.crossmodal_class(d, config)
                                         for source, target in permutations(dims, 2)})
        memory = d * (len(dims) - 1)
        self.memories = nn.ModuleDict({m: CrossModalTransformer(memory, config) for m in dims})
        fused = memory * len(dims)
        self.residual = nn.Sequential(nn.Linear(fused, fused), nn.ReLU(), nn.Dropout(config.dropout),
                                      nn.Linear(fused, fused))
        self.output = nn.Linear(fused, num_classes)

    def embed(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        sequence, padding = padded_features(batch, modality)
        states = self.projections[modality](sequence.transpose(1, 2)).transpose(1, 2) * math.sqrt(self.d_model)
        states = states + sinusoidal_encoding(states.shape[1], self.d_model, states.device)
        return self.dropout(states), padding

    def forward(self, batch: Batch) -> ModelOutput:
        embedded = {m: self.embed(batch, m) for m in self.projections}
        summaries, aux = [], []
        for target, (states, padding) in embedded.items():
            streams = []
            for source, (source_states, source_padding) in embedded.items():
                if source != target:
                    stream, losses = self.crossmodal[source + target](states, padding, source_states, source_padding)
                    streams.append(stream)
                    aux += losses
            memory, _ = self.memories[target](torch.cat(streams, -1), padding, torch.cat(streams, -1), padding)
            summaries.append(last_valid(memory, padding))
        fused = torch.cat(summaries, dim=1)
        logits = self.output(self.residual(fused) + fused)
        return ModelOutput(logits, aux_loss=self.auxiliary_loss(aux))

    def auxiliary_loss(self, losses: list[torch.Tensor]) -> torch.Tensor | None:
        return None


def last_valid(states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """(B, d): each utterance's state at its last non-padding step."""
    last = (~padding).sum(1) - 1
    return states[torch.arange(len(states), device=states.device), last]


@register_model("mult", inputs="features")
def build_mult(config: ModelConfig, class_names: list[str]) -> MulT:
    return MulT(config, len(class_names))
