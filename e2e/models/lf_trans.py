"""LF-TRANS: the MESM paper's late-fusion transformer baseline on two-stage features.

Per modality a transformer encoder (linear projection, sinusoidal positions, key padding masks)
whose states are mean-pooled over the valid steps; the modality vectors are concatenated and a
two-layer MLP gives the logits. Mean pooling rather than a CLS token: with the short demo sequences
and few epochs it trains more stably, and it is padding-invariant by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.models.layers.sequence import LateFusionClassifier, PooledTransformer, SequenceModelConfig
from e2e.models.registry import register_model


@dataclass
class LFTransConfig(SequenceModelConfig):
    """LF-TRANS' options. The shared ones (``d_model``, ``temporal_*``) size each modality's transformer
    encoder; ``d_model`` is also the width of the utterance vectors and of the MLP."""

    name: str = "lf_trans"


@register_model("lf_trans", options=LFTransConfig, inputs="features")
def build_lf_trans(config: LFTransConfig, class_names: list[str]) -> LateFusionClassifier:
    return LateFusionClassifier(config, len(class_names), PooledTransformer)
