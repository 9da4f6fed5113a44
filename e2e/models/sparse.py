"""MESM's sparse CNN: text-queried cross-modal attention, top-p site selection, submanifold convs.

A frame (a face crop or a mel chunk) is a map of *sites* (y, x). Every sparse block of MESM (Dai et al., 2021)

1. scores each of the frame's active sites against the utterance's text CLS t,
   ``e = wᵀ tanh(W_x x + b_x + W_t t)``, and takes a softmax over the frame's active sites;
2. keeps the smallest set of top-scoring sites whose attention mass reaches ``top_p`` (top-p);
3. runs SubMConv3×3 + BN + ReLU twice on the kept sites and a 2×2 sparse max-pool.

Everything is batched over all frames of all utterances: per-frame softmax and top-p run on a padded
``(frames, H·W)`` score grid, never in a Python loop over frames.

Sparse maps hold ``features (n, C)`` and ``indices (n, 3)`` = (frame, y, x), contiguous int32, built
from the same row selection, so a feature can only land on its own site (official defect 1, §5.4).
In ``trainable`` mode kept features are multiplied by their (rescaled) attention weight so that W_x,
W_t and w learn (official defect 2); ``faithful`` mode selects by attention, features unscaled.

Backends, chosen per call (:func:`resolve_backend`): ``torch``, pure torch, per kernel offset
gather–GEMM–scatter over the active pairs (the CPU default, and the fallback without spconv); and
``spconv`` (the CUDA default). spconv 2.3.8's CPU kernels race when torch uses more than one thread
(wrong sums in most calls), so on CPU they run only with ``torch.set_num_threads(1)``. Both store
submanifold weights as spconv does, ``(out, kh, kw, in)``; state dicts are interchangeable.
:func:`masked_dense_block` is a dense reference for tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from e2e.models.cnn import MESM_VGG_WIDTHS, dense_stem, scaled_widths, vgg_block

try:
    import spconv.pytorch as spconv
    from spconv.cppconstants import CPU_ONLY_BUILD as SPCONV_CPU_ONLY
except ImportError:  # the pure-torch backend takes over
    spconv, SPCONV_CPU_ONLY = None, True

ATTENTION_MODES = ("trainable", "faithful")
BACKENDS = ("auto", "spconv", "torch")


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
        raise ValueError(f"top_p must be in (0, 1], got {p}")
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
    """

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.visual = nn.Linear(channels, channels)  # W_x, b_x
        self.text = nn.Linear(text_dim, channels, bias=False)  # W_t
        self.score = nn.Linear(channels, 1, bias=False)  # w

    def forward(self, x: torch.Tensor, text_term: torch.Tensor) -> torch.Tensor:
        """Scores for sites ``x (..., C)`` given ``text_term = self.text(t)`` broadcastable to (..., C)."""
        return self.score(torch.tanh(self.visual(x) + text_term)).squeeze(-1)


# --------------------------------------------------------------------------- backends

_OFFSETS = torch.tensor([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # kernel order (kh, kw)
_CENTRE = 4


class SubmanifoldRules:
    """Rule book of a 3×3 submanifold conv over one set of active sites.

    ``pairs``: for every off-centre kernel offset k with any match, ``(k, rows, inputs)`` where site
    ``inputs[j]`` is the active neighbour of site ``rows[j]`` at offset k. The centre tap pairs every
    site with itself and needs no rule. Shared by both convs of a block (same active sites).
    """

    def __init__(self, indices: torch.Tensor, spatial_shape, batch_size: int):
        height, width = spatial_shape
        lookup = torch.full((batch_size, height + 2, width + 2), -1, dtype=torch.long, device=indices.device)
        frame, y, x = indices.long().unbind(1)
        lookup[frame, y + 1, x + 1] = torch.arange(indices.shape[0], device=indices.device)
        offsets = _OFFSETS.to(indices.device)
        neighbours = lookup[frame[:, None], y[:, None] + 1 + offsets[:, 0], x[:, None] + 1 + offsets[:, 1]]
        valid = neighbours >= 0
        valid[:, _CENTRE] = False
        kernel_offset, rows = valid.t().nonzero(as_tuple=True)  # grouped by offset
        counts = valid.sum(0).tolist()
        inputs = neighbours[rows, kernel_offset]
        self.pairs = [(k, r, i) for k, (r, i) in enumerate(zip(rows.split(counts), inputs.split(counts)))
                      if counts[k]]


def _as_pixels(rows: torch.Tensor) -> torch.Tensor:
    """``(P, C)`` rows → a ``(1, C, P, 1)`` image in channels-last layout (a view when contiguous)."""
    return rows.reshape(1, rows.shape[0], 1, rows.shape[1]).permute(0, 3, 1, 2)


def _rows_times(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x (P, K) @ weight (N, K)ᵀ``; on CPU as a 1×1 convolution with the rows as pixels.

    PyTorch's fp32 CPU ``mm`` calls MKL, which on the project's AMD EPYC machines runs about 2× slower
    than oneDNN, the library behind the dense CNN's convolutions; 1×1 convolutions reach oneDNN.
    """
    if not x.is_cpu:
        return x @ weight.t()
    return F.conv2d(_as_pixels(x), weight[:, :, None, None]).permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def _rows_outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a (P, M)ᵀ @ b (P, K)``; on CPU as the weight gradient of a 1×1 convolution (see :func:`_rows_times`)."""
    if not a.is_cpu:
        return a.t() @ b
    shape = a.new_empty(a.shape[1], b.shape[1], 1, 1)  # only its size and dtype are read
    grads = torch.ops.aten.convolution_backward(_as_pixels(a), _as_pixels(b), shape, None, [1, 1], [0, 0], [1, 1],
                                                False, [0, 0], 1, [False, True, False])
    return grads[1].reshape(a.shape[1], b.shape[1])


class _SubmConv3x3(torch.autograd.Function):
    """Bias-free 3×3 submanifold conv: per kernel offset gather (index_select), GEMM, scatter (index_add_).

    Work is proportional to the active (output, input) pairs, like spconv's native algorithm. The
    backward reuses the same pairs (no autograd through indexing, whose accumulate kernel is slow).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # index_add_ needs one dtype
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, rules: SubmanifoldRules) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.rules = rules
        taps = weight.flatten(1, 2)  # (out, 9, in)
        out = _rows_times(features, taps[:, _CENTRE])
        for k, rows, inputs in rules.pairs:
            out.index_add_(0, rows, _rows_times(features.index_select(0, inputs), taps[:, k]))
        return out

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad: torch.Tensor):
        features, weight = ctx.saved_tensors
        taps = weight.flatten(1, 2)
        grad_features = _rows_times(grad, taps[:, _CENTRE].t())
        grad_taps = torch.zeros_like(taps)
        grad_taps[:, _CENTRE] = _rows_outer(grad, features)
        for k, rows, inputs in ctx.rules.pairs:
            grad_rows = grad.index_select(0, rows)
            grad_features.index_add_(0, inputs, _rows_times(grad_rows, taps[:, k].t()))
            grad_taps[:, k] = _rows_outer(grad_rows, features.index_select(0, inputs))
        return grad_features, grad_taps.view_as(weight), None


class TorchSparseTensor:
    """The part of ``spconv.SparseConvTensor`` the blocks use, for the pure-torch backend."""

    def __init__(self, features, indices, spatial_shape, batch_size, rules=None):
        self.features = features
        self.indices = indices
        self.spatial_shape = list(spatial_shape)
        self.batch_size = batch_size
        self.rules = rules

    def replace_feature(self, features: torch.Tensor) -> "TorchSparseTensor":
        return TorchSparseTensor(features, self.indices, self.spatial_shape, self.batch_size, self.rules)

    def subm_conv(self, weight: torch.Tensor) -> "TorchSparseTensor":
        if self.rules is None:
            self.rules = SubmanifoldRules(self.indices, self.spatial_shape, self.batch_size)
        return self.replace_feature(_SubmConv3x3.apply(self.features, weight, self.rules))

    def max_pool(self) -> "TorchSparseTensor":
        """2×2 stride-2 max over each cell's active sites; a cell is active iff any of its sites is.

        Tied maxima share the gradient; the only common ties are zeros after ReLU, where ReLU's own
        backward zeroes it anyway."""
        height, width = (size // 2 for size in self.spatial_shape)
        frame, y, x = self.indices.long().unbind(1)
        cell = (frame * height + y // 2) * width + x // 2
        occupied = torch.zeros(self.batch_size * height * width, dtype=torch.bool, device=cell.device)
        occupied.index_fill_(0, cell, True)
        cells = occupied.nonzero().squeeze(1)
        group = (occupied.cumsum(0) - 1)[cell]
        channels = self.features.shape[1]
        features = self.features.new_zeros(cells.shape[0], channels).scatter_reduce(
            0, group[:, None].expand(-1, channels), self.features, "amax", include_self=False)
        indices = torch.stack([cells // (height * width), cells // width % height, cells % width], dim=1)
        return TorchSparseTensor(features, indices.int().contiguous(), (height, width), self.batch_size)


class SubmanifoldWeight(nn.Module):
    """Holds a 3×3 submanifold conv weight in spconv's layout (out, kh, kw, in) when spconv is absent."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, in_channels))
        bound = 1 / math.sqrt(9 * in_channels)  # nn.Conv2d's and spconv's default init
        nn.init.uniform_(self.weight, -bound, bound)


def _subm_conv_module(c_in: int, c_out: int, key: str) -> nn.Module:
    """spconv's module where importable (so the spconv backend can run it), else a weight holder;
    both have one parameter, ``weight`` (out, 3, 3, in): state dicts are interchangeable."""
    if spconv is not None:
        return spconv.SubMConv2d(c_in, c_out, 3, padding=1, bias=False, indice_key=key)
    return SubmanifoldWeight(c_in, c_out)


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` = spconv on CUDA where a CUDA build of it is importable, else the pure-torch backend.

    spconv 2.3.8's CPU kernels are not used by default: with more than one torch thread they return
    wrong sums nondeterministically (a race); see :func:`_check_spconv_threads`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown sparse backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "spconv" if not SPCONV_CPU_ONLY and device.type == "cuda" else "torch"
    if backend == "spconv" and spconv is None:
        raise ImportError("sparse backend 'spconv' requested but spconv is not importable")
    return backend


def _check_spconv_threads(device: torch.device) -> None:
    if device.type == "cpu" and torch.get_num_threads() > 1:
        raise RuntimeError("spconv's CPU kernels give wrong results with more than one thread; use the "
                           "sparse backend 'torch' on CPU, or torch.set_num_threads(1)")


def sparse_tensor(backend: str, features, indices, spatial_shape, batch_size):
    if backend == "spconv":
        _check_spconv_threads(features.device)
        return spconv.SparseConvTensor(features, indices, list(spatial_shape), batch_size)
    return TorchSparseTensor(features, indices, spatial_shape, batch_size)


def _sparse_like(x, features: torch.Tensor, indices: torch.Tensor):
    """A sparse tensor of ``x``'s backend, shape and frame count with other sites."""
    return type(x)(features, indices, x.spatial_shape, x.batch_size)


def _subm_conv(conv: nn.Module, x):
    if isinstance(x, TorchSparseTensor):
        return x.subm_conv(conv.weight)
    return conv(x)


def _max_pool(x):
    if isinstance(x, TorchSparseTensor):
        return x.max_pool()
    return spconv.SparseMaxPool2d(2, 2)(x)


# --------------------------------------------------------------------------- sparse maps


def all_sites(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``(N, C, H, W)`` → features ``(N·H·W, C)`` and contiguous int32 indices, row-major."""
    frames, channels, height, width = x.shape
    grid = torch.meshgrid(*(torch.arange(size, device=x.device, dtype=torch.int32)
                            for size in (frames, height, width)), indexing="ij")
    indices = torch.stack(grid, dim=-1).reshape(-1, 3)
    return x.permute(0, 2, 3, 1).reshape(-1, channels), indices


def densify(features: torch.Tensor, indices: torch.Tensor, spatial_shape, batch_size: int) -> torch.Tensor:
    """Sparse rows → dense ``(N, C, H, W)`` with zeros at inactive sites (differentiable)."""
    height, width = spatial_shape
    frame, y, x = indices.long().unbind(1)
    dense = features.new_zeros(batch_size, height, width, features.shape[1])
    return dense.index_put((frame, y, x), features).permute(0, 3, 1, 2)


def _flat_site(indices: torch.Tensor, spatial_shape) -> torch.Tensor:
    height, width = spatial_shape
    frame, y, x = indices.long().unbind(1)
    return (frame * height + y) * width + x


# --------------------------------------------------------------------------- blocks


@dataclass
class BlockTrace:
    """What one sparse block did, per frame: the sites it kept and its attention weights."""

    keep: torch.Tensor  # (N, H, W) bool: the sites the block's convolutions ran on
    attention: torch.Tensor  # (N, H, W) float: α over the frame's active sites, 0 elsewhere


class SparseBlock(nn.Module):
    """attend + top-p → SubM3×3(c_in→c_out)+BN+ReLU → SubM3×3(c_out→c_out)+BN+ReLU → max-pool 2×2."""

    def __init__(self, c_in: int, c_out: int, text_dim: int, top_p: float,
                 attention_mode: str = "trainable", key: str = "subm"):
        super().__init__()
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention_mode must be one of {', '.join(ATTENTION_MODES)}, got {attention_mode!r}")
        if top_p <= 0.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = top_p
        self.attention_mode = attention_mode
        self.attention = CrossModalAttention(c_in, text_dim)
        self.conv1 = _subm_conv_module(c_in, c_out, key)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = _subm_conv_module(c_out, c_out, key)
        self.bn2 = nn.BatchNorm1d(c_out)

    def select(self, x, text: torch.Tensor):
        """Attention over each frame's active sites and top-p: the kept sparse tensor and a trace.

        Rows are gathered with ``index_select`` (its backward is a fast ``index_add_``)."""
        frames = x.batch_size
        height, width = x.spatial_shape
        rows = _flat_site(x.indices, (height, width))
        text_term = self.attention.text(text).index_select(0, x.indices[:, 0].long())
        row_scores = self.attention(x.features, text_term)
        scores = row_scores.new_full((frames * height * width,), float("-inf")).index_put((rows,), row_scores)
        active = torch.zeros(frames * height * width, dtype=torch.bool, device=rows.device).index_fill(0, rows, True)
        alpha, keep = attend(scores.view(frames, -1), active.view(frames, -1), self.top_p)
        kept = keep.view(-1)[rows].nonzero().squeeze(1)
        features = x.features.index_select(0, kept)
        if self.attention_mode == "trainable":
            weights = attention_weights(alpha, active.view(frames, -1)).view(-1)
            features = features * weights.index_select(0, rows.index_select(0, kept))[:, None]
        trace = BlockTrace(keep.view(frames, height, width), alpha.detach().view(frames, height, width))
        return _sparse_like(x, features, x.indices.index_select(0, kept).contiguous()), trace

    def forward(self, x, text: torch.Tensor):
        """``x``: a sparse tensor whose every frame has ≥ 1 active site; ``text``: (N, text_dim)."""
        y, trace = self.select(x, text)
        y = _subm_conv(self.conv1, y)
        y = y.replace_feature(F.relu(self.bn1(y.features), inplace=True))
        y = _subm_conv(self.conv2, y)
        y = y.replace_feature(F.relu(self.bn2(y.features), inplace=True))
        return _max_pool(y), trace


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

    def __init__(self, in_channels: int, text_dim: int, top_p: float, num_sparse: int = 3,
                 attention_mode: str = "trainable", backend: str = "auto", width_scale: float = 1.0):
        super().__init__()
        if not 1 <= num_sparse <= len(MESM_VGG_WIDTHS):
            raise ValueError(f"sparse_blocks must be in 1..{len(MESM_VGG_WIDTHS)}, got {num_sparse}")
        resolve_backend(backend, torch.device("cpu"))  # fail early on a bad name or a missing spconv
        self.backend = backend
        stem_width, widths = scaled_widths(width_scale)
        num_dense = len(widths) - num_sparse
        self.out_channels = widths[-1][1]
        self.stem = nn.Sequential(dense_stem(in_channels, stem_width),
                                  *(vgg_block(c_in, c_out, pool=True) for c_in, c_out in widths[:num_dense]))
        self.blocks = nn.ModuleList(
            SparseBlock(c_in, c_out, text_dim, top_p, attention_mode, key=f"subm{i}")
            for i, (c_in, c_out) in enumerate(widths[num_dense:]))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> SparseCNNOutput:
        """``x`` (N, C, H, W) frames; ``text`` (N, text_dim): each frame's own utterance's text CLS."""
        dense = self.stem(x)
        frames, _, height, width = dense.shape
        if height % 2 ** len(self.blocks) or width % 2 ** len(self.blocks):
            raise ValueError(f"sparse blocks need maps divisible by {2 ** len(self.blocks)}, got {height}×{width}")
        backend = resolve_backend(self.backend, dense.device)
        y = sparse_tensor(backend, *all_sites(dense), (height, width), frames)
        traces = []
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
    scores = block.attention(x.permute(0, 2, 3, 1), block.attention.text(text)[:, None, None, :])
    alpha, keep = attend(scores.reshape(frames, -1), active.reshape(frames, -1), block.top_p)
    alpha, keep = alpha.view(frames, height, width), keep.view(frames, height, width)
    y = x * keep[:, None]
    if block.attention_mode == "trainable":
        y = y * attention_weights(alpha.view(frames, -1), active.view(frames, -1)).view_as(alpha)[:, None]
    for conv, bn in ((block.conv1, block.bn1), (block.conv2, block.bn2)):
        y = F.relu(_masked_batch_norm(bn, F.conv2d(y, _dense_weight(conv), padding=1), keep))
    pooled_active = F.max_pool2d(keep[:, None].float(), 2)[:, 0] > 0
    return F.max_pool2d(y, 2), pooled_active, BlockTrace(keep, alpha.detach())
