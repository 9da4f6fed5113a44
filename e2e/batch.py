"""The one batch format every model's ``forward`` takes, and the output every model returns.

Frames and chunks are *packed*: the face crops of all utterances in the batch are concatenated along
dim 0, and ``face_lengths[b]`` says how many belong to utterance ``b`` (same for audio chunks). CNNs run
on the packed tensor (no compute on padding); temporal models pad per utterance themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


@dataclass
class Batch:
    ids: list[str]
    labels: torch.Tensor  # (B, C) float, one-hot (IEMOCAP) or multi-hot (MOSEI)
    text_input_ids: torch.Tensor  # (B, L) long
    text_attention_mask: torch.Tensor  # (B, L) long
    faces: torch.Tensor  # (sum F_b, 3, 48, 48) float, normalised
    face_lengths: torch.Tensor  # (B,) long, every entry >= 1
    audio: torch.Tensor  # (sum A_b, 1, 128, 32) float
    audio_lengths: torch.Tensor  # (B,) long, every entry >= 1

    def to(self, device: torch.device | str) -> "Batch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=True)
        return Batch(**moved)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, C) fused logits; the trainer applies BCEWithLogits
    aux_loss: torch.Tensor | None = None  # extra model-specific loss added to the task loss
    extras: dict[str, object] = field(default_factory=dict)  # per-modality logits, sparse masks, ...
