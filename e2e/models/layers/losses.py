"""Auxiliary losses of the seed-paper models, each checkable by hand on small tensors (tests/test_losses.py)."""

from __future__ import annotations

import torch
from torch import nn


def cmd(x: torch.Tensor, y: torch.Tensor, moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy (Zellinger et al. 2017) between samples ``(N, d)`` and ``(M, d)``: the
    distance of the means plus that of the central moments 2..``moments``. 0 for identical samples."""
    mean_x, mean_y = x.mean(0), y.mean(0)
    total = (mean_x - mean_y).norm()
    centred_x, centred_y = x - mean_x, y - mean_y
    for k in range(2, moments + 1):
        total = total + (centred_x.pow(k).mean(0) - centred_y.pow(k).mean(0)).norm()
    return total


def difference_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Soft orthogonality (MISA): squared Frobenius norm of ``a^T b`` for ``(N, d)`` batches centred and
    scaled to unit-norm columns, divided by ``d_a * d_b``: the mean squared cosine between the feature
    columns of ``a`` and ``b``. 0 when they span orthogonal subspaces of R^N, 1 for identical batches of
    one column. (MISA normalised rows; unit columns make the loss scale-free and exactly 0 at orthogonality.)"""
    a = nn.functional.normalize(a - a.mean(0), dim=0)
    b = nn.functional.normalize(b - b.mean(0), dim=0)
    return (a.t() @ b).pow(2).sum() / (a.shape[1] * b.shape[1])


def sample_normalised_difference_loss(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MISA's official soft orthogonality (src/utils/functions.py, DiffLoss): ``(N, d)`` batches centred per
    feature, each sample (row) divided by its L2 norm (a constant for the gradient) plus ``eps``, then the
    mean of the squared entries of ``a^T b``. Each sample is weighted by ``1 / (|a_i| |b_i|)``, so unlike
    :func:`difference_loss` (unit columns) orthogonal feature columns give 0 only when those weights are
    equal, and the value grows with the batch size."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    a = a / (a.norm(dim=1, keepdim=True).detach() + eps)
    b = b / (b.norm(dim=1, keepdim=True).detach() + eps)
    return (a.t() @ b).pow(2).mean()


def hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased HSIC estimate with Gaussian kernels (bandwidth: median pairwise distance) between ``(N, d)``
    samples: near 0 for independent variables, larger for dependent ones."""
    n = x.shape[0]
    centring = torch.eye(n, device=x.device) - 1.0 / n
    kx, ky = _gaussian_gram(x), _gaussian_gram(y)
    return torch.trace(kx @ centring @ ky @ centring) / max(n - 1, 1) ** 2


def _gaussian_gram(x: torch.Tensor) -> torch.Tensor:
    distances = torch.cdist(x, x).pow(2)
    positive = distances[distances > 0]
    bandwidth = positive.median().detach() if positive.numel() else torch.tensor(1.0, device=x.device)
    return torch.exp(-distances / (2 * bandwidth.clamp(min=1e-6)))


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy (biased) with a sum of Gaussian kernels, each bandwidth scaled by
    the mean squared distance of the pooled samples. 0 for equal samples."""
    pooled = torch.cat([x, y])
    distances = torch.cdist(pooled, pooled).pow(2)
    scale = distances.mean().detach().clamp(min=1e-6)
    kernel = sum(torch.exp(-distances / (scale * b)) for b in bandwidths)
    n = x.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def supervised_contrastive(embeddings: torch.Tensor, positives: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SupCon (Khosla et al. 2020) over ``(N, d)`` embeddings; ``positives`` (N, N) bool marks pairs that
    should be close (the diagonal is ignored). Anchors without positives do not count; 0 if none has any."""
    z = nn.functional.normalize(embeddings, dim=1)
    self_pair = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = positives & ~self_pair
    counts = positives.sum(1)
    anchors = counts > 0
    if not anchors.any():
        return embeddings.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0)).sum(1)[anchors] / counts[anchors]
    return per_anchor.mean()


def label_positives(labels: torch.Tensor) -> torch.Tensor:
    """(N, N) bool: same label set (one-hot: same class; multi-hot: identical label vector)."""
    return (labels[:, None, :] == labels[None, :, :]).all(-1)


def masked_smooth_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SmoothL1 averaged over the ``mask``-ed (B, L) positions only; 0 when nothing is masked."""
    if not mask.any():
        return prediction.sum() * 0.0
    return nn.functional.smooth_l1_loss(prediction[mask], target[mask])


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient times ``-scale`` backward (Ganin & Lempitsky 2015): one optimiser trains
    a discriminator on ``x`` while pushing the encoder that made ``x`` to fool it."""
    return _ReverseGradient.apply(x, scale)
