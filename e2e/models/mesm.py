"""MESM: FE2E whose visual and acoustic CNNs are :class:`~e2e.models.sparse.SparseCNN` (Dai et al., NAACL 2021).

Each frame's sparse attention is queried by the text CLS of its own utterance, so text is required.
``extras`` adds, per frame modality, the sites every sparse block kept and its attention weights.
"""
from __future__ import annotations

import torch
from torch import nn

from e2e.config import ModelConfig
from e2e.models.cnn import INPUT_SHAPES
from e2e.models.encoders import TextEncoder
from e2e.models.fe2e import FE2E, parse_modalities
from e2e.models.registry import register_model
from e2e.models.sparse import SparseCNN


class MESM(FE2E):
    """``backend``: the sparse implementation, ``auto`` (spconv on CUDA where a CUDA build is installed,
    else pure torch), ``spconv`` or ``torch``; see :func:`e2e.models.sparse.resolve_backend`."""

    def __init__(self, config: ModelConfig, num_classes: int, text_encoder: TextEncoder | None = None,
                 backend: str = "auto"):
        if "t" not in parse_modalities(config.modalities):
            raise ValueError(f"MESM needs text in modalities (its sparse attention is queried by the text), "
                             f"got {config.modalities!r}; use fe2e for {config.modalities!r}")
        if config.cnn != "mesm_vgg":
            raise ValueError(f"MESM sparsifies the paper's VGG (cnn 'mesm_vgg'), got cnn {config.cnn!r}")
        self.sparse_backend = backend  # read by _build_cnn during FE2E.__init__
        super().__init__(config, num_classes, text_encoder)

    def _build_cnn(self, modality: str, config: ModelConfig) -> tuple[nn.Module, int]:
        channels, height, width = INPUT_SHAPES[modality]
        cnn = SparseCNN(channels, self.text.hidden_size, config.top_p, config.sparse_blocks,
                        config.attention_mode, self.sparse_backend, config.cnn_width)
        return cnn, cnn.out_channels * (height // 16) * (width // 16)  # four 2×2 pools, as in MesmVGG

    def _extract(self, modality: str, frames: torch.Tensor, lengths: torch.Tensor,
                 text: torch.Tensor, extras: dict) -> torch.Tensor:
        output = self.cnns[modality](frames, text.repeat_interleave(lengths, dim=0))
        extras.setdefault("sparse_masks", {})[modality] = [trace.keep for trace in output.traces]
        extras.setdefault("attention", {})[modality] = [trace.attention for trace in output.traces]
        return output.features.flatten(1)


@register_model("mesm")
def build_mesm(config: ModelConfig, class_names: list[str]) -> MESM:
    return MESM(config, len(class_names))
