"""MESM's sparse CNN: text-queried cross-modal attention, top-p site selection, submanifold convs.

A frame (a face crop or a mel chunk) is a map of *sites* (y, x). Every sparse block of MESM (Dai et al., 2021)

1. scores each of the frame's active sites against the utterance's text CLS t,
   ``e = wᵀ tanh(W_x x + b_x + W_t t)``, and takes a softmax over the frame's active sites;
2. keeps the smallest set of top-scoring sites whose attention mass reaches ``top_p`` (top-p);
3. runs SubMConv3×3 + BN + ReLU twice on the kept sites and a 2×2 sparse max-pool.

Everything is batched over all frames of all utterances: per-frame softmax and top-p run on a padded
``(frames, H·W)`` score grid, never in a Python loop over frames.

The convolutions run on :mod:`e2e.models.layers.sparse_conv` (spconv or pure torch). In ``trainable``
mode kept features are multiplied by their (rescaled) attention weight so that W_x, W_t and w learn
(official defect 2); ``faithful`` mode selects by attention, features unscaled.

:func:`masked_dense_block` is a dense reference for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from e2e.config import UsageError
from e2e.data.batch import ModelOutput
from e2e.models.layers.cnn import MESM_VGG_WIDTHS, dense_stem, scaled_widths, vgg_block
from e2e.models.layers.sparse_conv import (
    all_sites,
    autocast_off,
    current_device,
    densify,
    flat_site,
    max_pool,
    resolve_backend,
    sparse_like,
    sparse_tensor,
    subm_conv,
    subm_conv_module,
)

ATTENTION_MODES = ("trainable", "faithful")


# --------------------------------------------------------------------------- selection


def top_p_mask(probs: torch.Tensor, p: float, active: torch.Tensor) -> torch.Tensor:
    """Per-row deterministic top-p: sort descending, keep a site iff the mass sorted before it is < p.

    ``probs`` (R, S) sums to 1 over each row's ``active`` (R, S) sites. The sort is stable, so tied
    sites keep their row-major order. The best site of a row is always kept (its prefix mass is 0);
    ``p >= 1`` keeps every active site, since float prefix sums can reach 1 before the last site.
    """
    if p >= 1.0:
        return active.clone()
    if p <= 0.0:
        raise UsageError(f"top_p must be in (0, 1], got {p}")
    sorted_probs, order = probs.sort(dim=1, descending=True, stable=True)
    keep_sorted = (sorted_probs.cumsum(dim=1) - sorted_probs) < p
    return torch.zeros_like(active).scatter(1, order, keep_sorted) & active


def attend(scores: torch.Tensor, active: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax of (R, S) ``scores`` over each row's active sites, and the top-p kept sites."""
    alpha = scores.masked_fill(~active, float("-inf")).softmax(dim=1)
    return alpha, top_p_mask(alpha.detach(), p, active)


class CrossModalAttention(nn.Module):
    """``e = wᵀ tanh(W_x x + b_x + W_t t)`` with hidden size = the block's input channels.

    The paper's output bias ``b`` is left out: a softmax is shift-invariant, so it would neither change
    α nor receive a gradient.

    Scores are computed in float32 with autocast off, whatever the caller's autocast: in bf16 (8
    significant bits) 40-60 % of the block-1 sites of a face tie at random init, and the stable sort
    of top-p would then break the ties in row-major order, i.e. keep the top of the frame.
    """

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.visual = nn.Linear(channels, channels)  # W_x, b_x
        self.text = nn.Linear(text_dim, channels, bias=False)  # W_t
        self.score = nn.Linear(channels, 1, bias=False)  # w

    def text_term(self, text: torch.Tensor) -> torch.Tensor:
        """``W_t t`` (N, C) in float32 (the parameters are float32)."""
        with autocast_off(text.device):
            return self.text(text.float())

    def forward(self, x: torch.Tensor, text_term: torch.Tensor) -> torch.Tensor:
        """float32 scores of sites ``x (..., C)``; ``text_term`` (:meth:`text_term`) broadcasts to (..., C)."""
        with autocast_off(x.device):
            return self.score(torch.tanh(self.visual(x.float()) + text_term.float())).squeeze(-1)


# --------------------------------------------------------------------------- blocks


@dataclass
class BlockTrace:
    """What one sparse block did, per frame: the sites it kept and its attention weights."""

    keep: torch.Tensor  # (N, H, W) bool: the sites the block's convolutions ran on
    attention: torch.Tensor  # (N, H, W) float: α over the frame's active sites, 0 elsewhere


class SparseBlock(nn.Module):
    """attend + top-p → SubM3×3(c_in→c_out)+BN+ReLU → SubM3×3(c_out→c_out)+BN+ReLU → max-pool 2×2."""

    def __init__(
        self, c_in: int, c_out: int, text_dim: int, top_p: float, attention_mode: str = "trainable", key: str = "subm"
    ):
        super().__init__()
        if attention_mode not in ATTENTION_MODES:
            raise UsageError(f"attention_mode must be one of {', '.join(ATTENTION_MODES)}, got {attention_mode!r}")
        if top_p <= 0.0:
            raise UsageError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = top_p
        self.attention_mode = attention_mode
        self.attention = CrossModalAttention(c_in, text_dim)
        self.conv1 = subm_conv_module(c_in, c_out, key)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = subm_conv_module(c_out, c_out, key)
        self.bn2 = nn.BatchNorm1d(c_out)

    def select(self, x, text: torch.Tensor):
        """Attention over each frame's active sites and top-p: the kept sparse tensor and a trace.

        Rows are gathered with ``index_select`` (its backward is a fast ``index_add_``)."""
        frames = x.batch_size
        height, width = x.spatial_shape
        rows = flat_site(x.indices, (height, width))
        alpha, active, keep = self._attend_sites(x, text, rows)
        kept = keep.view(-1)[rows].nonzero().squeeze(1)
        features = x.features.index_select(0, kept)
        if self.attention_mode == "trainable":
            weights = attention_weights(alpha, active.view(frames, -1)).view(-1)
            features = features * weights.index_select(0, rows.index_select(0, kept))[:, None]
        trace = BlockTrace(keep.view(frames, height, width), alpha.detach().view(frames, height, width))
        return sparse_like(x, features, x.indices.index_select(0, kept).contiguous()), trace

    def _attend_sites(self, x, text: torch.Tensor, rows: torch.Tensor):
        """(α, active, keep), each (frames, H·W), from the float32 scores of ``x``'s sites (``rows``: their
        flat positions); scores, softmax and top-p all run with autocast off."""
        frames = x.batch_size
        sites = frames * x.spatial_shape[0] * x.spatial_shape[1]
        with autocast_off(rows.device):
            text_term = self.attention.text_term(text).index_select(0, x.indices[:, 0].long())
            row_scores = self.attention(x.features, text_term)
            scores = row_scores.new_full((sites,), float("-inf")).index_put((rows,), row_scores)
            active = torch.zeros(sites, dtype=torch.bool, device=rows.device).index_fill(0, rows, True)
            alpha, keep = attend(scores.view(frames, -1), active.view(frames, -1), self.top_p)
        return alpha, active, keep

    def forward(self, x, text: torch.Tensor):
        """``x``: a sparse tensor whose every frame has ≥ 1 active site; ``text``: (N, text_dim)."""
        y, trace = self.select(x, text)
        y = subm_conv(self.conv1, y)
        y = y.replace_feature(F.relu(self.bn1(y.features), inplace=True))
        y = subm_conv(self.conv2, y)
        y = y.replace_feature(F.relu(self.bn2(y.features), inplace=True))
        return max_pool(y), trace


def attention_weights(alpha: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Trainable mode's feature multipliers: α times the frame's number of active sites.

    The count (a per-frame constant) keeps the multipliers' mean at 1, so uniform attention is the
    identity and kept features stay at their scale; raw α (≈ 1/576 in a face's first block) would put
    the following BatchNorm's variance below its eps.
    """
    return alpha * active.sum(dim=1, keepdim=True)


@dataclass
class SparseCNNOutput:
    features: torch.Tensor  # (N, C, H, W) dense, inactive sites = 0
    traces: list[BlockTrace]


class SparseCNN(nn.Module):
    """MESM's per-frame CNN: the paper's VGG with its last ``num_sparse`` pooled blocks sparse.

    With ``num_sparse`` = 3 (the paper) the dense part is the stem (conv5×5 + Block(64→64)×2); with
    fewer, the first pooled blocks stay dense, so the output is always that of :class:`MesmVGG`.
    ``backend``: ``auto`` | ``spconv`` | ``torch``, resolved per call by :func:`resolve_backend`.
    """

    def __init__(
        self,
        in_channels: int,
        text_dim: int,
        top_p: float,
        num_sparse: int = 3,
        attention_mode: str = "trainable",
        backend: str = "auto",
        width_scale: float = 1.0,
    ):
        super().__init__()
        if not 1 <= num_sparse <= len(MESM_VGG_WIDTHS):
            raise UsageError(f"sparse_blocks must be in 1..{len(MESM_VGG_WIDTHS)}, got {num_sparse}")
        resolve_backend(backend, torch.device("cpu"))  # fail early on a bad name or a missing spconv
        self.backend = backend
        stem_width, widths = scaled_widths(width_scale)
        num_dense = len(widths) - num_sparse
        self.out_channels = widths[-1][1]
        self.stem = nn.Sequential(
            dense_stem(in_channels, stem_width),
            *(vgg_block(c_in, c_out, pool=True) for c_in, c_out in widths[:num_dense]),
        )
        self.blocks = nn.ModuleList(
            SparseBlock(c_in, c_out, text_dim, top_p, attention_mode, key=f"subm{i}")
            for i, (c_in, c_out) in enumerate(widths[num_dense:])
        )

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> SparseCNNOutput:
        """``x`` (N, C, H, W) frames; ``text`` (N, text_dim): each frame's own utterance's text CLS."""
        dense = self.stem(x)
        frames, _, height, width = dense.shape
        if height % 2 ** len(self.blocks) or width % 2 ** len(self.blocks):
            raise UsageError(f"sparse blocks need maps divisible by {2 ** len(self.blocks)}, got {height}×{width}")
        backend = resolve_backend(self.backend, dense.device)
        traces = []
        with current_device(dense.device):
            y = sparse_tensor(backend, *all_sites(dense), (height, width), frames)
            for block in self.blocks:
                y, trace = block(y, text)
                traces.append(trace)
        return SparseCNNOutput(densify(y.features, y.indices, y.spatial_shape, frames), traces)


# --------------------------------------------------------------------------- dense reference


def _masked_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the masked sites only (what BatchNorm1d on sparse rows computes); 0 elsewhere."""
    rows = x.permute(0, 2, 3, 1)[mask]
    if bn.training:
        normed = F.batch_norm(rows, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    else:
        normed = F.batch_norm(rows, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
    out = x.new_zeros(x.shape[0], x.shape[2], x.shape[3], x.shape[1]).index_put(mask.nonzero(as_tuple=True), normed)
    return out.permute(0, 3, 1, 2)


def _dense_weight(conv: nn.Module) -> torch.Tensor:
    return conv.weight.permute(0, 3, 1, 2)  # (out, kh, kw, in) → (out, in, kh, kw)


def masked_dense_block(block: SparseBlock, x: torch.Tensor, active: torch.Tensor, text: torch.Tensor):
    """Reference for :class:`SparseBlock` on dense tensors, with the block's own parameters.

    ``x`` (N, C, H, W), ``active`` (N, H, W) bool, ``text`` (N, text_dim). Submanifold semantics:
    inputs are zeroed outside the kept sites and conv outputs are kept only at kept sites; BN uses the
    kept sites' statistics; the max-pool needs no mask because its inputs are ≥ 0 (after ReLU) with
    0 at inactive sites. Running BN statistics are not updated. Returns ``(pooled, pooled_active,
    trace)``.
    """
    frames, _, height, width = x.shape
    scores = block.attention(x.permute(0, 2, 3, 1), block.attention.text_term(text)[:, None, None, :])
    alpha, keep = attend(scores.reshape(frames, -1), active.reshape(frames, -1), block.top_p)
    alpha, keep = alpha.view(frames, height, width), keep.view(frames, height, width)
    y = x * keep[:, None]
    if block.attention_mode == "trainable":
        y = y * attention_weights(alpha.view(frames, -1), active.view(frames, -1)).view_as(alpha)[:, None]
    for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
        y = F.relu(_masked_batch_norm(bn, F.conv2d(y, _dense_weight(conv), padding=1), keep))
    pooled_active = F.max_pool2d(keep[:, None].float(), 2)[:, 0] > 0
    return F.max_pool2d(y, 2), pooled_active, BlockTrace(keep, alpha.detach())


def block_inputs(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """The candidate sites of each sparse block, given the sites each kept (``masks``, (N, H, W) bool):
    every site for the first, then the pooled kept sites of the block before (a 2×2 cell is a
    candidate iff any of its sites was kept)."""
    first = torch.ones_like(masks[0])
    pooled = [F.max_pool2d(mask[:, None].float(), 2)[:, 0] > 0 for mask in masks[:-1]]
    return [first, *pooled]


class KeptSites:
    """Kept and candidate sites of MESM's sparse blocks, summed over batches (``observe`` each output).

    :meth:`fractions` gives per frame modality and block the share of its candidate sites that top-p
    kept, pooled over all frames seen: the measure that makes a p comparable across attention modes
    (at a given p, trainable attention is sharper or flatter than faithful, so it keeps fewer or more).
    For a modality whose encoder is a pruned transformer, the "blocks" are its pruning steps and the
    sites its scored tokens (``token_traces``; special tokens, always kept, are not counted)."""

    def __init__(self):
        self.counts: dict[str, list[list[int]]] = {}  # modality -> per block [kept, candidates]

    def observe(self, batch, output: ModelOutput) -> None:
        for modality, masks in output.extras.get("sparse_masks", {}).items():
            self._add(modality, [(keep, candidates) for keep, candidates in zip(masks, block_inputs(masks))])
        for modality, traces in output.extras.get("token_traces", {}).items():
            self._add(modality, [(trace.keep & trace.candidates, trace.candidates) for trace in traces])

    def _add(self, modality: str, steps: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        totals = self.counts.setdefault(modality, [[0, 0] for _ in steps])
        for total, (keep, candidates) in zip(totals, steps):
            total[0] += int(keep.sum())
            total[1] += int(candidates.sum())

    def fractions(self) -> dict[str, list[float]]:
        return {
            modality: [kept / candidates if candidates else 1.0 for kept, candidates in totals]
            for modality, totals in self.counts.items()
        }
