"""MulT's official transformer encoder (yaohungt/Multimodal-Transformer ``modules/``), which TFR-Net's
official code reuses unchanged (thuiar/MMSA ``models/subNets/transformers_encoder``): used by MulT
(:mod:`e2e.models.mult`) and TFR-Net (:mod:`e2e.models.tfr_net`).

* **Embedding** (``TransformerEncoder.forward``): every encoder embeds its own inputs, states times
  sqrt(width) plus fairseq's sinusoidal positions (:func:`official_positions`; optional, TFR-Net's
  temporal-axis encoders have none), then embedding dropout, drawn separately for the queries, the
  keys and the values of a source.
* **Blocks** (``TransformerEncoderLayer``): pre-LN, one LayerNorm for queries, keys and values,
  residual dropout after the attention and after the 4-wide ReLU FFN, ReLU dropout inside it; a
  final LayerNorm. Xavier-uniform weights and zero biases for the attention projections and the FFN.
* **Masks**: padded keys are always blocked (the official code attends to its fixed-length padding);
  with ``future`` also the official future mask on each utterance's own lengths.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from e2e.models.layers.crossmodal import future_mask


class Dropouts(NamedTuple):
    """The four dropout rates of an official encoder."""

    attention: float  # on the attention weights
    relu: float  # inside the FFN, after the ReLU
    residual: float  # on each attention and FFN update before its residual sum
    embedding: float  # on the embedded queries, keys and values


def official_positions(steps: int, width: int, device=None) -> torch.Tensor:
    """fairseq's sinusoidal embedding of positions 1..``steps``, ``(steps, width)``: the first half of
    the channels sines, the second half cosines (a zero channel last if ``width`` is odd)."""
    half = width // 2
    rate = math.log(10000.0) / max(half - 1, 1)
    frequency = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -rate)
    angles = torch.arange(1, steps + 1, device=device, dtype=torch.float32)[:, None] * frequency
    encoding = torch.cat([angles.sin(), angles.cos()], dim=1)
    return nn.functional.pad(encoding, (0, width % 2))


def blocked_keys(query_padding: torch.Tensor, key_padding: torch.Tensor, future: bool) -> torch.Tensor:
    """``(B, L_q, L_k)``, True where a query may not attend: padded keys and, with ``future``, key steps
    ``j > i + |L_k - L_q|`` of query step ``i`` (the official future mask on each utterance's lengths)."""
    blocked = key_padding[:, None, :].expand(-1, query_padding.shape[1], -1)
    return blocked | future_mask(query_padding, key_padding) if future else blocked


def xavier_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MulTBlock(nn.Module):
    """The official pre-LN encoder layer: ``x + res_drop(Attn(LN(x), LN(keys), LN(values)))``, then
    ``x + res_drop(fc2(relu_drop(relu(fc1(LN'(x))))))``; self-attention when ``keys`` is None."""

    def __init__(self, width: int, heads: int, ffn: int, dropouts: Dropouts):
        super().__init__()
        self.norm_attention, self.norm_ffn = nn.LayerNorm(width), nn.LayerNorm(width)
        # torch's in_proj is already Xavier-uniform with zero biases, out_proj's bias zero
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropouts.attention, batch_first=True)
        nn.init.xavier_uniform_(self.attention.out_proj.weight)
        self.fc1, self.fc2 = xavier_linear(width, ffn), xavier_linear(ffn, width)
        self.relu_dropout, self.res_dropout = nn.Dropout(dropouts.relu), nn.Dropout(dropouts.residual)

    def forward(
        self, states: torch.Tensor, keys: torch.Tensor | None, values: torch.Tensor | None, blocked: torch.Tensor
    ) -> torch.Tensor:
        queries = self.norm_attention(states)
        if keys is None:
            keys = values = queries
        else:
            keys, values = self.norm_attention(keys), self.norm_attention(values)
        update, _ = self.attention(queries, keys, values, attn_mask=blocked, need_weights=False)
        states = states + self.res_dropout(update)
        hidden = self.relu_dropout(torch.relu(self.fc1(self.norm_ffn(states))))
        return states + self.res_dropout(self.fc2(hidden))


class MulTEncoder(nn.Module):
    """The official ``TransformerEncoder``: embeds its inputs (scale, ``positions``, dropout), runs its
    blocks and a final LayerNorm; cross-modal when given a source, self-attention otherwise."""

    def __init__(
        self, width: int, layers: int, heads: int, ffn: int, dropouts: Dropouts, future: bool, positions: bool = True
    ):
        super().__init__()
        self.width, self.heads, self.future, self.positions = width, heads, future, positions
        self.dropout = nn.Dropout(dropouts.embedding)
        self.blocks = nn.ModuleList(MulTBlock(width, heads, ffn, dropouts) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def embed(self, states: torch.Tensor) -> torch.Tensor:
        states = states * math.sqrt(self.width)
        if self.positions:
            states = states + official_positions(states.shape[1], self.width, states.device).to(states.dtype)
        return self.dropout(states)

    def encode(
        self,
        states: torch.Tensor,
        padding: torch.Tensor,
        source: torch.Tensor | None = None,
        source_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``(B, L, width)`` states of the queries ``states`` after attending to ``source`` (or themselves)."""
        keys = values = None
        if source is None:
            source_padding = padding
        else:
            keys, values = self.embed(source), self.embed(source)  # two dropout draws, as officially
        blocked = blocked_keys(padding, source_padding, self.future).repeat_interleave(self.heads, dim=0)
        states = self.embed(states)
        for block in self.blocks:
            states = block(states, keys, values, blocked)
        return self.norm(states)

    def forward(
        self,
        states: torch.Tensor,
        padding: torch.Tensor,
        source: torch.Tensor | None = None,
        source_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.encode(states, padding, source, source_padding)
