"""LF-LSTM: the MESM paper's late-fusion LSTM baseline on two-stage features (official
``src/models/baselines/lf_rnn.py``).

Per modality an LSTM whose hidden size is that modality's feature size (bidirectional, one layer)
reads the valid steps of the feature sequence (packed, so padding never enters); the last layer's
final states of both directions make the utterance vector, a per-modality classifier gives that
modality's logits, and learned weights fuse the logits (:class:`ModalityLateFusion`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import ModelConfig, positive
from e2e.models.fidelity import FidelityTable, Setting
from e2e.models.layers.late_fusion import LATE_FUSION_PAPER, FusionInit, ModalityLateFusion, late_fusion_settings
from e2e.models.layers.sequence import modality_dims
from e2e.models.registry import register_model

_MODEL = "src/models/baselines/lf_rnn.py"


@dataclass
class LFLSTMConfig(ModelConfig):
    """LF-LSTM's options (the official values). ``dropout`` acts between LSTM layers only, so not at all
    with one layer (as in the official model)."""

    name: str = "lf_lstm"
    temporal_layers: int = positive(1)  # LSTM layers of each modality
    bidirectional: bool = True
    fusion_init: FusionInit = "torch"  # torch: nn.Linear's default init of the fusion weights; average: 1/M


FIDELITY = FidelityTable(
    "lf_lstm",
    LATE_FUSION_PAPER,
    late_fusion_settings(_MODEL, "LF_RNN")
    + (
        Setting(
            "LSTM hidden size",
            "the modality's feature size",
            f"official {_MODEL} (hidden_size=feature_sizes[m]; src/cli.py's --hidden-size is never read)",
            why="same rule on our feature sizes (text: the text encoder's width, audio 28, visual 274)",
        ),
        Setting(
            "LSTM layers",
            1,
            f"official {_MODEL} (LF_RNN num_layers=1; main.py passes no other)",
            "model.temporal_layers",
        ),
        Setting(
            "bidirectional",
            True,
            f"official {_MODEL} (LF_RNN bi=True; src/cli.py's -bi is never read)",
            "model.bidirectional",
        ),
        Setting("dropout (between LSTM layers)", 0.1, f"official {_MODEL} (LF_RNN dropout=0.1)", "model.dropout"),
        Setting(
            "sequence padding",
            "LSTMs over the zero-padded batch (not packed); text vector: the output at the last padded step",
            f"official {_MODEL}",
            paper="packed: each utterance's own steps; the last layer's final states of both directions",
            why="an official defect: a prediction then depends on the longest utterance in its batch, and the "
            "text vector's backward half has read only that last (padding) step",
        ),
    ),
)


class PackedLSTM(nn.Module):
    """An LSTM over the valid steps only; ``forward`` gives the last layer's final state of each direction,
    concatenated: ``(B, out_features)``."""

    def __init__(self, features: int, config: LFLSTMConfig):
        super().__init__()
        self.lstm = nn.LSTM(
            features,
            features,
            config.temporal_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.temporal_layers > 1 else 0.0,
        )
        self.directions = 2 if config.bidirectional else 1
        self.out_features = self.directions * features

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        lengths = (~padding).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(sequence, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return hidden[-self.directions :].transpose(0, 1).flatten(1)


@register_model(
    "lf_lstm", options=LFLSTMConfig, inputs="features", tasks=("emotion", "sentiment", "vad"), fidelity=FIDELITY
)
def build_lf_lstm(config: LFLSTMConfig, class_names: list[str]) -> ModalityLateFusion:
    encoders = {m: PackedLSTM(dim, config) for m, dim in modality_dims(config).items()}
    return ModalityLateFusion(encoders, len(class_names), config.fusion_init)
