"""What the MESM paper's two late-fusion baselines, LF-LSTM and LF-TRANS, share (Dai et al., NAACL 2021,
official ``src/models/baselines/lf_rnn.py`` and ``lf_transformer.py``): one sequence encoder and one
classifier per modality, and the modality logits fused by learned weights; also their fidelity rows
that are not about the encoders (input features, fusion, the README's training command).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from e2e.data.batch import Batch, ModelOutput
from e2e.models.fidelity import Setting
from e2e.models.layers.encoders import LateFusion
from e2e.models.layers.end_to_end import mesm_repository_settings
from e2e.models.layers.sequence import padded_features

FusionInit = Literal["torch", "average"]  # torch: nn.Linear's default (official); average: every weight 1/M


def halving_head(in_features: int, num_classes: int) -> nn.Sequential:
    """The official per-modality classifier: ``Linear(in -> in // 2) -> ReLU -> Linear(-> classes)``, no dropout."""
    return nn.Sequential(nn.Linear(in_features, in_features // 2), nn.ReLU(), nn.Linear(in_features // 2, num_classes))


def fusion_layer(num_modalities: int, init: FusionInit) -> LateFusion:
    """The learned ``Linear(M -> 1, bias=False)`` over the stacked modality logits.

    ``torch`` keeps ``nn.Linear``'s default initialisation, U(-1/sqrt(M), 1/sqrt(M)), as the official
    baselines do; ``average`` starts every weight at 1/M (what :class:`LateFusion` does for FE2E)."""
    fusion = LateFusion(num_modalities)
    if init == "torch":
        fusion.weights.reset_parameters()
    return fusion


class ModalityLateFusion(nn.Module):
    """``encoders[m]`` maps modality ``m``'s padded features and padding mask to one vector of
    ``encoders[m].out_features`` values; its head turns that into logits, and the logits of all
    modalities are fused by learned weights. With one modality its logits are the output (the
    official code skips the fusion layer then). ``extras["modality_logits"]`` holds each modality's."""

    def __init__(self, encoders: dict[str, nn.Module], num_classes: int, fusion_init: FusionInit):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict({m: halving_head(e.out_features, num_classes) for m, e in encoders.items()})
        self.fusion = fusion_layer(len(encoders), fusion_init) if len(encoders) > 1 else None

    def forward(self, batch: Batch) -> ModelOutput:
        logits = {m: self.heads[m](encoder(*padded_features(batch, m))) for m, encoder in self.encoders.items()}
        stacked = torch.stack(list(logits.values()), dim=-1)
        fused = stacked[..., 0] if self.fusion is None else self.fusion(stacked)
        return ModelOutput(fused, extras={"modality_logits": logits})


LATE_FUSION_PAPER = (
    "Dai et al., Multimodal End-to-End Sparse Model for Emotion Recognition, NAACL 2021 (its baselines); "
    "official code github.com/wenliangdai/Multimodal-End2end-Sparse (files below are in that repository)"
)


def late_fusion_settings(model: str, command: str) -> tuple[Setting, ...]:
    """The rows LF-LSTM and LF-TRANS share; ``model`` is the official file, ``command`` the README's."""
    readme = f"official README, {command} command"
    same_for_mosei = "the README gives this command for IEMOCAP only; MOSEI uses the same"
    return (
        Setting("modalities", "tav", f"{readme} (-mod=tav)", "model.modalities"),
        Setting(
            "input features",
            "GloVe per word (300), COVAREP per frame (142 + 2 repeated columns), 35 action units per frame",
            "official src/datasets.py (HCF loaders), src/cli.py (--hfc-sizes 300 144 35)",
            paper="frozen text-encoder states, 28 librosa descriptors per 100 ms, 274 O-Net values per face crop",
            why="the official feature files do not ship and the extractors are not packages (README, two-stage "
            "features); every dimension is standardised with train statistics",
        ),
        Setting(
            "text encoder of the text features",
            "GloVe (no encoder)",
            "official src/datasets.py (IEMOCAP_HCF_FEATURES text)",
            "model.text_model",
            paper="albert-base-v2",
            why="GloVe is not a package; MESM's own text encoder, frozen, stands in",
        ),
        Setting(
            "text length (tokens)",
            "every word",
            "official src/datasets.py (HCF text, padded per batch)",
            "model.text_max_length",
            paper=100,
            why="the features are cached with MESM's tokenizer setting (--text-max-len=100)",
        ),
        Setting(
            "visual feature rate (ms)",
            "every video frame (30 fps)",
            "official src/datasets.py (IEMOCAP_baseline.sample_by_interval(full=True))",
            "data.img_interval_ms",
            paper=500,
            why="the visual features come from the cached face crops the end-to-end models see (one per 500 ms)",
        ),
        Setting(
            "per-modality classifier",
            "Linear(n -> n/2), ReLU, Linear(n/2 -> classes), no dropout",
            f"official {model}",
            why="same; n is the encoder's output width",
        ),
        Setting(
            "fusion",
            "learned Linear(M -> 1, no bias) over the M modality logits; none for one modality",
            f"official {model} (weighted_fusion)",
            why="same",
        ),
        Setting(
            "fusion weight initialisation",
            "torch",
            f"official {model} (nn.Linear default, U(+-1/sqrt(M)))",
            "model.fusion_init",
            improved="average",
            why="improved: start at the plain average of the modality logits, as FE2E does, never negative",
        ),
        Setting("batch size (utterances)", 32, f"{readme} (-bs=32)", "data.batch_size", why=same_for_mosei),
        Setting("learning rate", 5e-4, f"{readme} (-lr=5e-4)", "train.lr", why=same_for_mosei),
        Setting("weight decay", 0.0, "official src/cli.py (default)", "train.weight_decay"),
        Setting("lr schedule", "none", f"{readme} (no -sc)", "train.scheduler"),
        Setting(
            "gradient clipping (max norm)",
            2.0,
            f"{readme} (--clip=2; clip_grad_norm_ in emotiontrainer.py)",
            "train.grad_clip",
        ),
        Setting("epochs", 60, f"{readme} (-ep=60)", "train.epochs", why=same_for_mosei),
        Setting("early-stop patience (mean valid F1)", 8, f"{readme} (--early-stop=8)", "train.early_stop_patience"),
        *mesm_repository_settings(readme, "main.py", "improved: faster on GPUs with bf16"),
    )
