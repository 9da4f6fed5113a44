"""Synthetic two-stage feature batches for the feature models' tests (no corpus needed).

Dimensions follow ``feature_dims("tiny-bert")`` (text 32). Each utterance's class is written into
every modality (a class-specific offset on a few dimensions, plus noise), with unaligned random
lengths, so any model that reads any one modality can learn it.
"""

from __future__ import annotations

import dataclasses

import torch

from e2e.config import ModelConfig
from e2e.data.batch import Batch
from e2e.data.sequences import feature_dims
from e2e.models import model_options

TEXT_MODEL = "tiny-bert"
NUM_CLASSES = 6
SMALL_SIZES = dict(d_model=16, temporal_layers=1, temporal_heads=2, temporal_ffn=32, dropout=0.0)


def small_config(name: str, modalities: str = "tav", **overrides) -> ModelConfig:
    """Feature model ``name``'s options with tiny sizes (those of :data:`SMALL_SIZES` it has: one layer,
    no dropout), then ``overrides``."""
    options = model_options(name)
    fields = {field.name for field in dataclasses.fields(options)}
    sizes = {key: value for key, value in SMALL_SIZES.items() if key in fields}
    return options(**{**sizes, "modalities": modalities, "text_model": TEXT_MODEL, **overrides})


def feature_batch(batch_size: int = 12, seed: int = 0, multi_label: bool = False, max_length: int = 7) -> Batch:
    """A batch whose labels are recoverable from each modality's features."""
    generator = torch.Generator().manual_seed(seed)
    if multi_label:
        labels = (torch.rand(batch_size, NUM_CLASSES, generator=generator) < 0.4).float()
    else:
        labels = torch.eye(NUM_CLASSES)[torch.arange(batch_size) % NUM_CLASSES]
    fields = {}
    for modality, dim in feature_dims(TEXT_MODEL).items():
        lengths = torch.randint(1, max_length + 1, (batch_size,), generator=generator)
        signal = torch.zeros(batch_size, dim)
        signal[:, :NUM_CLASSES] = 2.0 * labels
        rows = [
            signal[b].expand(int(n), dim) + 0.3 * torch.randn(int(n), dim, generator=generator)
            for b, n in enumerate(lengths)
        ]
        name = {"t": "text", "a": "audio", "v": "visual"}[modality]
        fields[f"{name}_features"] = torch.cat(rows)
        fields[f"{name}_feature_lengths"] = lengths
    return Batch(ids=[f"u{b}" for b in range(batch_size)], labels=labels, **fields)
