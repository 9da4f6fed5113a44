"""FE2E: the fully end-to-end model (Dai et al., NAACL 2021).

Per visual/acoustic modality: a CNN on every face crop / mel chunk (packed over the batch), a
projection to ``d_model``, a temporal transformer whose CLS output feeds a linear head. Text: the CLS
of the text encoder's last hidden state feeds its own head. The modality logits are fused by
learned per-modality scalars.
"""
from __future__ import annotations

from itertools import chain

import torch
from torch import nn

from e2e.batch import Batch, ModelOutput
from e2e.config import ModelConfig
from e2e.models.cnn import INPUT_SHAPES, build_cnn, flat_size
from e2e.models.encoders import LateFusion, TemporalTransformer, TextEncoder, projection, text_encoder_from_config
from e2e.models.registry import register_model

MODALITIES = "tav"  # canonical order: text, audio, visual


def parse_modalities(spec: str) -> tuple[str, ...]:
    """``"tav"``, ``"va"``, ... → the modalities in canonical order; rejects unknown or repeated letters."""
    if not spec or set(spec) - set(MODALITIES) or len(set(spec)) != len(spec):
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES!r} without repeats, got {spec!r}")
    return tuple(m for m in MODALITIES if m in spec)


def frames_of(batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed inputs of a frame modality and their per-utterance counts."""
    if modality == "v":
        return batch.faces, batch.face_lengths
    return batch.audio, batch.audio_lengths


class FE2E(nn.Module):
    """``text_encoder`` injects a ready :class:`TextEncoder` (tests); by default it is loaded from
    ``config.text_model``. Without text in the modalities no text encoder is built or used."""

    def __init__(self, config: ModelConfig, num_classes: int, text_encoder: TextEncoder | None = None):
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
                config.d_model, config.temporal_layers, config.temporal_heads, config.temporal_ffn,
                config.dropout, config.positional_encoding)
            self.heads[modality] = nn.Linear(config.d_model, num_classes)
        self.fusion = LateFusion(len(self.modalities))

    def _build_cnn(self, modality: str, config: ModelConfig) -> tuple[nn.Module, int]:
        """The per-frame CNN of ``modality`` and its flattened output size."""
        shape = INPUT_SHAPES[modality]
        cnn = build_cnn(config.cnn, shape[0], config.cnn_weights, config.cnn_width)
        return cnn, flat_size(cnn, shape)

    def _extract(self, modality: str, frames: torch.Tensor, lengths: torch.Tensor,
                 text: torch.Tensor | None, extras: dict) -> torch.Tensor:
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


@register_model("fe2e")
def build_fe2e(config: ModelConfig, class_names: list[str]) -> FE2E:
    return FE2E(config, len(class_names))
