"""LF-LSTM: the MESM paper's late-fusion LSTM baseline on two-stage features.

Per modality a bidirectional LSTM reads the valid steps of the feature sequence (packed, so padding
never enters); its final forward and backward states make the utterance vector. Late fusion: the
modality vectors are concatenated and a two-layer MLP gives the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.models.layers.sequence import FeatureModelConfig, LateFusionClassifier, LSTMEncoder
from e2e.models.registry import register_model


@dataclass
class LFLSTMConfig(FeatureModelConfig):
    """LF-LSTM's options. The shared ones mean: ``d_model``, the hidden size of each direction of a
    modality's bidirectional LSTM and the width of its utterance vector and of the MLP; ``temporal_layers``,
    the LSTM's layers (``dropout`` between them when there are several, and in the MLP)."""

    name: str = "lf_lstm"


@register_model("lf_lstm", options=LFLSTMConfig, inputs="features")
def build_lf_lstm(config: LFLSTMConfig, class_names: list[str]) -> LateFusionClassifier:
    return LateFusionClassifier(config, len(class_names), LSTMEncoder)
