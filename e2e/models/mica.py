"""MICA (Liang et al., ICCV 2021, "Attention is not Enough: Mitigating the Distribution Discrepancy in
Asynchronous Multimodal Sequence Fusion"; Modality-Invariant Crossmodal Attention).

The paper keeps MulT's architecture and argues that a query from one modality and keys from another
live in mismatched distributions, so the learnt cross-modal attention is unreliable; it aligns the
*marginal* distributions of queries and keys and the *elements* with high-confidence correlations
in the common query/key space. Here: MulT's network (:class:`~e2e.models.layers.crossmodal.MulT`) with
every cross-modal stack replaced by :class:`AlignedCrossModalTransformer`, which adds, at every layer ``l``:

* **merging gate**: ``g = sigmoid(W [x; u])`` (per element and channel, in (0, 1)) decides how much
  of the cross-modal update ``u = Attn(LN(x), LN(source))`` enters the target stream:
  ``x + dropout(g * u)`` instead of MulT's ``x + dropout(u)``, then the FFN as in MulT.
* **marginal alignment**: squared MMD (:func:`e2e.models.layers.losses.mmd`, biased estimate) between the
  layer's projected queries ``W_q LN(x)`` of the valid target steps and projected keys
  ``W_k LN(source)`` of the valid source steps of the whole batch (heads concatenated; at most
  ``mmd_tokens`` random tokens of each side). Kernel: a sum of Gaussians
  ``exp(-|a - b|^2 / (s * h))`` for ``h`` in (0.5, 1, 2, 4), ``s`` the (detached) mean squared
  distance of the pooled tokens, so the loss cannot be lowered by merely shrinking the vectors.
* **propagated element-level alignment** (from the second layer on; the paper's exact form is not
  reproduced, this is our reading): each valid target element's update ``u_l[i]`` is pulled
  towards the same element's update of the previous layer ``u_{l-1}[i]`` (detached), squared error
  averaged over channels, weighted by the element's attention confidence at layer ``l``,
  ``c_i = 1 - H(A_l[i, :]) / log(n)`` with ``A_l`` the layer's softmax(q k^T / sqrt(d_head)) recomputed
  from the projected queries and keys without dropout (detached), per head then averaged over heads,
  ``n`` the number of valid source steps (``c = 1`` when ``n = 1``): 1 for a one-hot, 0 for a uniform
  attention row. Loss ``= sum_i c_i |u_l[i] - u_{l-1}[i]|^2 / d / sum_i c_i``: the correspondences the
  attention is sure about are propagated through depth; 0 when consecutive layers' updates agree.

``aux_loss = aux_weight * sum over layers (MMD + element_weight * element alignment)``, averaged over
the cross-modal directions; computed in training only (``None`` in eval). The self-attention memory
transformers, read-out and output are MulT's.

No official code is public; the fidelity table lists, per loss and layer, what is implemented and each
choice the paper leaves open here, and takes MulT's published hyperparameters (the paper keeps MulT's
setting).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import fraction, non_negative, positive
from e2e.models.fidelity import OURS, UNREAD, FidelityTable, PerDataset, Setting, bf16_setting, unread_setting
from e2e.models.layers.crossmodal import CrossModalConfig, CrossModalTransformer, MulT, PreLNBlock
from e2e.models.layers.losses import mmd
from e2e.models.registry import register_model


@dataclass
class MICAConfig(CrossModalConfig):
    """MICA's options: those of MulT's network (see :class:`CrossModalConfig`; ``temporal_layers`` >= 2
    for the element alignment, which is between layers, to exist) and its alignment losses."""

    name: str = "mica"
    d_model: int = positive(40)
    temporal_heads: int = positive(10)
    temporal_ffn: int = positive(160)  # 4 d, as MulT's blocks
    dropout: float = fraction(0.25)  # MulT's crossmodal attention block dropout (IEMOCAP)
    aux_weight: float = non_negative(0.1)  # weight of the summed alignment losses, averaged over directions
    mmd_tokens: int = positive(256)  # at most this many random queries and keys per side enter each MMD
    element_weight: float = non_negative(1.0)  # element alignment relative to the MMD, per layer


_PAPER = (
    "Liang et al., Attention is not Enough: Mitigating the Distribution Discrepancy in Asynchronous Multimodal "
    "Sequence Fusion, ICCV 2021"
)
_MULT = "MulT paper Table 5 (Tsai et al. 2019; pmc.ncbi.nlm.nih.gov/articles/PMC7195022/table/T5), which MICA keeps"
_SOURCE = "paper (no official code is public; its full text was not reachable when this table was written)"

FIDELITY = FidelityTable(
    "mica",
    f"{_PAPER}; no official code",
    (
        Setting(
            "network",
            "MulT's (temporal convolutions, cross-modal transformers per ordered pair, self-attention memories)",
            "paper, method section",
            paper="the toolkit's cross-modal network (pre-LN blocks, one dropout, padded keys masked, last valid "
            "step read out)",
            why="open: MICA's paper builds on MulT without code; MulT's official block details (separate "
            "dropouts, causal mask, embedding scaling) are in the mult model, not yet under MICA's layers",
        ),
        Setting(
            "merging gate",
            "a gate merges the cross-modal update into the target stream",
            "paper, method section",
            paper="x + dropout(sigmoid(W [x; u]) * u), then MulT's FFN",
            why="open: the gate's input and form; per element and channel",
        ),
        Setting(
            "marginal distribution alignment",
            "queries and keys of a cross-modal layer are aligned in distribution",
            "paper, method section",
            paper="squared MMD (biased), sum of Gaussian kernels at 0.5, 1, 2, 4 x the detached mean squared "
            "distance, between the valid projected queries and keys of the batch, per layer",
            why="open: the discrepancy and kernel; scale-free so that shrinking the vectors cannot lower it",
        ),
        Setting(
            "element-level alignment",
            "elements with high-confidence correlations are aligned, propagated over the layers",
            "paper, method section",
            paper="confidence-weighted squared error between an element's update at layer l and at l-1 "
            "(detached); confidence 1 - entropy / log(valid keys) of its attention row",
            why="open: our reading; the paper's exact form could not be reproduced here",
        ),
        Setting(
            "alignment loss weight",
            UNREAD,
            _SOURCE,
            "model.aux_weight",
            paper=0.1,
            why=OURS + "; the sum over layers is averaged over the cross-modal directions",
        ),
        unread_setting("element alignment weight (relative to MMD)", _SOURCE, "model.element_weight", 1.0),
        Setting(
            "tokens per MMD side",
            "all",
            "paper (no subsampling described)",
            "model.mmd_tokens",
            paper=256,
            why="at most 256 random valid tokens per side keep the kernel matrices small; a batch rarely has fewer",
        ),
        Setting("hidden size d", 40, _MULT, "model.d_model"),
        Setting("cross-modal blocks", 4, _MULT, "model.temporal_layers"),
        Setting("attention heads", PerDataset({"iemocap": 10, "mosei": 8}), _MULT, "model.temporal_heads"),
        Setting("FFN width", "4 x d", "MulT official modules/transformer.py (fc1)", "model.temporal_ffn", paper=160),
        Setting("text conv kernel", PerDataset({"iemocap": 3, "mosei": 1}), _MULT, "model.text_kernel"),
        Setting("audio conv kernel", PerDataset({"iemocap": 5, "mosei": 3}), _MULT, "model.audio_kernel"),
        Setting("visual conv kernel", 3, _MULT, "model.visual_kernel"),
        Setting(
            "dropout",
            PerDataset({"iemocap": 0.25, "mosei": 0.1}),
            f"{_MULT} (crossmodal attention block dropout)",
            "model.dropout",
            why="one dropout for every role in our blocks",
        ),
        Setting("batch size", PerDataset({"iemocap": 32, "mosei": 16}), _MULT, "data.batch_size"),
        Setting("learning rate (Adam)", PerDataset({"iemocap": 2e-3, "mosei": 1e-3}), _MULT, "train.lr"),
        Setting("gradient clipping (norm)", PerDataset({"iemocap": 0.8, "mosei": 1.0}), _MULT, "train.grad_clip"),
        Setting("epochs", PerDataset({"iemocap": 30, "mosei": 20}), _MULT, "train.epochs"),
        Setting(
            "early stopping",
            0,
            "MulT official src/train.py (every epoch runs; the best valid epoch is kept)",
            "train.early_stop_patience",
            why="0 = never stop early, as MulT",
        ),
        bf16_setting(
            "precision",
            False,
            "paper (no mixed precision reported)",
            "improved: bf16 autocast on CUDA (the alignment losses are computed in fp32)",
        ),
    ),
)


class AlignedCrossModalTransformer(CrossModalTransformer):
    """MulT's cross-modal stack with a merging gate per layer and, in training, the alignment losses."""

    def __init__(self, d_model: int, config: MICAConfig):
        super().__init__(d_model, config)
        self.gates = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in self.blocks)
        self.mmd_tokens, self.element_weight = config.mmd_tokens, config.element_weight

    def forward(
        self, target: torch.Tensor, target_padding: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        losses, previous = [], None
        for block, gate in zip(self.blocks, self.gates):
            update = block.attend(target, source, source_padding)
            if self.training:
                losses += self.alignment_losses(block, target, target_padding, source, source_padding, update, previous)
            target = block.feed_forward(target + block.dropout(merging_gate(gate, target, update) * update))
            previous = update
        return self.norm(target), losses

    def alignment_losses(
        self,
        block: PreLNBlock,
        target: torch.Tensor,
        target_padding: torch.Tensor,
        source: torch.Tensor,
        source_padding: torch.Tensor,
        update: torch.Tensor,
        previous: torch.Tensor | None,
    ) -> list[torch.Tensor]:
        """This layer's MMD of queries and keys and, after the first layer, its element alignment."""
        queries, keys = queries_and_keys(block, target, source)
        losses = [
            mmd(
                sample_tokens(queries, target_padding, self.mmd_tokens).float(),
                sample_tokens(keys, source_padding, self.mmd_tokens).float(),
            )
        ]
        if previous is not None:
            attention = attention_weights(queries.detach(), keys.detach(), source_padding, block.attention.num_heads)
            confidence = attention_confidence(attention, source_padding)
            losses.append(
                self.element_weight * element_alignment(update, previous.detach(), target_padding, confidence)
            )
        return losses


def merging_gate(gate: nn.Linear, target: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """Per-element weights in (0, 1) for the cross-modal update."""
    return torch.sigmoid(gate(torch.cat([target, update], dim=-1)))


def queries_and_keys(
    block: PreLNBlock, target: torch.Tensor, source: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's projected queries ``(B, L_t, d)`` and keys ``(B, L_s, d)`` (all heads), as its
    attention computes them."""
    d = target.shape[-1]
    weight, bias = block.attention.in_proj_weight, block.attention.in_proj_bias
    queries = nn.functional.linear(block.norm_query(target), weight[:d], bias[:d])
    keys = nn.functional.linear(block.norm_source(source), weight[d : 2 * d], bias[d : 2 * d])
    return queries, keys


def sample_tokens(states: torch.Tensor, padding: torch.Tensor, limit: int) -> torch.Tensor:
    """The valid rows of ``states`` (N, d), at most ``limit`` of them drawn at random."""
    valid = states[~padding]
    if len(valid) <= limit:
        return valid
    return valid[torch.randperm(len(valid), device=valid.device)[:limit]]


def attention_weights(
    queries: torch.Tensor, keys: torch.Tensor, source_padding: torch.Tensor, heads: int
) -> torch.Tensor:
    """Scaled dot-product attention ``(B, heads, L_t, L_s)`` without dropout, padded keys masked."""

    def split(states: torch.Tensor) -> torch.Tensor:
        return states.unflatten(-1, (heads, -1)).transpose(1, 2).float()

    queries, keys = split(queries), split(keys)
    scores = queries @ keys.transpose(-1, -2) / math.sqrt(queries.shape[-1])
    return scores.masked_fill(source_padding[:, None, None, :], float("-inf")).softmax(-1)


def attention_confidence(attention: torch.Tensor, source_padding: torch.Tensor) -> torch.Tensor:
    """``(B, L_t)``: ``1 - entropy / log(valid keys)`` of each attention row (1 = one-hot, 0 = uniform; 1
    when there is one valid key), averaged over the heads of ``attention`` (B, heads, L_t, L_s)."""
    entropy = -torch.special.xlogy(attention, attention).sum(-1)
    valid_keys = (~source_padding).sum(-1).to(attention.dtype)[:, None, None]
    normalised = entropy / valid_keys.log().clamp(min=torch.finfo(attention.dtype).tiny)
    confidence = torch.where(valid_keys > 1, 1 - normalised, torch.ones_like(entropy))
    return confidence.clamp(0.0, 1.0).mean(1)


def element_alignment(
    update: torch.Tensor, previous: torch.Tensor, padding: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean over the valid elements (B, L) of the squared difference between two layers'
    updates, averaged over channels; uniform weights if ``weights`` is None; 0 if all weights are 0."""
    squared = (update - previous).float().pow(2).mean(-1).masked_fill(padding, 0.0)
    weights = (~padding).float() if weights is None else weights.float().masked_fill(padding, 0.0)
    return (weights * squared).sum() / weights.sum().clamp(min=torch.finfo(torch.float32).tiny)


class MICA(MulT):
    crossmodal_class = AlignedCrossModalTransformer

    def __init__(self, config: MICAConfig, num_classes: int):
        super().__init__(config, num_classes)
        self.aux_weight = config.aux_weight

    def auxiliary_loss(self, losses: list[torch.Tensor]) -> torch.Tensor | None:
        if not self.training or not losses:
            return None
        return self.aux_weight * sum(losses) / len(self.crossmodal)


@register_model("mica", options=MICAConfig, inputs="features", tasks=("emotion", "sentiment", "vad"), fidelity=FIDELITY)
def build_mica(config: MICAConfig, class_names: list[str]) -> MICA:
    return MICA(config, len(class_names))
