"""The end-to-end network FE2E and MESM share (Dai et al., NAACL 2021), and its options.

Per visual/acoustic modality: a CNN on every face crop / mel chunk (packed over the batch), a
projection to ``d_model``, a temporal transformer whose CLS output feeds a linear head. Text: the CLS
of the text encoder's last hidden state feeds its own head. The modality logits are fused by
learned per-modality scalars.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Literal

import torch
from torch import nn

from e2e.config import ModelConfig, parse_modalities, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.layers.cnn import INPUT_SHAPES, build_cnn, flat_size
from e2e.models.layers.encoders import (
    LateFusion,
    TemporalTransformer,
    TextEncoder,
    projection,
    text_encoder_from_config,
)


@dataclass
class EndToEndConfig(ModelConfig):
    """Options of the end-to-end models (raw clips in): the MESM paper's values."""

    text_random_init: bool = False  # build the text encoder from its config without pretrained weights
    cnn: Literal["mesm_vgg", "vgg11", "vgg11_bn"] = "mesm_vgg"  # mesm_vgg = the paper; vgg11*: torchvision
    cnn_weights: str | None = None  # torchvision weights name for vgg11/vgg11_bn, e.g. "DEFAULT"
    cnn_width: float = positive(1.0)  # channel multiplier of mesm_vgg (1 = the paper; 0.25 for CPU demos)
    d_model: int = positive(64)  # width of the visual/acoustic temporal transformers
    temporal_layers: int = positive(4)  # encoder layers of each temporal transformer
    temporal_heads: int = positive(4)
    temporal_ffn: int = positive(2048)
    positional_encoding: bool = True  # false = the official code (its temporal encoder has none)


def frames_of(batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed inputs of a frame modality and their per-utterance counts."""
    if modality == "v":
        return batch.faces, batch.face_lengths
    return batch.audio, batch.audio_lengths


class EndToEndModel(nn.Module):
    """FE2E's network; MESM replaces :meth:`_build_cnn` and :meth:`_extract` with its sparse CNN.

    ``text_encoder`` injects a ready :class:`TextEncoder` (tests); by default it is loaded from
    ``config.text_model``. Without text in the modalities no text encoder is built or used."""

    def __init__(self, config: EndToEndConfig, num_classes: int, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.modalities = parse_modalities(config.modalities)
        self.text = None
        self.heads = nn.ModuleDict()
        if "t" in self.modalities:
            self.text = text_encoder if text_encoder is not None else text_encoder_from_config(config)
            self.heads["t"] = nn.Linear(self.text.hidden_size, num_classes)
        self.cnns = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.temporals = nn.ModuleDict()
        for modality in (m for m in self.modalities if m != "t"):
            self.cnns[modality], flat = self._build_cnn(modality, config)
            self.projections[modality] = projection(flat, config.d_model)
            self.temporals[modality] = TemporalTransformer(
                config.d_model,
                config.temporal_layers,
                config.temporal_heads,
                config.temporal_ffn,
                config.dropout,
                config.positional_encoding,
            )
            self.heads[modality] = nn.Linear(config.d_model, num_classes)
        self.fusion = LateFusion(len(self.modalities))

    def _build_cnn(self, modality: str, config: EndToEndConfig) -> tuple[nn.Module, int]:
        """The per-frame CNN of ``modality`` and its flattened output size."""
        shape = INPUT_SHAPES[modality]
        cnn = build_cnn(config.cnn, shape[0], config.cnn_weights, config.cnn_width)
        return cnn, flat_size(cnn, shape)

    def _extract(
        self, modality: str, frames: torch.Tensor, lengths: torch.Tensor, text: torch.Tensor | None, extras: dict
    ) -> torch.Tensor:
        """Per-frame CNN features ``(sum L_b, flat)``; ``text`` and ``extras`` are for subclasses."""
        return self.cnns[modality](frames).flatten(1)

    def forward(self, batch: Batch) -> ModelOutput:
        extras: dict[str, object] = {}
        logits: dict[str, torch.Tensor] = {}
        text = None
        if self.text is not None:
            text = self.text(batch.text_input_ids, batch.text_attention_mask)
            logits["t"] = self.heads["t"](text)
        for modality in self.cnns:
            frames, lengths = frames_of(batch, modality)
            features = self._extract(modality, frames, lengths, text, extras)
            sequence = self.temporals[modality](self.projections[modality](features), lengths)
            logits[modality] = self.heads[modality](sequence)
        fused = self.fusion(torch.stack([logits[m] for m in self.modalities], dim=-1))
        extras["modality_logits"] = logits
        return ModelOutput(fused, extras=extras)

    def text_parameters(self) -> list[nn.Parameter]:
        """Text encoder + text head: the trainer gives these ``lr * text_lr_factor``."""
        if self.text is None:
            return []
        return list(chain(self.text.parameters(), self.heads["t"].parameters()))

    def other_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in :meth:`text_parameters`."""
        text_ids = {id(p) for p in self.text_parameters()}
        return [p for p in self.parameters() if id(p) not in text_ids]
