"""MESM (Dai et al., NAACL 2021): FE2E's network whose visual and acoustic CNNs are
:class:`~e2e.models.layers.sparse.SparseCNN`.

Each frame's sparse attention is queried by the text CLS of its own utterance, so text is required.
``extras`` adds, per frame modality, the sites every sparse block kept and its attention weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from e2e.config import UsageError, bounded, parse_modalities, positive
from e2e.models.fidelity import FidelityTable, Setting
from e2e.models.layers.cnn import INPUT_SHAPES
from e2e.models.layers.encoders import TextEncoder
from e2e.models.layers.end_to_end import (
    MESM_PAPER,
    MODALITY_KINDS,
    EndToEndConfig,
    EndToEndModel,
    encoder_name,
    end_to_end_settings,
)
from e2e.models.layers.hf_encoders import EncoderOptions, HFEncoder, wants_encoder
from e2e.models.layers.sparse import SparseCNN
from e2e.models.registry import register_model


@dataclass
class MESMConfig(EndToEndConfig):
    name: str = "mesm"
    top_p: float = bounded(0.7, 0, 1, low_open=True)  # fraction of attention mass kept per frame (IEMOCAP: 0.7)
    sparse_blocks: int = positive(3)  # the last pooled VGG blocks made sparse (the paper: 3)
    # faithful: select by attention only, as the official code does (its scorer never trains);
    # trainable: kept features scaled by their attention so the scorer learns (official defect 2 fixed)
    attention_mode: Literal["faithful", "trainable"] = "faithful"
    # Hugging Face audio / visual encoders: prune their tokens by the text after these layers ("4", "3,6"),
    # with top_p and attention_mode as above ("" = no pruning); e2e.models.layers.token_pruning
    prune_layers: str | int = ""
    prune_modalities: Literal["a", "v", "av"] = "av"  # whose encoder prune_layers applies to (e.g. v: WavLM + CLIP)


FIDELITY = FidelityTable(
    "mesm",
    MESM_PAPER,
    end_to_end_settings(batch_size=2)
    + (
        Setting(
            "top-p",
            0.7,
            "paper, IEMOCAP results table (the README command uses -st=0.8, src/cli.py defaults to 0.9)",
            "model.top_p",
            why="the published number; the paper does not give MOSEI's p, so MOSEI uses the same",
        ),
        Setting("sparse blocks", 3, "official src/models/sparse_e2e.py", "model.sparse_blocks"),
        Setting(
            "attention mode",
            "faithful",
            "official src/models/sparse_e2e.py (selection on detached scores, kept features unscaled)",
            "model.attention_mode",
            improved="trainable",
            why="improved: kept features scaled by their attention, so the scorer gets gradients",
        ),
        Setting(
            "block-1 site order",
            "sites (y, x, frame), features (frame, y, x): features land on wrong sites",
            "official src/models/sparse_e2e.py",
            paper="indices and features from the same mask in the same order",
            why="an official defect; repeating it would mix frames and utterances",
        ),
        Setting(
            "attention scores under autocast",
            "fp32 (no autocast)",
            "official code (PyTorch 1.6)",
            paper="fp32, also under bf16 autocast",
            why="bf16 scores tie on many sites and the stable sort then keeps sites in row-major order",
        ),
    ),
)


class MESM(EndToEndModel):
    """``backend``: the sparse implementation, ``auto`` (spconv on CUDA where a CUDA build is installed,
    else pure torch), ``spconv`` or ``torch``; see :func:`e2e.models.layers.sparse.resolve_backend`."""

    def __init__(
        self, config: MESMConfig, num_classes: int, text_encoder: TextEncoder | None = None, backend: str = "auto"
    ):
        if "t" not in parse_modalities(config.modalities):
            raise UsageError(
                f"MESM needs text in modalities (its sparse attention is queried by the text), "
                f"got {config.modalities!r}; use fe2e for {config.modalities!r}"
            )
        uses_vgg = any(not wants_encoder(encoder_name(config, m)) for m in MODALITY_KINDS if m in config.modalities)
        if uses_vgg and config.cnn != "mesm_vgg":
            raise UsageError(f"MESM sparsifies the paper's VGG (cnn 'mesm_vgg'), got cnn {config.cnn!r}")
        self.sparse_backend = backend  # read by _build_cnn during FE2E.__init__
        super().__init__(config, num_classes, text_encoder)

    def _encoder_options(self, modality: str, config: MESMConfig) -> EncoderOptions:
        options = super()._encoder_options(modality, config)
        options.prune_layers, options.top_p, options.attention_mode = (
            config.prune_layers if modality in config.prune_modalities else "",
            config.top_p,
            config.attention_mode,
        )
        return options

    def _build_cnn(self, modality: str, config: MESMConfig) -> tuple[nn.Module, int]:
        if wants_encoder(encoder_name(config, modality)):
            return super()._build_cnn(modality, config)
        channels, height, width = INPUT_SHAPES[modality]
        cnn = SparseCNN(
            channels,
            self.text.hidden_size,
            config.top_p,
            config.sparse_blocks,
            config.attention_mode,
            self.sparse_backend,
            config.cnn_width,
        )
        return cnn, cnn.out_channels * (height // 16) * (width // 16)  # four 2×2 pools, as in MesmVGG

    def _extract(
        self, modality: str, frames: torch.Tensor, lengths: torch.Tensor, text: torch.Tensor, extras: dict
    ) -> torch.Tensor:
        if isinstance(self.cnns[modality], HFEncoder):
            return super()._extract(modality, frames, lengths, text, extras)
        output = self.cnns[modality](frames, text.repeat_interleave(lengths, dim=0))
        extras.setdefault("sparse_masks", {})[modality] = [trace.keep for trace in output.traces]
        extras.setdefault("attention", {})[modality] = [trace.attention for trace in output.traces]
        return output.features.flatten(1)


@register_model(
    "mesm", options=MESMConfig, sparse_traces=True, fidelity=FIDELITY, tasks=("emotion", "sentiment", "vad")
)
def build_mesm(config: MESMConfig, class_names: list[str]) -> MESM:
    return MESM(config, len(class_names))
