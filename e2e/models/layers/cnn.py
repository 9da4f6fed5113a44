"""Per-frame CNNs: the paper's VGG-style network and torchvision's VGG11.

Convolutions feeding a BatchNorm have no bias: BN subtracts the (batch or running) mean, so a bias
there is redundant in training and in evaluation. It also makes the dense CNN and MESM's bias-free
submanifold convolutions share exactly the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from e2e.config import UsageError

INPUT_SHAPES = {"v": (3, 48, 48), "a": (1, 128, 32)}  # one face crop / one 400 ms mel chunk
CNN_NAMES = ("mesm_vgg", "vgg11", "vgg11_bn")


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def vgg_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """``Block(c_in→c_out)``: two 3×3 conv + BN + ReLU, optionally followed by a 2×2 max-pool."""
    layers = [conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def dense_stem(in_channels: int, width: int = 64) -> nn.Sequential:
    """conv5×5→64 + BN + ReLU + max-pool, then Block(64→64)×2: the part MESM keeps dense."""
    first = conv_bn_relu(in_channels, width, kernel_size=5)
    first.append(nn.MaxPool2d(2))
    return nn.Sequential(first, vgg_block(width, width, pool=False), vgg_block(width, width, pool=False))


MESM_VGG_WIDTHS = ((64, 128), (128, 256), (256, 512))  # the three pooled blocks after the stem


def scaled_widths(scale: float) -> tuple[int, tuple[tuple[int, int], ...]]:
    """(stem width, pooled block widths) of the paper's VGG with every channel count times ``scale``.

    ``scale`` = 1 is the paper; smaller values (``model.cnn_width``) give the same architecture with
    fewer channels (FLOPs fall with the square), for CPU demos and tests.
    """
    if scale <= 0:
        raise UsageError(f"cnn_width must be positive, got {scale}")

    def width(channels: int) -> int:
        return max(4, round(channels * scale))

    return width(64), tuple((width(c_in), width(c_out)) for c_in, c_out in MESM_VGG_WIDTHS)


class MesmVGG(nn.Module):
    """The paper's 11-conv VGG: face 3×48×48 → 512×3×3, audio chunk 1×128×32 → 512×8×2 (at width 1)."""

    def __init__(self, in_channels: int, width_scale: float = 1.0):
        super().__init__()
        stem_width, widths = scaled_widths(width_scale)
        self.stem = dense_stem(in_channels, stem_width)
        self.blocks = nn.Sequential(*(vgg_block(c_in, c_out, pool=True) for c_in, c_out in widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


class TorchvisionVGG(nn.Module):
    """``torchvision.models.vgg11[_bn](weights=...).features`` applied to small inputs.

    Adaptation: single-channel inputs (mel chunks) are repeated to 3 channels so ImageNet weights
    apply unchanged; the 5 max-pools are kept, so a 48×48 face becomes 512×1×1 and a 128×32 chunk
    512×4×1 (the flatten size is measured by :func:`flat_size`). The classifier is dropped.
    """

    def __init__(self, name: str, in_channels: int, weights: str | None = None):
        super().__init__()
        import torchvision  # after e2e.compat (imported by the e2e package)

        self.in_channels = in_channels
        self.features = getattr(torchvision.models, name)(weights=weights).features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.features(x)


def build_cnn(name: str, in_channels: int, weights: str | None = None, width_scale: float = 1.0) -> nn.Module:
    if name == "mesm_vgg":
        if weights is not None:
            raise UsageError("cnn 'mesm_vgg' is trained from scratch; cnn_weights applies to vgg11/vgg11_bn")
        return MesmVGG(in_channels, width_scale)
    if width_scale != 1.0:
        raise UsageError(f"cnn_width applies to cnn 'mesm_vgg' only, not {name!r}")
    if name in ("vgg11", "vgg11_bn"):
        return TorchvisionVGG(name, in_channels, weights)
    raise UsageError(f"unknown cnn {name!r}; choose one of {', '.join(CNN_NAMES)}")


@torch.no_grad()
def flat_size(cnn: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Flattened output size for one input, by a dry run in eval mode (BN running stats untouched)."""
    was_training = cnn.training
    cnn.eval()
    try:
        return cnn(torch.zeros(1, *input_shape)).numel()
    finally:
        cnn.train(was_training)
