"""LF-TRANS: the MESM paper's late-fusion transformer baseline on two-stage features (official
``src/models/baselines/lf_transformer.py`` with ``src/models/transformer_encoder.py``).

Per modality a post-LN transformer encoder as wide as that modality's features (no input projection;
zero feature columns are appended up to a multiple of its heads, as the official code did for audio),
with a learned CLS vector prepended and key padding masks; the CLS output goes to a per-modality
classifier, and learned weights fuse the modality logits (:class:`ModalityLateFusion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import ModelConfig, positive
from e2e.models.fidelity import FidelityTable, Setting
from e2e.models.layers.encoders import sinusoidal_encoding
from e2e.models.layers.late_fusion import LATE_FUSION_PAPER, FusionInit, ModalityLateFusion, late_fusion_settings
from e2e.models.layers.sequence import modality_dims
from e2e.models.registry import register_model

_MODEL = "src/models/baselines/lf_transformer.py"
_ENCODER = "src/models/transformer_encoder.py"


@dataclass
class LFTransConfig(ModelConfig):
    """LF-TRANS' options (the official values); ``dropout`` is the transformer layers' dropout."""

    name: str = "lf_trans"
    temporal_layers: int = positive(2)  # encoder layers of each modality
    text_heads: int = positive(4)
    audio_heads: int = positive(2)
    visual_heads: int = positive(5)
    temporal_ffn: int = positive(2048)  # feed-forward width of each layer
    positional_encoding: bool = False  # the official encoder has none; true: sinusoidal on the steps (not CLS)
    fusion_init: FusionInit = "torch"  # torch: nn.Linear's default init of the fusion weights; average: 1/M


FIDELITY = FidelityTable(
    "lf_trans",
    LATE_FUSION_PAPER,
    late_fusion_settings(_MODEL, "LF_TRANSFORMER")
    + (
        Setting(
            "encoder width",
            "the modality's feature size (no projection), padded with zero features to a multiple of the heads",
            f"official {_MODEL} (dim=feature_sizes[m]; audio 142 + 2 columns = 144)",
            why="same rule on our feature sizes (visual 274 -> 275 for 5 heads)",
        ),
        Setting(
            "encoder layers",
            2,
            "official src/cli.py (--trans-nlayers default; the README command sets none)",
            "model.temporal_layers",
        ),
        Setting("heads, text", 4, f"official {_MODEL}", "model.text_heads"),
        Setting("heads, audio", 2, f"official {_MODEL}", "model.audio_heads"),
        Setting("heads, visual", 5, f"official {_MODEL}", "model.visual_heads"),
        Setting("feed-forward width", 2048, f"official {_ENCODER} (torch default)", "model.temporal_ffn"),
        Setting("dropout", 0.1, f"official {_ENCODER} (torch default)", "model.dropout"),
        Setting(
            "positional encoding",
            False,
            f"official {_ENCODER} (pos_encoder commented out)",
            "model.positional_encoding",
            improved=True,
            why="improved: sinusoidal positions, so step order is visible to the encoder",
        ),
        Setting(
            "sequence padding",
            "masked for audio and visual, never for text",
            f"official {_MODEL} (text encoded without lengths)",
            paper="masked on every modality",
            why="an official defect: the text CLS attends to the zero padding, so a prediction depends on the "
            "longest text in its batch",
        ),
        Setting(
            "utterance vector",
            "output at a learned CLS vector prepended to the steps (N(0, 1) init)",
            f"official {_ENCODER} (cls_emb, get_cls=True)",
            why="same",
        ),
    ),
)


class CLSTransformer(nn.Module):
    """One modality's encoder: zero-pad the features to ``out_features`` (a multiple of ``heads``), prepend
    the CLS vector, post-LN transformer encoder with key padding mask; ``forward`` gives the CLS output
    ``(B, out_features)``."""

    def __init__(self, features: int, heads: int, config: LFTransConfig):
        super().__init__()
        self.out_features = heads * math.ceil(features / heads)
        layer = nn.TransformerEncoderLayer(
            self.out_features, heads, config.temporal_ffn, config.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.temporal_layers, enable_nested_tensor=False)
        self.cls = nn.Parameter(torch.randn(self.out_features))  # nn.Embedding's N(0, 1), as the official one
        self.positional = config.positional_encoding

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        steps = nn.functional.pad(sequence, (0, self.out_features - sequence.shape[-1]))
        if self.positional:
            steps = steps + sinusoidal_encoding(steps.shape[1], steps.shape[2], steps.device)
        tokens = torch.cat([self.cls.expand(len(steps), 1, -1), steps], dim=1)
        padding = torch.cat([padding.new_zeros(len(steps), 1), padding], dim=1)
        return self.encoder(tokens, src_key_padding_mask=padding)[:, 0]


@register_model(
    "lf_trans", options=LFTransConfig, inputs="features", tasks=("emotion", "sentiment", "vad"), fidelity=FIDELITY
)
def build_lf_trans(config: LFTransConfig, class_names: list[str]) -> ModalityLateFusion:
    heads = {"t": config.text_heads, "a": config.audio_heads, "v": config.visual_heads}
    encoders = {m: CLSTransformer(dim, heads[m], config) for m, dim in modality_dims(config).items()}
    return ModalityLateFusion(encoders, len(class_names), config.fusion_init)
