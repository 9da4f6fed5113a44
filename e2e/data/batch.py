"""The one batch format every model's ``forward`` takes, and the output every model returns.

Frames, chunks and feature sequences are *packed*: the face crops of all utterances in the batch are
concatenated along dim 0, and ``face_lengths[b]`` says how many belong to utterance ``b`` (same for
audio chunks and for the two-stage feature sequences). CNNs run on the packed tensor (no compute on
padding); temporal models pad per utterance themselves (:func:`e2e.models.layers.encoders.pad_packed`).

A batch carries either the raw inputs of the end-to-end models (tokens, face crops, mel chunks) or
the two-stage feature sequences of the baselines (:mod:`e2e.data.sequences`), depending on the
model's registered ``inputs`` kind; the other group is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from e2e.config import UsageError

FEATURE_FIELDS = {"t": "text_features", "a": "audio_features", "v": "visual_features"}


@dataclass
class Batch:
    ids: list[str]
    labels: torch.Tensor  # (B, C) float: one-hot (IEMOCAP) or multi-hot (MOSEI) classes, or regression targets
    # raw inputs (models registered with inputs="raw")
    text_input_ids: torch.Tensor | None = None  # (B, L) long
    text_attention_mask: torch.Tensor | None = None  # (B, L) long
    faces: torch.Tensor | None = None  # (sum F_b, 3, 48, 48) float, normalised
    face_lengths: torch.Tensor | None = None  # (B,) long, every entry >= 1
    audio: torch.Tensor | None = None  # (sum A_b, 1, 128, 32) float
    audio_lengths: torch.Tensor | None = None  # (B,) long, every entry >= 1
    # two-stage feature sequences (models registered with inputs="features"), unaligned across modalities
    text_features: torch.Tensor | None = None  # (sum T_b, D_t) token embeddings
    text_feature_lengths: torch.Tensor | None = None  # (B,) long, >= 1
    audio_features: torch.Tensor | None = None  # (sum A_b, D_a) acoustic descriptors per 100 ms
    audio_feature_lengths: torch.Tensor | None = None
    visual_features: torch.Tensor | None = None  # (sum V_b, D_v) face-crop descriptors per sampled frame
    visual_feature_lengths: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=True)
        return Batch(**moved)

    def features(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The packed feature sequence of modality ``t``, ``a`` or ``v`` and its per-utterance lengths."""
        name = FEATURE_FIELDS[modality]
        packed, lengths = getattr(self, name), getattr(self, name.replace("_features", "_feature_lengths"))
        if packed is None:
            raise UsageError(f"this batch holds no {name} (is the model registered with inputs='features'?)")
        return packed, lengths

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, C) fused logits (BCEWithLogits), or the predictions of a regression task (L1)
    aux_loss: torch.Tensor | None = None  # extra model-specific loss added to the task loss
    extras: dict[str, object] = field(default_factory=dict)  # per-modality logits, sparse masks, ...
