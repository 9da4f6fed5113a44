"""The cross-modal network of MulT and MICA: temporal convolutions, one cross-modal stack per ordered
modality pair, a self-attention memory per target, the last-valid read-out and a residual head.

:class:`MulT` with its default stacks (:class:`PreLNBlock`: positions and scaling once at the
embedding, a separate LayerNorm for the source, one ``dropout``) is the network MICA
(:mod:`e2e.models.mica`) builds on. MulT's paper structure (:mod:`e2e.models.mult`) subclasses it and
replaces the embedding, the stacks and the dropouts through the hooks ``embed``,
``build_crossmodal``, ``build_memory``, ``embedding_dropout`` and ``output_dropout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations

import torch
from torch import nn

from e2e.config import UsageError, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.layers.encoders import sinusoidal_encoding
from e2e.models.layers.sequence import SequenceModelConfig, modality_dims, padded_features


@dataclass
class CrossModalConfig(SequenceModelConfig):
    """Options of the cross-modal network (MICA; :class:`e2e.models.mult.MulTConfig` adds MulT's own).
    The shared ones mean:

    * ``d_model``: width of every modality's convolved sequence and of each cross-modal stream;
    * ``temporal_layers``: depth of each cross-modal transformer and of each self-attention memory;
    * ``temporal_heads``: attention heads of every block;
    * ``temporal_ffn``: FFN width of a ``d_model``-wide block (scaled with the block's width);
    * ``dropout``: every dropout of the default stacks (embedding, attention, residual, output); MulT's
      options separate them.

    The temporal convolution kernels are the paper's IEMOCAP sizes (L/V/A = 3/3/5; its official code
    uses 1); they must be odd.
    """

    text_kernel: int = positive(3)  # kernel of the text features' temporal convolution
    audio_kernel: int = positive(5)  # kernel of the audio features' temporal convolution
    visual_kernel: int = positive(3)  # kernel of the visual features' temporal convolution

    def conv_kernel(self, modality: str) -> int:
        return {"t": self.text_kernel, "a": self.audio_kernel, "v": self.visual_kernel}[modality]


def direction_name(source: str, target: str) -> str:
    """Key of the cross-modal transformer in which ``target`` attends to ``source``."""
    return f"{source}_to_{target}"


class PreLNBlock(nn.Module):
    """Pre-LN transformer block: ``x + Attn(LN(x), LN'(source))`` then ``x + FFN(LN(x))``.

    Cross-modal blocks normalise the source with their own LayerNorm; self-attention blocks
    (``crossmodal=False``) attend to the normalised query sequence itself.
    """

    def __init__(self, d_model: int, config: CrossModalConfig, crossmodal: bool):
        super().__init__()
        ffn = config.temporal_ffn * d_model // config.d_model
        self.norm_query, self.norm_ffn = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.norm_source = nn.LayerNorm(d_model) if crossmodal else None
        self.attention = nn.MultiheadAttention(d_model, config.temporal_heads, dropout=config.dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(ffn, d_model)
        )
        self.dropout = nn.Dropout(config.dropout)

    def attend(self, states: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor) -> torch.Tensor:
        """The attention update of ``states`` (before dropout and residual)."""
        queries = self.norm_query(states)
        keys = queries if self.norm_source is None else self.norm_source(source)
        update, _ = self.attention(queries, keys, keys, key_padding_mask=source_padding, need_weights=False)
        return update

    def feed_forward(self, states: torch.Tensor) -> torch.Tensor:
        return states + self.dropout(self.ffn(self.norm_ffn(states)))

    def forward(self, states: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(states + self.dropout(self.attend(states, source, source_padding)))


class BlockStack(nn.Module):
    """``temporal_layers`` pre-LN blocks and the final LayerNorm of a pre-LN transformer."""

    def __init__(self, d_model: int, config: CrossModalConfig, crossmodal: bool):
        super().__init__()
        self.blocks = nn.ModuleList(PreLNBlock(d_model, config, crossmodal) for _ in range(config.temporal_layers))
        self.norm = nn.LayerNorm(d_model)


class CrossModalTransformer(BlockStack):
    """The target attends to the same source sequence at every layer. ``forward`` returns the target's
    states and the stack's auxiliary losses (none here; MICA's subclass adds some)."""

    def __init__(self, d_model: int, config: CrossModalConfig):
        super().__init__(d_model, config, crossmodal=True)

    def forward(
        self, target: torch.Tensor, target_padding: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for block in self.blocks:
            target = block(target, source, source_padding)
        return self.norm(target), []


class SelfAttentionTransformer(BlockStack):
    def __init__(self, d_model: int, config: CrossModalConfig):
        super().__init__(d_model, config, crossmodal=False)

    def forward(self, states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            states = block(states, states, padding)
        return self.norm(states)


def future_mask(query_padding: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
    """``(B, L_q, L_k)`` bool, True = blocked: MulT's official future mask (``buffered_future_mask``) on each
    utterance's own lengths, query step ``i`` sees key steps ``j <= i + |L_k - L_q|`` (self-attention:
    ``j <= i``). TFR-Net's official code uses the same transformer."""
    offset = ((~key_padding).sum(1) - (~query_padding).sum(1)).abs()
    query_steps = torch.arange(query_padding.shape[1], device=offset.device)[None, :, None]
    key_steps = torch.arange(key_padding.shape[1], device=offset.device)[None, None, :]
    return key_steps > query_steps + offset[:, None, None]


def temporal_convolution(in_features: int, d_model: int, kernel: int) -> nn.Conv1d:
    """Bias-free 1-D convolution to ``d_model`` that keeps the sequence length (hence odd kernels only)."""
    if kernel % 2 == 0:
        raise UsageError(f"MulT's temporal convolution kernels must be odd to keep the sequence length, got {kernel}")
    return nn.Conv1d(in_features, d_model, kernel, padding=kernel // 2, bias=False)


class MulT(nn.Module):
    """The cross-modal network. Subclasses change the cross-modal stacks (``crossmodal_class`` or
    ``build_crossmodal``), the memories (``build_memory``), the embedding (``embed``), the dropouts
    (``embedding_dropout``, ``output_dropout``) and ``auxiliary_loss``."""

    crossmodal_class = CrossModalTransformer

    def __init__(self, config: CrossModalConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        if len(dims) < 2:
            raise UsageError(
                f"{config.name} needs at least two modalities for cross-modal attention, got {config.modalities!r}"
            )
        d = config.d_model
        self.d_model, self.dropout = d, nn.Dropout(self.embedding_dropout(config))
        self.projections = nn.ModuleDict(
            {m: temporal_convolution(dim, d, config.conv_kernel(m)) for m, dim in dims.items()}
        )
        self.crossmodal = nn.ModuleDict(
            {
                direction_name(source, target): self.build_crossmodal(source, target, config)
                for source, target in permutations(dims, 2)
            }
        )
        memory = d * (len(dims) - 1)
        self.memories = nn.ModuleDict({m: self.build_memory(memory, config) for m in dims})
        fused = memory * len(dims)
        self.residual = nn.Sequential(
            nn.Linear(fused, fused), nn.ReLU(), nn.Dropout(self.output_dropout(config)), nn.Linear(fused, fused)
        )
        self.output = nn.Linear(fused, num_classes)

    def build_crossmodal(self, source: str, target: str, config: CrossModalConfig) -> nn.Module:
        """The stack in which ``target`` attends to ``source``: ``forward(target, target_padding, source,
        source_padding)`` returns the target's states and a list of auxiliary losses."""
        return self.crossmodal_class(self.d_model, config)

    def build_memory(self, width: int, config: CrossModalConfig) -> nn.Module:
        """A target's self-attention memory: ``forward(states, padding)`` returns the states."""
        return SelfAttentionTransformer(width, config)

    def embedding_dropout(self, config: CrossModalConfig) -> float:
        """The rate of ``self.dropout``, which :meth:`embed` applies."""
        return config.dropout

    def output_dropout(self, config: CrossModalConfig) -> float:
        """The dropout inside the residual block before the output layer."""
        return config.dropout

    def embed(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolved, scaled, position-encoded states ``(B, L, d)`` and the padding mask."""
        sequence, padding = padded_features(batch, modality)
        states = self.projections[modality](sequence.transpose(1, 2)).transpose(1, 2) * math.sqrt(self.d_model)
        states = states + sinusoidal_encoding(states.shape[1], self.d_model, states.device)
        return self.dropout(states), padding

    def summarise(
        self, target: str, embedded: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``target``'s utterance vector (B, d * (M - 1)) and the auxiliary losses of its cross-modal stacks."""
        states, padding = embedded[target]
        streams, losses = [], []
        for source, (source_states, source_padding) in embedded.items():
            if source != target:
                stream, stream_losses = self.crossmodal[direction_name(source, target)](
                    states, padding, source_states, source_padding
                )
                streams.append(stream)
                losses += stream_losses
        memory = self.memories[target](torch.cat(streams, dim=-1), padding)
        return last_valid(memory, padding), losses

    def forward(self, batch: Batch) -> ModelOutput:
        embedded = {m: self.embed(batch, m) for m in self.projections}
        summaries, losses = zip(*(self.summarise(target, embedded) for target in embedded))
        fused = torch.cat(summaries, dim=1)
        logits = self.output(fused + self.residual(fused))
        return ModelOutput(logits, aux_loss=self.auxiliary_loss([loss for group in losses for loss in group]))

    def auxiliary_loss(self, losses: list[torch.Tensor]) -> torch.Tensor | None:
        return None


def last_valid(states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """(B, d): each utterance's state at its last non-padding step."""
    last = (~padding).sum(1) - 1
    return states[torch.arange(len(states), device=states.device), last]
