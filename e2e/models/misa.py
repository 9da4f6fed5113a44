"""MISA (Hazarika et al., ACM MM 2020, "MISA: Modality-Invariant and -Specific Representations for
Multimodal Sentiment Analysis"), for emotion classification on two-stage features, following the
official code (github.com/declare-lab/MISA, src/models.py and src/solver.py).

Per modality an utterance vector from a two-layer *stacked* bidirectional LSTM (sLSTM: a LayerNorm
between the layers, the final states of both layers concatenated; hidden size = feature size), mapped to
``d_model`` by Linear -> ReLU -> LayerNorm (``u_m``). One **shared** encoder for all modalities gives the
modality-invariant ``s_m``, one **private** encoder per modality the modality-specific ``p_m`` (both
Linear + Sigmoid). The official text path fine-tunes BERT and mean-pools its last layer; our text
features are frozen token states, so text goes through the same sLSTM (the official ``use_bert=False``
path). Auxiliary losses, as the official solver weights them:

* similarity (``similarity_weight``): CMD (5 moments) between the shared
  representations of every modality pair, averaged over the pairs;
* difference (``difference_weight``): soft orthogonality between ``s_m`` and ``p_m`` and between
  every pair of privates, summed over the pairs;
* reconstruction (``reconstruction_weight``): a linear decoder per modality maps ``s_m + p_m``
  back to ``u_m``, MSE averaged over the modalities.

Fusion: a one-layer transformer over the 2M representations as tokens (privates, then shareds), the
tokens concatenated, then Linear (2M*d -> M*d) -> ReLU -> Dropout -> Linear. With one modality the
pairwise similarity loss is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
from torch import nn

from e2e.config import fraction, non_negative, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.fidelity import FidelityTable, PerDataset, Setting, bf16_setting
from e2e.models.layers.losses import cmd, difference_loss, sample_normalised_difference_loss
from e2e.models.layers.sequence import FeatureModelConfig, SequenceModelConfig, mlp
from e2e.models.layers.shared_private import SharedPrivate
from e2e.models.registry import register_model

FUSION_DROPOUT = 0.1  # the official nn.TransformerEncoderLayer keeps torch's default dropout
CMD_MOMENTS = 5


@dataclass
class MISAConfig(SequenceModelConfig):
    """MISA's options, defaults from the official src/config.py. The shared ones mean:

    * ``d_model``: the official ``hidden_size``: width of ``u_m`` and of the shared and private vectors;
    * ``temporal_layers``: layers of each modality's sLSTM (every layer's final states are read);
    * ``temporal_heads``, ``temporal_ffn``: heads and FFN width of the one-layer fusion transformer;
    * ``dropout``: the fusion head's dropout (the fusion transformer keeps 0.1, as the official one).
    """

    name: str = "misa"
    d_model: int = positive(128)
    temporal_layers: int = positive(2)
    temporal_heads: int = positive(2)
    temporal_ffn: int = positive(2048)
    dropout: float = fraction(0.5)
    aux_weight: float = non_negative(1.0)  # scales the weighted sum of the three auxiliary losses
    similarity_weight: float = non_negative(1.0)  # official sim_weight: CMD between the shared vectors
    difference_weight: float = non_negative(0.3)  # official diff_weight: soft orthogonality
    reconstruction_weight: float = non_negative(1.0)  # official recon_weight: MSE of decoded s_m + p_m to u_m
    # sample: the official DiffLoss (rows normalised); feature: unit columns, scale-free and exactly 0
    # when the feature columns are orthogonal (see e2e.models.layers.losses)
    difference_normalisation: Literal["sample", "feature"] = "sample"


class StackedLSTM(nn.Module):
    """MISA's sLSTM: ``layers`` bidirectional LSTMs of hidden size ``in_features`` over the valid steps,
    a LayerNorm on each layer's outputs before the next layer; the utterance vector is every layer's final
    forward and backward states concatenated (``out_features = 2 * layers * in_features``)."""

    def __init__(self, in_features: int, config: FeatureModelConfig):
        super().__init__()
        hidden, layers = in_features, config.temporal_layers
        self.lstms = nn.ModuleList(
            nn.LSTM(in_features if i == 0 else 2 * hidden, hidden, batch_first=True, bidirectional=True)
            for i in range(layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(2 * hidden) for _ in range(layers - 1))
        self.out_features = 2 * layers * hidden
        for lstm in self.lstms:  # the official solver initialises every weight_hh orthogonally
            for name, parameter in lstm.named_parameters():
                if name.startswith("weight_hh"):
                    nn.init.orthogonal_(parameter)

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        lengths = (~padding).sum(1).cpu()
        states = nn.utils.rnn.pack_padded_sequence(sequence, lengths, batch_first=True, enforce_sorted=False)
        finals = []
        for i, lstm in enumerate(self.lstms):
            if i > 0:  # LayerNorm acts per step, so normalising the packed data equals normalising padded steps
                states = states._replace(data=self.norms[i - 1](states.data))
            states, (hidden, _) = lstm(states)
            finals.extend([hidden[0], hidden[1]])
        return torch.cat(finals, dim=1)


class MISA(nn.Module):
    def __init__(self, config: MISAConfig, num_classes: int):
        super().__init__()
        d, self.config = config.d_model, config
        self.representations = SharedPrivate(config, StackedLSTM, project=True)
        modalities = list(self.representations.encoders)
        self.decoders = nn.ModuleDict({m: nn.Linear(d, d) for m in modalities})
        layer = nn.TransformerEncoderLayer(
            d, config.temporal_heads, config.temporal_ffn, FUSION_DROPOUT, batch_first=True
        )
        self.fusion = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = mlp(2 * len(modalities) * d, len(modalities) * d, num_classes, config.dropout)
        self.difference = (
            sample_normalised_difference_loss if config.difference_normalisation == "sample" else difference_loss
        )

    def forward(self, batch: Batch) -> ModelOutput:
        utterances, shared, private = self.representations(batch)
        tokens = torch.stack([*private.values(), *shared.values()], dim=1)
        logits = self.head(self.fusion(tokens).flatten(1))
        aux = self.config.aux_weight * self.losses(utterances, shared, private) if self.training else None
        return ModelOutput(logits, aux_loss=aux)

    def losses(self, utterances: dict, shared: dict, private: dict) -> torch.Tensor:
        """The official total minus the task loss: diff_weight * difference + sim_weight * similarity +
        recon_weight * reconstruction (src/solver.py)."""
        modalities = list(shared)
        pairs = list(combinations(modalities, 2))
        zero = next(iter(shared.values())).new_zeros(())
        similarity = sum((cmd(shared[a], shared[b], CMD_MOMENTS) for a, b in pairs), zero) / max(len(pairs), 1)
        difference = sum(self.difference(private[m], shared[m]) for m in modalities)
        difference = difference + sum((self.difference(private[a], private[b]) for a, b in pairs), zero)
        reconstruction = sum(
            nn.functional.mse_loss(self.decoders[m](shared[m] + private[m]), utterances[m]) for m in modalities
        ) / len(modalities)
        return (
            self.config.similarity_weight * similarity
            + self.config.difference_weight * difference
            + self.config.reconstruction_weight * reconstruction
        )


MISA_PAPER = (
    "Hazarika, Zimmermann and Poria, MISA: Modality-Invariant and -Specific Representations for Multimodal "
    "Sentiment Analysis, ACM MM 2020; official code github.com/declare-lab/MISA (files below are in that "
    "repository)"
)
NO_IEMOCAP = "the paper has no IEMOCAP setting (MOSI, MOSEI, UR-FUNNY only); IEMOCAP takes MOSEI's"

FIDELITY = FidelityTable(
    "misa",
    MISA_PAPER,
    (
        Setting("modalities", "tav", "official src/models.py (text, visual, acoustic)", "model.modalities"),
        Setting(
            "text encoder",
            "bert-base-uncased, fine-tuned (MOSEI: layers 0-8 frozen)",
            "official src/models.py, src/solver.py (build)",
            "model.text_model",
            paper="albert-base-v2",
            why="every feature model reads the same cached, frozen token states of the folder's text model "
            "(dataset.yaml); a cached feature cannot be fine-tuned",
        ),
        Setting(
            "text utterance vector",
            "masked mean of BERT's last layer -> project_t",
            "official src/models.py (alignment, use_bert=True)",
            paper="sLSTM over the frozen token states -> project_t",
            why="a mean of frozen states would leave text without a trainable encoder; the sLSTM is the "
            "official text path without BERT (use_bert=False)",
        ),
        Setting(
            "audio/visual utterance vector",
            "2 bidirectional LSTMs, hidden = feature size, LayerNorm between, both layers' final states",
            "official src/models.py (extract_features)",
            paper="same, each modality over its own valid steps",
            why="the official features are word-aligned and share the text lengths; ours are unaligned",
        ),
        Setting("sLSTM layers", 2, "official src/models.py (rnn1, rnn2)", "model.temporal_layers"),
        Setting("LSTM recurrent weight init", "orthogonal", "official src/solver.py (build)", paper="orthogonal"),
        Setting(
            "projection to the common space",
            "Linear -> ReLU -> LayerNorm",
            "official src/models.py (project_t/v/a; --activation relu in src/config.py)",
            paper="Linear -> ReLU -> LayerNorm",
        ),
        Setting(
            "shared / private encoders",
            "Linear -> Sigmoid (one shared, one private per modality)",
            "official src/models.py (shared, private_t/v/a)",
            paper="Linear -> Sigmoid (one shared, one private per modality)",
        ),
        Setting("hidden size", 128, "official src/config.py (--hidden_size)", "model.d_model"),
        Setting("fusion transformer heads", 2, "official src/models.py (nhead=2)", "model.temporal_heads"),
        Setting("fusion transformer FFN", 2048, "official src/models.py (torch default)", "model.temporal_ffn"),
        Setting("fusion transformer dropout", 0.1, "official src/models.py (torch default)", paper=FUSION_DROPOUT),
        Setting(
            "fusion",
            "1-layer transformer over [p_t, p_v, p_a, s_t, s_v, s_a], concatenated, "
            "Linear(6d, 3d) -> Dropout -> ReLU -> Linear",
            "official src/models.py (alignment, fusion)",
            paper="same (ReLU before Dropout: the same function)",
        ),
        Setting("fusion head dropout", 0.5, "official src/config.py (--dropout)", "model.dropout"),
        Setting(
            "similarity loss",
            "CMD, 5 moments, mean over the 3 pairs",
            "official src/solver.py (get_cmd_loss)",
            paper="CMD, 5 moments, mean over the pairs",
        ),
        Setting(
            "difference loss",
            "sum over (p_m, s_m) and private pairs of DiffLoss",
            "official src/solver.py (get_diff_loss)",
            paper="same",
        ),
        Setting(
            "difference normalisation",
            "sample",
            "official src/utils/functions.py (DiffLoss: rows divided by their detached L2 norm)",
            "model.difference_normalisation",
            improved="feature",
            why="improved: unit feature columns make the loss scale-free, independent of the batch size and "
            "exactly 0 for orthogonal subspaces; the official detached row norms make its gradient shrink the "
            "centred vectors, which at a high lr collapses them to constants (tests/e2e/models/test_misa.py)",
        ),
        Setting(
            "reconstruction loss",
            "MSE of recon_m(s_m + p_m) to the projected u_m, mean over modalities",
            "official src/solver.py (get_recon_loss), src/models.py (reconstruct)",
            paper="same",
        ),
        Setting("similarity weight", 1.0, "official src/config.py (--sim_weight)", "model.similarity_weight"),
        Setting("difference weight", 0.3, "official src/config.py (--diff_weight)", "model.difference_weight"),
        Setting("reconstruction weight", 1.0, "official src/config.py (--recon_weight)", "model.reconstruction_weight"),
        Setting(
            "scale of the auxiliary sum",
            1.0,
            "official src/solver.py (the weighted terms are added to the task loss as they are)",
            "model.aux_weight",
        ),
        Setting(
            "shared-private discriminator",
            "built, weight 0",
            "official src/config.py (--sp_weight 0.0)",
            paper="absent",
            why="its loss has weight 0, so it never changes the model",
        ),
        Setting(
            "task loss",
            "MSE (MOSI/MOSEI sentiment), cross-entropy (UR-FUNNY)",
            "official src/solver.py (train)",
            paper="the shared trainer's: BCE with pos_weight (emotion), L1 (sentiment, vad)",
            why="one loss per task for all models, so their numbers compare",
        ),
        Setting(
            "batch size",
            PerDataset({"iemocap": 16, "mosei": 16}),
            "official src/config.py (get_config: mosi 64, mosei 16, ur_funny 32)",
            "data.batch_size",
            why=NO_IEMOCAP,
        ),
        Setting("optimizer", "Adam", "official src/config.py (--optimizer)", paper="Adam"),
        Setting("learning rate", 1e-4, "official src/config.py (--learning_rate)", "train.lr"),
        Setting("weight decay", 0.0, "official src/solver.py (Adam default)", "train.weight_decay"),
        Setting(
            "gradient clipping",
            "1.0 per gradient value",
            "official src/solver.py (clip_grad_value_, --clip 1.0)",
            "train.grad_clip",
            paper=1.0,
            why="the official code clips each gradient value to [-1, 1]; the shared trainer clips the "
            "global norm to 1.0, which also bounds every value by 1",
        ),
        Setting(
            "lr schedule",
            "none",
            "official src/solver.py (ExponentialLR is stepped only when patience runs out, and one trial "
            "then stops training)",
            "train.scheduler",
        ),
        Setting("epochs", 500, "official src/config.py (--n_epoch)", "train.epochs"),
        Setting(
            "early-stop patience",
            6,
            "official src/config.py (--patience), src/solver.py (stops at the 7th epoch without improvement)",
            "train.early_stop_patience",
            paper=7,
            why="our patience 7 stops at the same epoch; the official code selects on valid loss, the "
            "shared trainer on mean valid F1 (sentiment: MAE, vad: CCC) for every model",
        ),
        Setting(
            "seed",
            336,
            "official src/train.py",
            "train.seed",
            paper=0,
            why="runs use the benchmark's seeds (0, 1, 2) for every model",
        ),
        bf16_setting(
            "bf16 autocast on CUDA",
            False,
            "official code (fp32 throughout)",
            "improved: about half the activation memory and faster on GPUs with bf16",
        ),
    ),
)


@register_model("misa", options=MISAConfig, inputs="features", tasks=("emotion", "sentiment", "vad"), fidelity=FIDELITY)
def build_misa(config: MISAConfig, class_names: list[str]) -> MISA:
    return MISA(config, len(class_names))
