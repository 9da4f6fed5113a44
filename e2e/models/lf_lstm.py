"""LF-LSTM: the MESM paper's late-fusion LSTM baseline on two-stage features.

Per modality a bidirectional LSTM reads the valid steps of the feature sequence (packed, so padding
never enters); its final forward and backward states make the utterance vector. Late fusion: the
modality vectors are concatenated and a two-layer MLP gives the logits.
"""
from __future__ import annotations

from e2e.config import ModelConfig
from e2e.models.registry import register_model
from e2e.models.sequence import LateFusionClassifier, LSTMEncoder


@register_model("lf_lstm", inputs="features")
def build_lf_lstm(config: ModelConfig, class_names: list[str]) -> LateFusionClassifier:
    return LateFusionClassifier(config, len(class_names), LSTMEncoder)
