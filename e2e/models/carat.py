"""CARAT (Peng et al., AAAI 2024, "CARAT: Contrastive Feature Reconstruction and Aggregation for
Multi-Modal Multi-Label Emotion Recognition"), on two-stage features, as the official code
(chengzju/CARAT, ``models/models.py``) builds it; runs the one-hot IEMOCAP task too.

Per modality m (any subset of t, a, v):

* **Label-specific representations**: the sequence is layer-normalised, encoded by a BERT-style
  transformer, and one attention score per label and step (a bias-free linear layer, softmax over the
  valid steps) pools it into ``lsr[m]`` (B, C, d).
* **Latent space**: an MLP projects every label's representation to ``latent[m]`` (B, C, p) and a
  second MLP decodes it back (``recon[m]``, trained by MSE against ``lsr[m]``).
* **Prototypes**: per label a "present" and an "absent" prototype (momentum averages of the normalised
  latents of the utterances where the label is present / absent). The latent picks them by softmaxed
  cosine similarity (training: the soft mix; inference: the closer one); decoded, this is ``pad[m]``,
  the modality's own view completed from its label statistics.
* **Reconstruction-based fusion**: ``aug[m] = fuse[m](pad[m] in m's slot, recon[o] in every other
  modality's)``, then ``beta[m] = fuse[m](aug of all modalities)``, with the same linear layer.
* **Per-modality classifiers**: a (C, d) weight per modality scores ``lsr``, ``aug`` and ``beta``; each
  score is max-pooled over the modalities.
* **Aggregation**: an MLP maps each modality's flattened ``beta[m]`` (C * d) to C logits.
* **Prediction**: the mean of the aggregation's per-modality probabilities and the max-pooled
  ``beta`` probability, averaged; ``ModelOutput.logits`` is its logit (computed in log space).

Training losses (weights: the official ``train.sh``): BCE of the max-pooled ``beta`` score (the task
loss: in training ``ModelOutput.logits`` is that score, so the trainer's loss is this term), of the
``lsr`` and ``aug`` scores, of the aggregation and of the aggregation of the shuffled ``beta``; MSE of
``recon`` and ``aug`` (and ``beta``) against ``lsr``; and a supervised contrastive loss whose classes
are label x polarity (present / absent) x modality over the normalised latents of ``lsr``, ``aug`` and
``beta`` of the batch and of a FIFO queue of past batches (every one an anchor). The shuffle
(:func:`label_wise_shuffle`) recomposes each label's ``beta`` from a random utterance and a random
modality, the targets following the donor; it feeds only its own loss, never the prediction.

Tasks: emotion only. Label queries, label-polarity contrastive classes and prototypes all need class
labels; a regression score has none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from e2e.config import bounded, fraction, non_negative, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.fidelity import FidelityTable, PerDataset, Setting, bf16_setting
from e2e.models.layers.encoders import sinusoidal_encoding
from e2e.models.layers.sequence import SequenceModelConfig, modality_dims, padded_features
from e2e.models.registry import register_model


@dataclass
class CARATConfig(SequenceModelConfig):
    """CARAT's options (defaults: the official code). The shared ones mean:

    * ``d_model``: width of the encoders and of every label-specific representation (``hidden_size``);
    * ``temporal_layers``: layers of each modality's transformer encoder;
    * ``temporal_heads``: heads of those encoders;
    * ``temporal_ffn``: FFN width of the encoders (``intermediate_size``);
    * ``dropout``: the encoders' hidden and attention dropout.
    """

    name: str = "carat"
    d_model: int = positive(256)
    temporal_layers: int = positive(3)
    temporal_heads: int = positive(8)
    temporal_ffn: int = positive(256)
    dropout: float = fraction(0.3)
    proj_size: int = positive(64)  # width of the latent (contrastive, prototype) space
    queue_size: int = positive(8192)  # past latents kept for the contrastive loss
    temperature: float = bounded(0.07, 0, None, low_open=True)  # of the supervised contrastive loss
    prototype_momentum: float = bounded(0.99, 0, 1)  # momentum of the label-polarity prototypes
    # label_wise: per label, modality slot and utterance an independent random donor (the official shuffle);
    # same_label: donors only among utterances with an identical label vector (targets stay one-hot)
    shuffle: Literal["label_wise", "same_label"] = "label_wise"
    aux_weight: float = non_negative(1.0)  # scales the sum of every loss below
    lsr_clf_weight: float = non_negative(0.01)  # BCE of the max-pooled lsr scores
    aug_clf_weight: float = non_negative(0.1)  # BCE of the max-pooled aug scores
    aggregation_weight: float = non_negative(1.0)  # BCE of the aggregation of beta
    shuffle_weight: float = non_negative(0.1)  # BCE of the aggregation of the shuffled beta
    contrastive_weight: float = non_negative(1.0)  # label x polarity x modality supervised contrastive loss
    reconstruction_weight: float = non_negative(1.0)  # MSE of recon against lsr
    aug_mse_weight: float = non_negative(1.0)  # MSE of aug against lsr
    beta_mse_weight: float = non_negative(0.0)  # MSE of beta against lsr


class ModalityEncoder(nn.Module):
    """The official modality branch (``Normalize`` + ``TfModel``): layer norm on the input features, linear
    embedding plus positions, layer norm and dropout, post-LN GELU transformer layers; BERT's N(0, 0.02)
    initialisation. Positions are sinusoidal (the official table is learned, 500 long)."""

    def __init__(self, in_features: int, config: CARATConfig):
        super().__init__()
        d = config.d_model
        self.input_norm = nn.LayerNorm(in_features, eps=1e-12)
        self.embedding = nn.Linear(in_features, d)
        self.embedding_norm = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            config.temporal_heads,
            config.temporal_ffn,
            config.dropout,
            activation="gelu",
            layer_norm_eps=1e-12,
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.temporal_layers, enable_nested_tensor=False)
        for module in self.modules():
            _bert_init(module)

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        states = self.embedding(self.input_norm(sequence))
        states = states + sinusoidal_encoding(states.shape[1], states.shape[2], states.device)
        return self.encoder(self.dropout(self.embedding_norm(states)), src_key_padding_mask=padding)


def _bert_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, std=0.02)
        nn.init.zeros_(module.in_proj_bias)


class LabelAttention(nn.Module):
    """One score per label and step (a bias-free linear layer), softmax over the valid steps, the
    weighted sums of the states: (B, L, d) -> (B, C, d)."""

    def __init__(self, num_labels: int, d: int):
        super().__init__()
        self.scores = nn.Linear(d, num_labels, bias=False)
        nn.init.xavier_uniform_(self.scores.weight)

    def forward(self, states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        scores = self.scores(states).transpose(1, 2).masked_fill(padding[:, None, :], float("-inf"))
        return scores.softmax(-1) @ states


def xavier_mlp(sizes: list[int], out_features: int) -> nn.Sequential:
    """``Linear -> ReLU`` through ``sizes``, then a linear output layer; Xavier-uniform weights."""
    layers: list[nn.Module] = []
    for in_features, hidden in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(in_features, hidden), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], out_features))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
    return nn.Sequential(*layers)


class LabelPrototypes(nn.Module):
    """Per label a "present" (row 0) and an "absent" (row 1) prototype in the latent space: momentum
    averages of the normalised latents, zero until the first update."""

    def __init__(self, num_labels: int, dim: int, momentum: float):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(2, num_labels, dim))

    def lookup(self, latent: torch.Tensor, hard: bool) -> torch.Tensor:
        """(B, C, p) normalised latents -> the prototypes they are closest to (softmax over the cosine
        similarities to the two; ``hard``: the closer one, the absent one on a tie)."""
        prototypes = self.prototypes.to(latent.dtype, copy=True)  # update() changes the buffer in place
        weights = torch.einsum("bcd,ncd->bcn", latent, prototypes).softmax(-1)
        if hard:
            weights = F.one_hot((weights[..., 0] <= weights[..., 1]).long(), 2).to(latent.dtype)
        return torch.einsum("bcn,ncd->bcd", weights, prototypes)

    @torch.no_grad()
    def update(self, latent: torch.Tensor, labels: torch.Tensor) -> None:
        """The official per-utterance momentum update, utterance by utterance in batch order, in closed
        form: after k updates ``p = m^k p + (1 - m) sum_i m^(k - 1 - i) f_i``."""
        latent = latent.detach().float()
        for row, selected in enumerate((labels >= 0.5, labels < 0.5)):
            selected = selected.float()  # (B, C)
            later = selected.flip(0).cumsum(0).flip(0) - selected  # updates after utterance i
            weights = selected * (1 - self.momentum) * self.momentum**later
            decay = self.momentum ** selected.sum(0)
            self.prototypes[row] = decay[:, None] * self.prototypes[row] + torch.einsum("bc,bcd->cd", weights, latent)


class ContrastiveQueue(nn.Module):
    """A FIFO queue of past normalised latents and their contrastive classes, with each entry's
    contrastive denominator over the other entries (sum of ``exp(s - 1/T)``, ``s`` = cosine / T), kept up
    to date in float64 as entries come and go: a step costs O(batch x queue), not O(queue^2). Only filled
    entries are used: until ``size`` entries have been pushed the queue holds the past batches only."""

    def __init__(self, size: int, dim: int, temperature: float):
        super().__init__()
        self.size, self.temperature = size, temperature
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("classes", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("denominators", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, classes, denominators) of the filled entries; copies, so that :meth:`push` may run
        before the loss's backward pass."""
        filled = int(self.filled)
        return tuple(buffer[:filled].clone() for buffer in (self.features, self.classes, self.denominators))

    @torch.no_grad()
    def push(self, features: torch.Tensor, classes: torch.Tensor) -> None:
        """Enqueue normalised ``features`` (N, p) and their ``classes`` over the oldest entries."""
        features, classes = features.detach().float()[-self.size :], classes[-self.size :]
        slots = (int(self.pointer) + torch.arange(len(features), device=features.device)) % self.size
        filled = int(self.filled)
        leaving = slots[slots < filled]
        if len(leaving):
            self.denominators[:filled] -= self._terms(leaving, filled).sum(1)
        self.features[slots], self.classes[slots] = features, classes
        filled = min(self.size, filled + len(features))
        terms = self._terms(slots, filled)
        self.denominators[:filled] += terms.sum(1)
        own = self.features[slots].double().pow(2).sum(1) / self.temperature - 1 / self.temperature
        self.denominators[slots] = terms.sum(0) - own.exp()  # a new entry's sum over every other entry
        self.pointer.fill_((int(self.pointer) + len(features)) % self.size)
        self.filled.fill_(filled)

    def _terms(self, columns: torch.Tensor, filled: int) -> torch.Tensor:
        """``exp(s - 1/T)`` of the pairs (entry i < filled, entry ``columns[c]``), in float64."""
        logits = self.features[:filled].double() @ self.features[columns].double().t() / self.temperature
        return torch.exp(logits - 1 / self.temperature)


def contrastive_views(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten ``embeddings`` (M, B, C, d) of M modalities to normalised (M * B * C, d) features and their
    classes: label c of modality m is class ``c + C * (2 m + absent)`` (the official label x polarity x
    modality classes)."""
    modalities, _, num_labels, dim = embeddings.shape
    label = torch.arange(num_labels, device=labels.device)
    absent = (labels < 0.5).long()
    classes = torch.stack([label + num_labels * (2 * m + absent) for m in range(modalities)])
    return F.normalize(embeddings.float().reshape(-1, dim), dim=-1), classes.reshape(-1)


def queued_supervised_contrastive(
    features: torch.Tensor, classes: torch.Tensor, temperature: float, queued: tuple[torch.Tensor, ...] | None = None
) -> torch.Tensor:
    """The official ``SupConLoss`` over the batch's normalised ``features`` and the ``queued`` entries
    (:meth:`ContrastiveQueue.contents`): every batch row and every queued row is an anchor, its positives
    the other rows of its class, its denominator every other row; the mean over all anchors (one without
    positives adds 0). Gradients reach the batch rows only (the queue is detached, as officially).

    Positive sums go through per-class sums of the features (``f_i . sum_j f_j``), the queued anchors'
    denominators over the other queued rows come with the queue, so the cost is O(batch x queue)."""
    if queued is None:
        queued = (features.new_zeros(0, features.shape[1]), classes.new_zeros(0), features.new_zeros(0))
    queue, queue_classes, queue_denominators = queued
    queue = queue.to(features.dtype)
    shift = 1 / temperature
    self_pair = torch.eye(len(features), dtype=torch.bool, device=features.device)
    within = torch.exp(features @ features.t() / temperature - shift).masked_fill(self_pair, 0)
    cross = torch.exp(features @ queue.t() / temperature - shift)  # (N, K)
    denominators = torch.cat([within.sum(1) + cross.sum(1), queue_denominators.to(cross.dtype) + cross.sum(0)])
    rows, row_classes = torch.cat([features, queue]), torch.cat([classes, queue_classes])
    one_hot = F.one_hot(row_classes, int(row_classes.max()) + 1).to(features.dtype)
    class_sums, class_counts = one_hot.t() @ rows, one_hot.sum(0)
    positives = ((class_sums[row_classes] - rows) * rows).sum(1) / temperature
    counts = class_counts[row_classes] - 1
    per_anchor = (positives - counts * (torch.log(denominators) + shift)) / counts.clamp(min=1)
    return -per_anchor.mean()


def label_wise_contrastive(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    queued: tuple[torch.Tensor, ...] | None = None,
    temperature: float = 0.07,
) -> torch.Tensor:
    """CARAT's contrastive loss on ``embeddings`` (M, B, C, d) of M modalities, classes label x polarity x
    modality (:func:`contrastive_views`), with the ``queued`` entries if given."""
    features, classes = contrastive_views(embeddings, labels)
    return queued_supervised_contrastive(features, classes, temperature, queued)


def same_label_shuffle(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A permutation of the batch that maps every utterance to one with an identical label vector."""
    order = torch.arange(len(labels), device=labels.device)
    permutation = order.clone()
    groups = torch.unique(labels, dim=0, return_inverse=True)[1]
    for group in groups.unique():
        members = order[groups == group]
        permutation[members] = members[torch.randperm(len(members), generator=generator).to(labels.device)]
    return permutation


def label_wise_shuffle(
    stacked: torch.Tensor, labels: torch.Tensor, mode: str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official sample + modality shuffle of ``stacked`` (B, M, C, d): slot (b, m) takes label c's
    embedding from utterance ``s[b, m, c]`` and modality ``o[b, m, c]``; returns it and its targets
    (B, M, C), label c of utterance s. ``label_wise`` (official): s is a random permutation of the batch
    per label and modality slot, o one of the modalities per label and utterance; ``same_label``: s is a
    permutation within identical label vectors per modality slot, the same for every label."""
    batch_size, modalities, num_labels, _ = stacked.shape
    device = stacked.device

    def permutations(*shape: int) -> torch.Tensor:  # random permutations of range(shape[-1])
        return torch.rand(*shape, generator=generator).argsort(-1).to(device)

    if mode == "label_wise":
        donors = permutations(num_labels, modalities, batch_size).permute(2, 1, 0)
    else:
        donors = torch.stack([same_label_shuffle(labels, generator) for _ in range(modalities)], 1)
        donors = donors[:, :, None].expand(-1, -1, num_labels)
    sources = permutations(num_labels, batch_size, modalities).permute(1, 2, 0)
    label = torch.arange(num_labels, device=device).expand(batch_size, modalities, -1)
    return stacked[donors, sources, label], labels[donors, label]


def combined_logit(aggregation: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """The logit of ``(mean_m sigmoid(aggregation[:, m]) + sigmoid(pooled)) / 2`` ((B, M, C), (B, C)),
    computed in log space so that confident scores keep finite, ordered logits."""
    modalities = aggregation.shape[1]
    weights = torch.tensor([math.log(2 * modalities)] * modalities + [math.log(2)], device=pooled.device)
    scores = torch.cat([aggregation, pooled[:, None]], 1)  # (B, M + 1, C)
    shift = weights[None, :, None].to(scores.dtype)
    present = torch.logsumexp(F.logsigmoid(scores) - shift, 1)
    absent = torch.logsumexp(F.logsigmoid(-scores) - shift, 1)
    return present - absent


class CARAT(nn.Module):
    def __init__(self, config: CARATConfig, num_classes: int):
        super().__init__()
        dims = modality_dims(config)
        d, p = config.d_model, config.proj_size
        self.config = config
        self.modalities = list(dims)
        self.encoders = nn.ModuleDict({m: ModalityEncoder(dim, config) for m, dim in dims.items()})
        self.label_attention = nn.ModuleDict({m: LabelAttention(num_classes, d) for m in dims})
        self.projections = nn.ModuleDict({m: xavier_mlp([d, d // 2], p) for m in dims})
        self.decoders = nn.ModuleDict({m: xavier_mlp([p, d // 2], d) for m in dims})
        self.fusions = nn.ModuleDict({m: xavier_mlp([len(dims) * d], d) for m in dims})
        self.aggregation = xavier_mlp([num_classes * d, d], num_classes)
        self.classifiers = nn.ParameterDict({m: nn.Parameter(torch.empty(num_classes, d)) for m in dims})
        for weight in self.classifiers.values():
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.prototypes = nn.ModuleDict({m: LabelPrototypes(num_classes, p, config.prototype_momentum) for m in dims})
        self.queue = ContrastiveQueue(config.queue_size, p, config.temperature)

    def label_representations(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``{m: (B, C, d)}``: every label's attention-pooled encoding of modality m."""
        representations = {}
        for modality in self.modalities:
            sequence, padding = padded_features(batch, modality)
            states = self.encoders[modality](sequence, padding)
            representations[modality] = self.label_attention[modality](states, padding)
        return representations

    def fuse(self, modality: str, slots: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fusions[modality](torch.cat([slots[m] for m in self.modalities], -1))

    def pooled_score(self, embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each modality's classifier on its (B, C, d) embeddings, max-pooled over the modalities: (B, C)."""
        scores = [torch.einsum("bcd,cd->bc", embeddings[m], self.classifiers[m]) for m in self.modalities]
        return torch.stack(scores, -1).amax(-1)

    def forward(self, batch: Batch) -> ModelOutput:
        lsr = self.label_representations(batch)
        latent = {m: self.projections[m](lsr[m]) for m in self.modalities}
        recon = {m: self.decoders[m](latent[m]) for m in self.modalities}
        aug, beta = {}, {}
        for m in self.modalities:
            completed = self.prototypes[m].lookup(F.normalize(latent[m], dim=-1), hard=not self.training)
            aug[m] = self.fuse(m, {**recon, m: self.decoders[m](completed)})
        for m in self.modalities:
            beta[m] = self.fuse(m, aug)
        stacked = torch.stack([beta[m] for m in self.modalities], 1)  # (B, M, C, d)
        aggregation = self.aggregation(stacked.flatten(2))  # (B, M, C)
        pooled = self.pooled_score(beta)
        if not self.training:
            return ModelOutput(combined_logit(aggregation, pooled))
        views = {"lsr": lsr, "latent": latent, "recon": recon, "aug": aug, "beta": beta}
        aux = self.config.aux_weight * self.losses(views, stacked, aggregation, batch.labels)
        return ModelOutput(pooled, aux_loss=aux)

    def losses(self, views: dict, stacked: torch.Tensor, aggregation: torch.Tensor, labels: torch.Tensor):
        """Every official loss but the BCE of the max-pooled beta score (the trainer's task loss); then the
        prototypes and the queue take this batch."""
        c = self.config
        labels = labels.float()
        bce = F.binary_cross_entropy_with_logits
        per_modality = labels[:, None].expand_as(aggregation)
        shuffled, shuffled_labels = label_wise_shuffle(stacked, labels, c.shuffle)
        loss = c.lsr_clf_weight * bce(self.pooled_score(views["lsr"]), labels)
        loss = loss + c.aug_clf_weight * bce(self.pooled_score(views["aug"]), labels)
        loss = loss + c.aggregation_weight * bce(aggregation, per_modality)
        loss = loss + c.shuffle_weight * bce(self.aggregation(shuffled.flatten(2)), shuffled_labels)
        lsr = views["lsr"]
        for weight, name in (
            (c.reconstruction_weight, "recon"),
            (c.aug_mse_weight, "aug"),
            (c.beta_mse_weight, "beta"),
        ):
            loss = loss + weight * sum(F.mse_loss(views[name][m], lsr[m]) for m in self.modalities)
        return loss + c.contrastive_weight * self.contrastive(views, labels)

    def contrastive(self, views: dict, labels: torch.Tensor) -> torch.Tensor:
        """The contrastive loss on the latents of lsr, aug and beta with the queue; then the queue takes
        them and the prototypes this batch's lsr latents."""
        latents = torch.stack(
            [
                torch.cat(
                    [views["latent"][m], self.projections[m](views["aug"][m]), self.projections[m](views["beta"][m])]
                )
                for m in self.modalities
            ]
        )  # (M, 3B, C, p)
        tripled = labels.repeat(3, 1)
        with torch.autocast(latents.device.type, enabled=False):  # fp32 also under bf16: T = 0.07 is sharp
            loss = label_wise_contrastive(latents, tripled, self.queue.contents(), self.config.temperature)
        self.queue.push(*contrastive_views(latents.detach(), tripled))
        for m in self.modalities:
            self.prototypes[m].update(F.normalize(views["latent"][m].detach().float(), dim=-1), labels)
        return loss


CARAT_PAPER = (
    'Peng et al., AAAI 2024, "CARAT: Contrastive Feature Reconstruction and Aggregation for Multi-Modal '
    'Multi-Label Emotion Recognition"; official code github.com/chengzju/CARAT'
)
_MODEL, _MAIN, _SH = "official models/models.py", "official main.py", "official train.sh"
_JSON = "official models/configs/audio_config.json, visual_config.json"


def _loss_weight(setting: str, official: float, flag: str, key: str) -> Setting:
    return Setting(setting, official, f"{_SH} (--{flag})", f"model.{key}")


FIDELITY = FidelityTable(
    "carat",
    CARAT_PAPER,
    (
        Setting("modalities", "tav", f"{_MODEL} (text, visual, audio branches)", "model.modalities"),
        Setting(
            "text features",
            "300-d word vectors of the CMU-MOSEI release (word-aligned)",
            f"{_MAIN} (--text_dim 300), {_SH} (--aligned)",
            "model.text_model",
            paper="albert-base-v2",
            why="GloVe/COVAREP/FACET do not ship as packages: every feature model reads the same substitute "
            "features (README, two-stage features); IEMOCAP is not in the paper, which uses MOSEI and M3ED",
        ),
        Setting("encoder width (hidden_size)", 256, f"{_JSON}, {_MAIN} (--hidden_size)", "model.d_model"),
        Setting(
            "encoder layers per modality",
            3,
            f"{_SH} (--{{text,visual,audio}}_num_hidden_layers 3)",
            "model.temporal_layers",
        ),
        Setting("encoder heads", 8, f"{_JSON} (num_attention_heads)", "model.temporal_heads"),
        Setting("encoder FFN (intermediate_size)", 256, f"{_JSON}", "model.temporal_ffn"),
        Setting("encoder dropout (hidden, attention)", 0.3, f"{_JSON}", "model.dropout"),
        Setting("latent (projection) size", 64, f"{_MAIN} (--proj_size)", "model.proj_size"),
        Setting("contrastive queue", 8192, f"{_MAIN} (--moco_queue)", "model.queue_size"),
        Setting("contrastive temperature", 0.07, "official models/losses.py (SupConLoss)", "model.temperature"),
        Setting("prototype momentum", 0.99, f"{_MAIN} (--proto_m)", "model.prototype_momentum"),
        Setting(
            "shuffle donors",
            "label_wise",
            f"{_MODEL} (a random utterance and modality per label and slot, targets follow the donor)",
            "model.shuffle",
            improved=PerDataset({"iemocap": "same_label", "mosei": "label_wise"}),
            why="improved (IEMOCAP, opt-in, not measured on the full corpus): on one-hot labels the label-wise "
            "recomposition mostly builds label vectors with no or several emotions, which the corpus never has; "
            "same_label draws donors among utterances with the same label vector, so targets stay one-hot",
        ),
        Setting("scale of all auxiliary losses", 1.0, f"{_MODEL} (every term added unscaled)", "model.aux_weight"),
        _loss_weight("BCE weight of the lsr scores", 0.01, "lsr_clf_weight 0.01", "lsr_clf_weight"),
        _loss_weight("BCE weight of the aug scores", 0.1, "aug_clf_weight 0.1", "aug_clf_weight"),
        _loss_weight("BCE weight of the aggregation", 1.0, "total_aug_clf_weight 1.0", "aggregation_weight"),
        _loss_weight("BCE weight of the shuffled aggregation", 0.1, "shuffle_aug_clf_weight 0.1", "shuffle_weight"),
        _loss_weight("contrastive weight", 1.0, "cl_weight 1.0", "contrastive_weight"),
        _loss_weight("MSE weight of recon", 1.0, "recon_mse_weight 1.0", "reconstruction_weight"),
        _loss_weight("MSE weight of aug", 1.0, "aug_mse_weight 1.0", "aug_mse_weight"),
        _loss_weight("MSE weight of beta", 0.0, "beta_mse_weight 0.0", "beta_mse_weight"),
        Setting("batch size", 64, f"{_MAIN} (--batch_size default; train.sh sets none)", "data.batch_size"),
        Setting("learning rate", 5e-5, f"{_SH} (--lr 5e-5)", "train.lr"),
        Setting("epochs", 20, f"{_SH} (--epochs=20)", "train.epochs"),
        Setting(
            "early stopping",
            0,
            f"{_MAIN} (all epochs run, the best valid epoch is tested)",
            "train.early_stop_patience",
        ),
        Setting("gradient clipping (max norm)", 1.0, f"{_MAIN} (clip_grad_norm_ 1.0)", "train.grad_clip"),
        Setting(
            "learning-rate schedule",
            "warmup_linear (10% warmup, then linear to 0)",
            f"{_MAIN} (BertAdam, --warmup_proportion 0.1)",
            "train.scheduler",
            paper="cosine",
            why="the trainer's schedules are none and cosine; cosine also anneals to 0 over the epochs (no warmup)",
        ),
        Setting(
            "weight decay",
            "0.01, decoupled (BertAdam), weights only",
            f"{_MAIN} (prep_optimizer)",
            "train.weight_decay",
            paper=0.0,
            why="the trainer's Adam weight decay is coupled L2 on every parameter, a different regulariser; "
            "the official decoupled decay shrinks weights by lr * 0.01 = 5e-7 per step, negligible",
        ),
        bf16_setting(
            "precision",
            False,
            f"{_MAIN} (fp32)",
            "improved: bf16 autocast on CUDA (faster); the contrastive loss and the queue stay fp32",
        ),
        Setting(
            "input normalisation, positions",
            "LayerNorm on the input features; learned positions (500)",
            f"{_MODEL} (Normalize), official models/module_encoder.py (TfEmbeddings)",
            paper="LayerNorm on the input features; sinusoidal positions",
            why="our unaligned sequences have no fixed maximum length (100 ms audio steps of a long MOSEI "
            "segment exceed 500)",
        ),
        Setting(
            "encoder layers",
            "post-LN BERT layers, GELU, N(0, 0.02) init",
            "official models/module_encoder.py (TfLayer), models/until_module.py (init_weights)",
        ),
        Setting(
            "alignment",
            "word-aligned MOSEI (--aligned); CTC alignment modules when unaligned",
            f"{_SH}, {_MODEL}",
            paper="unaligned sequences, padding masked, no CTC modules",
            why="the two-stage features are unaligned per modality (README); every feature model reads them so",
        ),
        Setting(
            "label-specific representations",
            "per-label attention scores (MLAttention)",
            "official models/until_module.py",
        ),
        Setting(
            "reconstruction-based fusion",
            "aug[m] = fuse[m](own prototype padding, others' recon); beta[m] = fuse[m](all aug)",
            _MODEL,
        ),
        Setting(
            "prototypes",
            "per label and modality present/absent momentum prototypes; soft in training, hard at inference",
            _MODEL,
        ),
        Setting(
            "contrastive classes and anchors",
            "label x polarity x modality over the latents of lsr, aug and beta; batch and queue rows all anchors",
            f"{_MODEL} (get_cl_labels), official models/losses.py",
        ),
        Setting(
            "queue before it fills",
            "8192 random vectors (normalised over the queue axis, norm about 0.09) with random float labels",
            f"{_MODEL} (register_buffer queue)",
            paper="only the entries pushed so far (the first step: the batch alone)",
            why="the random entries never match a class: they are near-orthogonal extra negatives and zero-loss "
            "anchors that dilute the mean until overwritten (about 2.4 batches of 64 utterances); ours uses "
            "only real past embeddings",
        ),
        Setting("shuffle path", "its own BCE only, never the prediction", _MODEL),
        Setting(
            "prediction",
            "(mean over modalities of sigmoid(aggregation) + sigmoid(max-pooled beta score)) / 2",
            _MODEL,
            paper="the same; its logit is the output",
        ),
        Setting(
            "task loss on the max-pooled beta score",
            "BCE, unweighted",
            _MODEL,
            paper="BCE with pos_weight = neg/pos per class (the trainer's task loss); the other BCEs unweighted",
            why="the shared trainer weights every model's task loss so",
        ),
        Setting(
            "decision thresholds, model selection",
            "threshold 0.25 (--binary_threshold); best valid micro-F1",
            f"{_SH}, {_MAIN}",
            paper="per-class thresholds tuned on valid; best mean valid F1",
            why="the shared protocol of every model (README, metrics)",
        ),
    ),
)


@register_model("carat", options=CARATConfig, inputs="features", tasks=("emotion",), fidelity=FIDELITY)
def build_carat(config: CARATConfig, class_names: list[str]) -> CARAT:
    return CARAT(config, len(class_names))
