"""The submanifold sparse-convolution backend under MESM's sparse blocks.

Sparse maps hold ``features (n, C)`` and ``indices (n, 3)`` = (frame, y, x), contiguous int32, built
from the same row selection, so a feature can only land on its own site (official defect 1, §5.4).

Backends, chosen per call (:func:`resolve_backend`): ``torch``, pure torch, per kernel offset
gather–GEMM–scatter over the active pairs (the CPU default, and the fallback without spconv); and
``spconv`` (the CUDA default). spconv 2.3.8's CPU kernels race when torch uses more than one thread
(wrong sums in most calls), so on CPU they run only with ``torch.set_num_threads(1)``. Both store
submanifold weights as spconv does, ``(out, kh, kw, in)``; state dicts are interchangeable.

Precision: the convolutions and the max-pool run in the weights' dtype (fp32) with autocast disabled,
whatever autocast is active, on both backends. Under bf16 autocast the stem hands bf16 features to
the first block while the weights stay fp32; spconv's autograd functions then cast both to **fp16**
in training (their ``custom_fwd(cast_inputs=torch.float16)``: a silent change of precision, and bf16
values beyond fp16's range become inf), and its eval path (no ``custom_fwd``) would get bf16 features
against fp32 weights. :func:`subm_conv` therefore casts the features to the weights' dtype first.
spconv's fp32 GEMMs use TF32 exactly when ``torch.backends.cudnn.allow_tf32`` is set (PyTorch's default
for dense fp32 convolutions, True): sparse convs get the dense convs' precision policy.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from e2e.config import UsageError

try:
    import spconv.pytorch as spconv
    from spconv import constants as spconv_constants
    from spconv.cppconstants import CPU_ONLY_BUILD as SPCONV_CPU_ONLY
except ImportError:  # the pure-torch backend takes over
    spconv, spconv_constants, SPCONV_CPU_ONLY = None, None, True

BACKENDS = ("auto", "spconv", "torch")

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
        self.pairs = [(k, r, i) for k, (r, i) in enumerate(zip(rows.split(counts), inputs.split(counts))) if counts[k]]


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
    grads = torch.ops.aten.convolution_backward(
        _as_pixels(a), _as_pixels(b), shape, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False]
    )
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

    def replace_feature(self, features: torch.Tensor) -> TorchSparseTensor:
        return TorchSparseTensor(features, self.indices, self.spatial_shape, self.batch_size, self.rules)

    def subm_conv(self, weight: torch.Tensor) -> TorchSparseTensor:
        if self.rules is None:
            self.rules = SubmanifoldRules(self.indices, self.spatial_shape, self.batch_size)
        return self.replace_feature(_SubmConv3x3.apply(self.features, weight, self.rules))

    def max_pool(self) -> TorchSparseTensor:
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
            0, group[:, None].expand(-1, channels), self.features, "amax", include_self=False
        )
        indices = torch.stack([cells // (height * width), cells // width % height, cells % width], dim=1)
        return TorchSparseTensor(features, indices.int().contiguous(), (height, width), self.batch_size)


class SubmanifoldWeight(nn.Module):
    """Holds a 3×3 submanifold conv weight in spconv's layout (out, kh, kw, in) when spconv is absent."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, in_channels))
        bound = 1 / math.sqrt(9 * in_channels)  # nn.Conv2d's and spconv's default init
        nn.init.uniform_(self.weight, -bound, bound)


def subm_conv_module(c_in: int, c_out: int, key: str) -> nn.Module:
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
        raise UsageError(f"unknown sparse backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "spconv" if not SPCONV_CPU_ONLY and device.type == "cuda" else "torch"
    if backend == "spconv" and spconv is None:
        raise ImportError("sparse backend 'spconv' requested but spconv is not importable")
    return backend


def _check_spconv_threads(device: torch.device) -> None:
    if device.type == "cpu" and torch.get_num_threads() > 1:
        raise RuntimeError(
            "spconv's CPU kernels give wrong results with more than one thread; use the "
            "sparse backend 'torch' on CPU, or torch.set_num_threads(1)"
        )


def autocast_off(device: torch.device):
    """A context that disables autocast for ``device``'s type (a no-op for types without autocast, e.g. meta)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def current_device(device: torch.device):
    """Make ``device`` CUDA's current device for the block (spconv launches on the current device's
    stream, so data on ``cuda:1`` with ``cuda:0`` current would meet the wrong stream); else a no-op."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def check_sparse_inputs(features: torch.Tensor, indices: torch.Tensor) -> None:
    """ValueError unless ``indices`` are (n, 3) contiguous int32 on ``features``' device, one per row.

    spconv reads the raw int32 buffer: other dtypes, a non-contiguous view (e.g. ``mask.nonzero().int()``
    in torch 2.13) or another device give silently wrong sites or a crash deep inside its kernels."""
    problems = []
    if indices.dtype != torch.int32:
        problems.append(f"dtype {indices.dtype} (need torch.int32)")
    if not indices.is_contiguous():
        problems.append("not contiguous")
    if indices.device != features.device:
        problems.append(f"on {indices.device}, features on {features.device}")
    if indices.dim() != 2 or indices.shape[1] != 3 or indices.shape[0] != features.shape[0]:
        problems.append(f"shape {tuple(indices.shape)} for {features.shape[0]} feature rows (need (n, 3))")
    if problems:
        raise ValueError("sparse indices: " + "; ".join(problems))


def sparse_tensor(backend: str, features, indices, spatial_shape, batch_size):
    check_sparse_inputs(features, indices)
    if backend == "spconv":
        _check_spconv_threads(features.device)
        return spconv.SparseConvTensor(features, indices, list(spatial_shape), batch_size)
    return TorchSparseTensor(features, indices, spatial_shape, batch_size)


def sparse_like(x, features: torch.Tensor, indices: torch.Tensor):
    """A sparse tensor of ``x``'s backend, shape and frame count with other sites."""
    check_sparse_inputs(features, indices)
    return type(x)(features, indices, x.spatial_shape, x.batch_size)


def subm_conv(conv: nn.Module, x):
    """``conv`` on ``x`` in the weights' dtype with autocast off (see the module docstring)."""
    with autocast_off(x.features.device):
        if x.features.dtype != conv.weight.dtype:
            x = x.replace_feature(x.features.to(conv.weight.dtype))
        if isinstance(x, TorchSparseTensor):
            return x.subm_conv(conv.weight)
        spconv_constants.SPCONV_ALLOW_TF32 = torch.backends.cudnn.allow_tf32  # read at forward and backward
        return conv(x)


def max_pool(x):
    """2×2 stride-2 sparse max-pool with autocast off (spconv's would cast the features to fp16)."""
    with autocast_off(x.features.device):
        if isinstance(x, TorchSparseTensor):
            return x.max_pool()
        return spconv.SparseMaxPool2d(2, 2)(x)


# --------------------------------------------------------------------------- sparse maps


def all_sites(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ``(N, C, H, W)`` → features ``(N·H·W, C)`` and contiguous int32 indices, row-major."""
    frames, channels, height, width = x.shape
    grid = torch.meshgrid(
        *(torch.arange(size, device=x.device, dtype=torch.int32) for size in (frames, height, width)), indexing="ij"
    )
    indices = torch.stack(grid, dim=-1).reshape(-1, 3)
    return x.permute(0, 2, 3, 1).reshape(-1, channels), indices


def densify(features: torch.Tensor, indices: torch.Tensor, spatial_shape, batch_size: int) -> torch.Tensor:
    """Sparse rows → dense ``(N, C, H, W)`` with zeros at inactive sites (differentiable)."""
    height, width = spatial_shape
    frame, y, x = indices.long().unbind(1)
    dense = features.new_zeros(batch_size, height, width, features.shape[1])
    return dense.index_put((frame, y, x), features).permute(0, 3, 1, 2)


def flat_site(indices: torch.Tensor, spatial_shape) -> torch.Tensor:
    height, width = spatial_shape
    frame, y, x = indices.long().unbind(1)
    return (frame * height + y) * width + x
