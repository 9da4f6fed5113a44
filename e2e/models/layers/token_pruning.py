"""MESM for transformers: text-queried top-p token pruning between the layers of a vision / speech encoder.

After a chosen layer, every patch / frame token ``x`` of an image / audio chunk is scored against its
utterance's text CLS ``t`` with the cross-modal attention of MESM's sparse CNN
(:class:`~e2e.models.layers.sparse.CrossModalAttention`, ``e = wᵀ tanh(W_x x + b_x + W_t t)``), a softmax
is taken over the chunk's candidate tokens, and the deterministic nucleus of
:func:`~e2e.models.layers.sparse.top_p_mask` is kept (at least one token; ``p >= 1`` keeps all). Special
tokens (CLS, DINOv2's registers) are never scored and always kept. The kept tokens are *gathered*, in
their original order, into a shorter ``(N, K, D)`` tensor (``K`` = the most any chunk kept; shorter rows
are padded and masked out of attention), so the remaining layers run on ``K`` tokens: real compute saved.

``faithful``: select only, as MESM's official code (the scorer gets no gradient). ``trainable``: kept
tokens are multiplied by α times the chunk's candidate count (mean 1, as
:func:`~e2e.models.layers.sparse.attention_weights`), so the scorer learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import UsageError
from e2e.models.layers.sparse import ATTENTION_MODES, CrossModalAttention, attend, attention_weights
from e2e.models.layers.sparse_conv import autocast_off


@dataclass
class TokenState:
    """The tokens a layer runs on: ``hidden`` (N, K, D); ``valid`` (N, K) bool (False = padding);
    ``positions`` (N, K) long: each token's index in the unpruned sequence (-1 for padding)."""

    hidden: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor

    @classmethod
    def full(cls, hidden: torch.Tensor) -> TokenState:
        frames, tokens = hidden.shape[:2]
        positions = torch.arange(tokens, device=hidden.device).expand(frames, tokens)
        return cls(hidden, torch.ones(frames, tokens, dtype=torch.bool, device=hidden.device), positions)

    def attention_mask(self) -> torch.Tensor | None:
        """Additive (N, 1, 1, K) mask hiding padding from every query; None without padding."""
        if bool(self.valid.all()):
            return None
        blocked = torch.finfo(self.hidden.dtype).min
        mask = torch.zeros(self.valid.shape, dtype=self.hidden.dtype, device=self.hidden.device)
        return mask.masked_fill(~self.valid, blocked)[:, None, None, :]


@dataclass
class PruneTrace:
    """What one pruning step did, per chunk, over the unpruned token positions (N, T_full)."""

    after_layer: int  # pruned after this many encoder layers
    keep: torch.Tensor  # (N, T_full) bool: tokens the following layers run on (special tokens included)
    attention: torch.Tensor  # (N, T_full) float: α over the candidate tokens, 0 elsewhere
    candidates: torch.Tensor  # (N, T_full) bool: tokens that were scored


class TokenPruner(nn.Module):
    """Scores the non-special tokens of a :class:`TokenState` against the text and keeps the top-p."""

    def __init__(self, hidden_size: int, text_dim: int, top_p: float, attention_mode: str, special_tokens: int):
        super().__init__()
        if attention_mode not in ATTENTION_MODES:
            raise UsageError(f"attention_mode must be one of {', '.join(ATTENTION_MODES)}, got {attention_mode!r}")
        if not 0.0 < top_p <= 1.0:
            raise UsageError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p, self.attention_mode, self.special_tokens = top_p, attention_mode, special_tokens
        self.attention = CrossModalAttention(hidden_size, text_dim)

    def forward(
        self, state: TokenState, text: torch.Tensor, full_tokens: int, after_layer: int
    ) -> tuple[TokenState, PruneTrace]:
        """``text`` (N, text_dim): each chunk's own utterance's text CLS."""
        special = state.positions < self.special_tokens
        candidates = state.valid & ~special
        with autocast_off(text.device):
            text_term = self.attention.text_term(text)[:, None, :]
            scores = self.attention(state.hidden, text_term)
            alpha, keep = attend(scores, candidates, self.top_p)
        hidden = state.hidden
        if self.attention_mode == "trainable":
            scale = torch.where(candidates, attention_weights(alpha, candidates), torch.ones_like(alpha))
            hidden = hidden * scale[..., None].to(hidden.dtype)
        kept = keep | (special & state.valid)
        pruned = gather_tokens(TokenState(hidden, state.valid, state.positions), kept)
        return pruned, PruneTrace(
            after_layer,
            scatter_full(kept, state.positions, full_tokens),
            scatter_full(alpha.detach(), state.positions, full_tokens),
            scatter_full(candidates, state.positions, full_tokens),
        )


def gather_tokens(state: TokenState, kept: torch.Tensor) -> TokenState:
    """The ``kept`` (N, K) tokens of every row, in their order, packed to the left into (N, K', D) with
    K' = the most any row kept; the rest of a row is padding (``valid`` False)."""
    counts = kept.sum(dim=1)
    width = int(counts.max())
    # a stable sort on "not kept" moves each row's kept tokens to the front, in their original order
    order = (~kept).to(torch.int8).sort(dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width, device=kept.device)[None, :] < counts[:, None]
    hidden = state.hidden.gather(1, order[..., None].expand(-1, -1, state.hidden.shape[-1]))
    positions = state.positions.gather(1, order).masked_fill(~valid, -1)
    return TokenState(hidden, valid, positions)


def scatter_full(values: torch.Tensor, positions: torch.Tensor, full_tokens: int) -> torch.Tensor:
    """(N, K) per-token ``values`` at ``positions`` → (N, full_tokens), zero / False elsewhere."""
    out = values.new_zeros(values.shape[0], full_tokens + 1)  # the last column takes padding (-1)
    index = positions.masked_fill(positions < 0, full_tokens)
    return out.scatter(1, index, values)[:, :full_tokens]


def parse_prune_layers(spec: str | int, num_layers: int, what: str) -> tuple[int, ...]:
    """``"2,4"`` → (2, 4), ``4`` → (4,): prune after those encoder layers (1-based, increasing, <
    ``num_layers``); ``""``: none."""
    spec = str(spec)
    if not spec.strip():
        return ()
    try:
        layers = tuple(int(part) for part in spec.split(","))
    except ValueError:
        raise UsageError(f"{what} must be comma-separated layer numbers like '4' or '3,6', got {spec!r}") from None
    if list(layers) != sorted(set(layers)) or layers[0] < 1 or layers[-1] >= num_layers:
        raise UsageError(
            f"{what}={spec!r}: layer numbers must increase and lie in 1..{num_layers - 1} "
            f"(the encoder has {num_layers} layers; pruning after the last would save nothing)"
        )
    return layers
