"""LF-TRANS: the MESM paper's late-fusion transformer baseline on two-stage features.

Per modality a transformer encoder (linear projection, sinusoidal positions, key padding masks)
whose states are mean-pooled over the valid steps; the modality vectors are concatenated and a
two-layer MLP gives the logits. Mean pooling rather than a CLS token: with the short demo sequences
and few epochs it trains more stably, and it is padding-invariant by construction.
"""
from __future__ import annotations

from e2e.config import ModelConfig
from e2e.models.registry import register_model
from e2e.models.sequence import LateFusionClassifier, PooledTransformer


@register_model("lf_trans", inputs="features")
def build_lf_trans(config: ModelConfig, class_names: list[str]) -> LateFusionClassifier:
    return LateFusionClassifier(config, len(class_names), PooledTransformer)
