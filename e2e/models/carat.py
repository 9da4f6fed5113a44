"""CARAT (Peng et al., AAAI 2024, "CARAT: Contrastive Feature Reconstruction and Aggregation for
Multi-Modal Multi-Label Emotion Recognition"), on two-stage features; runs the one-hot IEMOCAP task too.

* Label-wise modality-specific embeddings: per modality a transformer encodes the sequence, and one
  learned query per label attends over it (padding masked): ``e[m]`` is (B, C, d).
* Contrastive learning (training only): for every label c, a supervised contrastive loss over the
  embeddings ``e[m][:, c]`` of all modalities and utterances, positives = utterances where label c is
  present (as the paper, only label-present embeddings act as anchors here).
* Reconstruction-based fusion: each modality's label-wise embeddings are reconstructed from the mean
  of the other modalities' (an MLP per modality; MSE), and the fused embedding averages every
  modality's own and reconstructed embeddings, so a weak modality is completed by the others.
* Shuffle augmentation (training only): sample shuffle — within the batch, each modality's label-wise
  embeddings are exchanged between utterances with an identical label vector; modality shuffle — the
  order in which modalities are averaged does not matter, so it is realised by the sample shuffle
  being drawn independently per modality (an utterance is rebuilt from different same-label donors).
* Label correlation: a self-attention layer over the C fused label embeddings, then one binary
  classifier per label (a (C, d) weight matrix and a bias per label).
With one modality there is nothing to reconstruct from: the reconstruction term is absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import non_negative
from e2e.data.batch import Batch, ModelOutput
from e2e.models.layers.losses import supervised_contrastive
from e2e.models.layers.sequence import SequenceEncoder, SequenceModelConfig, mlp, modality_dims, padded_features
from e2e.models.registry import register_model


@dataclass
class CARATConfig(SequenceModelConfig):
    """CARAT's options. The shared ones mean:

    * ``d_model``: width of the encoded sequences and of every label-wise embedding;
    * ``temporal_layers``: layers of each modality's transformer encoder;
    * ``temporal_heads``: heads of those encoders, of the label queries' attention and of the label
      correlation layer;
    * ``temporal_ffn``: FFN width of the encoders and of the label correlation layer.
    """

    name: str = "carat"
    aux_weight: float = non_negative(0.1)  # weight of the weighted sum of the two auxiliary losses
    contrastive_weight: float = non_negative(1.0)  # label-wise supervised contrastive loss
    reconstruction_weight: float = non_negative(1.0)  # MSE of the reconstructed label-wise embeddings


def same_label_shuffle(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A permutation of the batch that maps every utterance to one with an identical label vector."""
    order = torch.arange(len(labels), device=labels.device)
    permutation = order.clone()
    groups = torch.unique(labels, dim=0, return_inverse=True)[1]
    for group in groups.unique():
        members = order[groups == group]
        permutation[members] = members[torch.randperm(len(members), generator=generator).to(labels.device)]
    return permutation


class CARAT(nn.Module):
    def __init__(self, config: CARATConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        d = config.d_model
        self.config = config
        self.encoders = nn.ModuleDict({m: SequenceEncoder(dim, config) for m, dim in dims.items()})
        self.label_queries = nn.Parameter(torch.randn(num_classes, d) * 0.02)
        self.label_attention = nn.ModuleDict(
            {m: nn.MultiheadAttention(d, config.temporal_heads, batch_first=True) for m in dims}
        )
        self.reconstructors = nn.ModuleDict({m: mlp(d, d, d, config.dropout) for m in dims} if len(dims) > 1 else {})
        self.correlation = nn.TransformerEncoderLayer(
            d, config.temporal_heads, config.temporal_ffn, config.dropout, batch_first=True
        )
        self.classifier_weight = nn.Parameter(torch.randn(num_classes, d) * d**-0.5)
        self.classifier_bias = nn.Parameter(torch.zeros(num_classes))

    def label_embeddings(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{m: (B, C, d)}``: every label's query attending over modality m's encoded sequence."""
        embeddings = {}
        for modality, encoder in self.encoders.items():
            sequence, padding = padded_features(batch, modality)
            states = encoder(sequence, padding)
            queries = self.label_queries.expand(len(states), -1, -1)
            embeddings[modality], _ = self.label_attention[modality](
                queries, states, states, key_padding_mask=padding, need_weights=False
            )
        return embeddings

    def forward(self, batch: Batch) -> ModelOutput:
        embeddings = self.label_embeddings(batch)
        if self.training:
            embeddings = {m: e[same_label_shuffle(batch.labels)] for m, e in embeddings.items()}
        reconstructed = {
            m: self.reconstructors[m](torch.stack([e for o, e in embeddings.items() if o != m]).mean(0))
            for m in self.reconstructors
        }
        fused = torch.stack([*embeddings.values(), *reconstructed.values()]).mean(0)
        correlated = self.correlation(fused)
        logits = (correlated * self.classifier_weight).sum(-1) + self.classifier_bias
        aux = self.config.aux_weight * self.losses(embeddings, reconstructed, batch.labels) if self.training else None
        return ModelOutput(logits, aux_loss=aux)

    def losses(self, embeddings: dict, reconstructed: dict, labels: torch.Tensor) -> torch.Tensor:
        contrastive = label_wise_contrastive(torch.stack(list(embeddings.values())), labels)
        reconstruction = sum(
            (nn.functional.mse_loss(reconstructed[m], embeddings[m]) for m in reconstructed), torch.tensor(0.0)
        )
        return self.config.contrastive_weight * contrastive + self.config.reconstruction_weight * reconstruction


def label_wise_contrastive(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over labels of a supervised contrastive loss on ``embeddings[:, :, c]`` ((M, B, C, d)) of all
    modalities and utterances: embeddings of utterances where label c is present are positives."""
    modalities, batch_size, num_labels, _ = embeddings.shape
    present = labels.bool().repeat(modalities, 1)  # (M * B, C)
    losses = []
    for label in range(num_labels):
        views = embeddings[:, :, label].reshape(modalities * batch_size, -1)
        both_present = present[:, label, None] & present[None, :, label]
        losses.append(supervised_contrastive(views, both_present))
    return torch.stack(losses).mean()


@register_model("carat", options=CARATConfig, inputs="features")
def build_carat(config: CARATConfig, class_names: list[str]) -> CARAT:
    return CARAT(config, len(class_names))
