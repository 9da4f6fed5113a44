"""ConKI (Yu et al., 2023, "ConKI: Contrastive Knowledge Injection for Multimodal Sentiment Analysis"),
for emotion classification on two-stage features.

Per modality a **pan-knowledge** encoder (a transformer over the feature sequence: general knowledge)
and a **knowledge adapter** (bottleneck adapter layers on the encoder's states: domain knowledge)
give two utterance vectors, ``pan_m`` and ``knowledge_m``; the 2M vectors are concatenated and an MLP
classifies them. The adapters live under ``adapters`` so they can be pretrained elsewhere:

1. stage 1: train ``conki`` on the *other* corpus (the external knowledge source) with the task loss;
2. stage 2: train ``conki`` on the target corpus with ``train.init_checkpoint=<stage-1 run>/checkpoints/
   best.pt`` and ``train.init_prefix=adapters.`` — the adapters start from the injected knowledge, the
   rest from scratch, and everything is fine-tuned (``e2e benchmark --knowledge-data`` does both).

Hierarchical contrastive loss (training only, times ``aux_weight``), each term a supervised
contrastive loss (:func:`e2e.models.layers.losses.supervised_contrastive`) over a set of views:

* knowledge level: for each modality, ``pan_m`` and ``knowledge_m`` of the same utterance are
  *negatives* (their cosine similarity is penalised), so the adapter adds knowledge the pan encoder
  lacks — our reading of the paper's knowledge-level pairs;
* modality level: the ``knowledge_m`` of one utterance across modalities are positives;
* sample level: fused vectors of utterances with the same rounded label are positives: one-hot IEMOCAP
  the same class, multi-hot MOSEI the same emotion set, a MOSEI sentiment score the same integer in
  -3..3 (the paper's rounding; class vectors are 0/1 already, so rounding leaves them as they are).

No official code is public; the fidelity table lists, per loss and layer, what is implemented and each
choice the paper leaves open here.

Tasks: emotion and sentiment (the paper's). Not vad: rounding three continuous IEMOCAP means to a
positive set is no choice of the paper's, and the contrastive term would be ours to validate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import non_negative, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.fidelity import FidelityTable, Setting, bf16_setting, unread_setting
from e2e.models.layers.losses import label_positives, supervised_contrastive
from e2e.models.layers.sequence import (
    SequenceEncoder,
    SequenceModelConfig,
    masked_mean,
    mlp,
    modality_dims,
    padded_features,
    unread_sequence_settings,
)
from e2e.models.registry import register_model


@dataclass
class ConKIConfig(SequenceModelConfig):
    """ConKI's options. The shared ones (``d_model``, ``temporal_*``) size each modality's pan-knowledge
    transformer encoder; ``d_model`` is also the adapters' width."""

    name: str = "conki"
    d_model: int = positive(40)
    temporal_heads: int = positive(8)
    temporal_ffn: int = positive(160)
    aux_weight: float = non_negative(0.1)  # weight of the hierarchical contrastive loss
    adapter_reduction: int = positive(4)  # an adapter layer's bottleneck is d_model // adapter_reduction wide
    adapter_layers: int = positive(2)  # residual bottleneck layers per knowledge adapter
    knowledge_weight: float = non_negative(1.0)  # knowledge level: pan_m vs knowledge_m (negatives)
    modality_weight: float = non_negative(1.0)  # modality level: one utterance's knowledge_m (positives)
    sample_weight: float = non_negative(1.0)  # sample level: fused vectors of same-label utterances


_PAPER = "Yu et al., ConKI: Contrastive Knowledge Injection for Multimodal Sentiment Analysis, ACL Findings 2023"
_SOURCE = "paper (no official code was found; its full text was not reachable when this table was written)"


FIDELITY = FidelityTable(
    "conki",
    f"{_PAPER}; no official code found",
    (
        Setting(
            "pan-knowledge encoder",
            "a general-knowledge encoder per modality",
            "paper, method section",
            paper="transformer over the modality's feature sequence (the text features are frozen text-model "
            "states), mean over the valid steps",
            why="open: the encoders on our two-stage features",
        ),
        Setting(
            "knowledge adapter",
            "adapters on the encoder carry domain-specific knowledge, injected from external data",
            "paper, method section",
            paper="residual bottleneck layers (Linear, ReLU, Linear) + LayerNorm on the encoder's states; "
            "pretrained on the other corpus (stage 1) and loaded by train.init_prefix=adapters.",
            why="open: the adapter's layers and the knowledge source; the other corpus is the external one here",
        ),
        Setting(
            "fusion and head",
            "the 2M pan and knowledge representations are fused for the prediction",
            "paper",
            paper="concatenation, then Linear, ReLU, dropout, Linear",
            why="open: the fusion layer",
        ),
        Setting(
            "knowledge-level contrast",
            "pan and knowledge representations of one modality and utterance form a pair",
            "paper, hierarchical contrastive learning",
            paper="mean over modalities of max(0, cos(pan_m, knowledge_m)) (negatives)",
            why="open: our reading of the paper's knowledge-level pairs (pushed apart so the adapter adds "
            "knowledge the pan encoder lacks)",
        ),
        Setting(
            "modality-level contrast",
            "the knowledge representations of one utterance across modalities are positives",
            "paper, hierarchical contrastive learning",
            paper="supervised contrastive loss (temperature 0.1) over the M x B knowledge vectors",
            why="open: the contrastive loss and its temperature",
        ),
        Setting(
            "sample-level contrast",
            "utterances with the same (rounded) label are positives",
            "paper, hierarchical contrastive learning",
            paper="supervised contrastive loss (temperature 0.1) over the fused vectors; positives share the "
            "rounded label (class, emotion set or integer sentiment)",
            why="open: the temperature and the rounding for classes (the labels are 0/1 already)",
        ),
        unread_setting("contrastive loss weight", _SOURCE, "model.aux_weight", 0.1),
        unread_setting("knowledge-level weight", _SOURCE, "model.knowledge_weight", 1.0),
        unread_setting("modality-level weight", _SOURCE, "model.modality_weight", 1.0),
        unread_setting("sample-level weight", _SOURCE, "model.sample_weight", 1.0),
        unread_setting("adapter bottleneck reduction", _SOURCE, "model.adapter_reduction", 4),
        unread_setting("adapter layers", _SOURCE, "model.adapter_layers", 2),
        *unread_sequence_settings(_SOURCE),
        bf16_setting("precision", "fp32", "paper (no mixed precision reported)", "improved: bf16 autocast on CUDA"),
    ),
)


class Adapter(nn.Module):
    """Residual bottleneck adapter layers (down-projection, ReLU, up-projection, LayerNorm)."""

    def __init__(self, d_model: int, reduction: int, layers: int):
        super().__init__()
        hidden = max(1, d_model // reduction)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, d_model)) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            states = states + layer(states)
        return self.norm(states)


class ConKI(nn.Module):
    def __init__(self, config: ConKIConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        self.config = config
        self.encoders = nn.ModuleDict({m: SequenceEncoder(dim, config) for m, dim in dims.items()})
        self.adapters = nn.ModuleDict(
            {m: Adapter(config.d_model, config.adapter_reduction, config.adapter_layers) for m in dims}
        )
        self.head = mlp(2 * len(dims) * config.d_model, config.d_model, num_classes, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        pan, knowledge = {}, {}
        for modality, encoder in self.encoders.items():
            sequence, padding = padded_features(batch, modality)
            states = encoder(sequence, padding)
            pan[modality] = masked_mean(states, padding)
            knowledge[modality] = masked_mean(self.adapters[modality](states), padding)
        fused = torch.cat([*pan.values(), *knowledge.values()], dim=1)
        aux = self.auxiliary_loss(pan, knowledge, fused, batch.labels) if self.training else None
        return ModelOutput(self.head(fused), aux_loss=aux)

    def auxiliary_loss(self, pan: dict, knowledge: dict, fused: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        knowledge_level, modality_level, sample_level = hierarchical_contrastive(pan, knowledge, fused, labels)
        return self.config.aux_weight * (
            self.config.knowledge_weight * knowledge_level
            + self.config.modality_weight * modality_level
            + self.config.sample_weight * sample_level
        )


def hierarchical_contrastive(
    pan: dict, knowledge: dict, fused: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Knowledge-, modality- and sample-level contrastive terms (see the module docstring)."""
    knowledge_level = sum(
        nn.functional.cosine_similarity(pan[m], knowledge[m], dim=1).clamp(min=0).mean() for m in pan
    ) / len(pan)
    views = torch.cat(list(knowledge.values()))  # (M * B, d): row m * B + b is modality m of utterance b
    utterance = torch.arange(len(fused), device=fused.device).repeat(len(knowledge))
    modality_level = supervised_contrastive(views, utterance[:, None] == utterance[None, :])
    sample_level = supervised_contrastive(fused, label_positives(labels.round()))
    return knowledge_level, modality_level, sample_level


@register_model(
    "conki",
    options=ConKIConfig,
    inputs="features",
    pretrain_prefix="adapters.",
    tasks=("emotion", "sentiment"),
    fidelity=FIDELITY,
)
def build_conki(config: ConKIConfig, class_names: list[str]) -> ConKI:
    return ConKI(config, len(class_names))
