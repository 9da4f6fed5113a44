"""The end-to-end network FE2E and MESM share (Dai et al., NAACL 2021), and its options.

Per visual/acoustic modality: a CNN on every face crop / mel chunk (packed over the batch), a
projection to ``d_model``, a temporal transformer whose CLS output feeds a linear head. Text: the CLS
of the text encoder's last hidden state feeds its own head. The modality logits are fused by
learned per-modality scalars.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Literal

import torch
from torch import nn

from e2e.config import ModelConfig, non_negative, parse_modalities, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.fidelity import Setting, bf16_setting
from e2e.models.layers.cnn import INPUT_SHAPES, build_cnn, flat_size
from e2e.models.layers.encoders import (
    LateFusion,
    TemporalTransformer,
    TextEncoder,
    projection,
    text_encoder_from_config,
)
from e2e.models.layers.hf_encoders import VGG, EncoderOptions, HFEncoder, wants_encoder


@dataclass
class EndToEndConfig(ModelConfig):
    """Options of the end-to-end models (raw clips in): the MESM paper's values."""

    text_random_init: bool = False  # build the text encoder from its config without pretrained weights
    cnn: Literal["mesm_vgg", "vgg11", "vgg11_bn"] = "mesm_vgg"  # mesm_vgg = the paper; vgg11*: torchvision
    cnn_weights: str | None = None  # torchvision weights name for vgg11/vgg11_bn, e.g. "DEFAULT"
    cnn_width: float = positive(1.0)  # channel multiplier of mesm_vgg (1 = the paper; 0.25 for CPU demos)
    d_model: int = positive(64)  # width of the visual/acoustic temporal transformers
    temporal_layers: int = positive(4)  # encoder layers of each temporal transformer
    temporal_heads: int = positive(4)
    temporal_ffn: int = positive(2048)
    positional_encoding: bool = False  # the official code's temporal encoder has none; true: sinusoidal
    # foundation encoders (e2e.models.layers.hf_encoders): "vgg" = the paper's CNN on mel chunks / 48 px faces;
    # else a Hugging Face id or folder: a speech model on raw 16 kHz waveform chunks of audio_chunk_ms, a vision
    # model on face crops (data.face_size px, resized to the encoder's resolution; VideoMAE: on clips of its
    # num_frames consecutive crops, one every data.img_interval_ms)
    audio_encoder: str = VGG
    visual_encoder: str = VGG
    audio_chunk_ms: int = positive(1000)  # waveform chunk per audio_encoder call (vgg: 400 ms mel chunks)
    encoder_freeze: Literal["all", "none", "first_n"] = "none"
    encoder_freeze_layers: int = non_negative(0)  # with first_n: embeddings + this many layers frozen
    encoder_lr_factor: float = non_negative(0.1)  # encoder lr = train.lr * this, like the text encoder's group
    encoder_gradient_checkpointing: bool = False
    encoder_bf16: bool = True  # bf16 autocast around the encoders, on CUDA only


def frames_of(batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed inputs of a frame modality and their per-utterance counts."""
    if modality == "v":
        return batch.faces, batch.face_lengths
    return batch.audio, batch.audio_lengths


def encoder_steps(cnn: nn.Module, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``cnn`` encodes one vector of, and how many per utterance: each frame / chunk, or clips of
    frames for a video encoder (:meth:`HFEncoder.clips`)."""
    return cnn.clips(frames, lengths) if isinstance(cnn, HFEncoder) else (frames, lengths)


class EndToEndModel(nn.Module):
    """FE2E's network; MESM replaces :meth:`_build_cnn` and :meth:`_extract` with its sparse CNN.

    ``text_encoder`` injects a ready :class:`TextEncoder` (tests); by default it is loaded from
    ``config.text_model``. Without text in the modalities no text encoder is built or used."""

    def __init__(self, config: EndToEndConfig, num_classes: int, text_encoder: TextEncoder | None = None):
        super().__init__()
        self.modalities = parse_modalities(config.modalities)
        self.encoder_lr_factor = config.encoder_lr_factor  # read by the optimiser for encoder_parameters()
        self.text = None
        self.heads = nn.ModuleDict()
        if "t" in self.modalities:
            self.text = text_encoder if text_encoder is not None else text_encoder_from_config(config)
            self.heads["t"] = nn.Linear(self.text.hidden_size, num_classes)
        self.cnns = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.temporals = nn.ModuleDict()
        for modality in (m for m in self.modalities if m != "t"):
            self.cnns[modality], flat = self._build_cnn(modality, config)
            self.projections[modality] = projection(flat, config.d_model)
            self.temporals[modality] = TemporalTransformer(
                config.d_model,
                config.temporal_layers,
                config.temporal_heads,
                config.temporal_ffn,
                config.dropout,
                config.positional_encoding,
            )
            self.heads[modality] = nn.Linear(config.d_model, num_classes)
        self.fusion = LateFusion(len(self.modalities))

    def _build_cnn(self, modality: str, config: EndToEndConfig) -> tuple[nn.Module, int]:
        """The per-frame CNN (or Hugging Face encoder) of ``modality`` and its flattened output size."""
        if wants_encoder(encoder_name(config, modality)):
            encoder = HFEncoder(self._encoder_options(modality, config), MODALITY_KINDS[modality], self._text_dim())
            return encoder, encoder.hidden_size
        shape = INPUT_SHAPES[modality]
        cnn = build_cnn(config.cnn, shape[0], config.cnn_weights, config.cnn_width)
        return cnn, flat_size(cnn, shape)

    def _encoder_options(self, modality: str, config: EndToEndConfig) -> EncoderOptions:
        """The Hugging Face encoder settings of ``modality``; MESM adds its pruning."""
        return EncoderOptions(
            encoder_name(config, modality),
            f"model.{MODALITY_KINDS[modality]}_encoder",
            config.encoder_freeze,
            config.encoder_freeze_layers,
            config.encoder_gradient_checkpointing,
            config.encoder_bf16,
        )

    def _text_dim(self) -> int | None:
        return None if self.text is None else self.text.hidden_size

    def _extract(
        self, modality: str, frames: torch.Tensor, lengths: torch.Tensor, text: torch.Tensor | None, extras: dict
    ) -> torch.Tensor:
        """Per-frame CNN features ``(sum L_b, flat)``; ``text`` and ``extras`` are for subclasses."""
        cnn = self.cnns[modality]
        if isinstance(cnn, HFEncoder):
            per_frame_text = None if text is None or not cnn.pruners else text.repeat_interleave(lengths, dim=0)
            features, traces = cnn(frames, per_frame_text)
            if traces:
                extras.setdefault("token_traces", {})[modality] = traces
            return features
        return cnn(frames).flatten(1)

    def forward(self, batch: Batch) -> ModelOutput:
        extras: dict[str, object] = {}
        logits: dict[str, torch.Tensor] = {}
        text = None
        if self.text is not None:
            text = self.text(batch.text_input_ids, batch.text_attention_mask)
            logits["t"] = self.heads["t"](text)
        for modality in self.cnns:
            frames, lengths = encoder_steps(self.cnns[modality], *frames_of(batch, modality))
            features = self._extract(modality, frames, lengths, text, extras)
            sequence = self.temporals[modality](self.projections[modality](features), lengths)
            logits[modality] = self.heads[modality](sequence)
        fused = self.fusion(torch.stack([logits[m] for m in self.modalities], dim=-1))
        extras["modality_logits"] = logits
        return ModelOutput(fused, extras=extras)

    def text_parameters(self) -> list[nn.Parameter]:
        """Text encoder + text head: the trainer gives these ``lr * text_lr_factor``."""
        if self.text is None:
            return []
        return list(chain(self.text.parameters(), self.heads["t"].parameters()))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The pretrained audio / visual encoders' own parameters: the trainer gives these
        ``lr * model.encoder_lr_factor``."""
        return [p for cnn in self.cnns.values() if isinstance(cnn, HFEncoder) for p in cnn.backbone_parameters()]

    def other_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in :meth:`text_parameters` nor :meth:`encoder_parameters`."""
        grouped = {id(p) for p in chain(self.text_parameters(), self.encoder_parameters())}
        return [p for p in self.parameters() if id(p) not in grouped]


MODALITY_KINDS = {"a": "audio", "v": "visual"}


def encoder_name(config: EndToEndConfig, modality: str) -> str:
    """``model.audio_encoder`` or ``model.visual_encoder``."""
    return config.audio_encoder if modality == "a" else config.visual_encoder


MESM_PAPER = (
    "Dai et al., Multimodal End-to-End Sparse Model for Emotion Recognition, NAACL 2021; "
    "official code github.com/wenliangdai/Multimodal-End2end-Sparse (files below are in that repository)"
)
_README = "official README, train command"


def mesm_repository_settings(readme: str, loss_file: str, bf16_why: str) -> tuple[Setting, ...]:
    """The precision, seed, loss and threshold rows every model of the MESM repository shares: ``readme`` is
    the README command that sets the loss, ``loss_file`` the official file computing it, ``bf16_why`` the
    reason for bf16 in the ``improved`` preset."""
    return (
        bf16_setting("bf16 autocast on CUDA", False, "official code (PyTorch 1.6, fp32 throughout)", bf16_why),
        Setting("seed", 0, "official src/cli.py (default)", "train.seed"),
        Setting(
            "loss",
            "BCE with logits, pos_weight = neg/pos per class",
            f"{readme} (--loss=bce); official {loss_file}",
            why="same",
        ),
        Setting(
            "decision thresholds",
            "per class on valid (the --test mode tuned them on test)",
            "official src/evaluate.py",
            paper="per class on valid, never on test",
            why="tuning on test leaks the test labels",
        ),
    )


def end_to_end_settings(batch_size: int) -> tuple[Setting, ...]:
    """The fidelity rows FE2E and MESM share (the paper's training command differs only in batch size)."""
    return (
        Setting("modalities", "tav", f"{_README} (-mod=tav)", "model.modalities"),
        Setting("frame interval (ms)", 500, f"{_README} (--img-interval=500)", "data.img_interval_ms"),
        Setting(
            "audio input",
            "power",
            "official src/datasets.py (torchaudio MelSpectrogram, no log)",
            "data.audio_features",
            improved="log_mel",
            why="improved: log(mel + eps) normalised per utterance is better conditioned",
        ),
        Setting("text encoder", "albert-base-v2", f"{_README} (--text-model-size=base)", "model.text_model"),
        Setting("text max length", 100, f"{_README} (--text-max-len=100)", "model.text_max_length"),
        Setting("visual/acoustic CNN", "mesm_vgg", "official src/models/e2e.py (VGG-style, from scratch)", "model.cnn"),
        Setting("CNN channel multiplier", 1.0, "official src/models/e2e.py (64-128-256-512)", "model.cnn_width"),
        Setting("temporal transformer width", 64, f"{_README} (--trans-dim=64)", "model.d_model"),
        Setting("temporal transformer layers", 4, f"{_README} (--trans-nlayers=4)", "model.temporal_layers"),
        Setting("temporal transformer heads", 4, f"{_README} (--trans-nheads=4)", "model.temporal_heads"),
        Setting(
            "temporal transformer FFN",
            2048,
            "official src/models/transformer_encoder.py (torch default)",
            "model.temporal_ffn",
        ),
        Setting("dropout", 0.1, "official src/models/transformer_encoder.py (torch default)", "model.dropout"),
        Setting(
            "positional encoding",
            False,
            "official src/models/transformer_encoder.py (pos_encoder commented out)",
            "model.positional_encoding",
            improved=True,
            why="improved: sinusoidal positions, so frame order is visible to the temporal transformer",
        ),
        Setting("batch size (utterances)", batch_size, f"{_README} (-bs={batch_size})", "data.batch_size"),
        Setting("learning rate", 5e-5, f"{_README} (-lr=5e-5)", "train.lr"),
        Setting(
            "text encoder + text head lr factor",
            0.1,
            "official main.py (T and t_out at lr / --text-lr-factor=10)",
            "train.text_lr_factor",
        ),
        Setting("weight decay", 0.0, "official src/cli.py (default)", "train.weight_decay"),
        Setting("lr schedule", "none", "official src/cli.py (-sc off in the train command)", "train.scheduler"),
        Setting("gradient clipping", 0.0, "official src/cli.py (-cl -1 = off)", "train.grad_clip"),
        Setting("epochs", 40, f"{_README} (-ep=40)", "train.epochs"),
        Setting("early-stop patience (mean valid F1)", 6, f"{_README} (--early-stop=6)", "train.early_stop_patience"),
        *mesm_repository_settings(
            _README,
            "src/trainers/emotiontrainer.py",
            "improved: about half the activation memory and faster on GPUs with bf16",
        ),
        Setting(
            "face crops",
            "MTCNN (48 px, margin 2) at every step; off-centre fallback crop",
            "official src/models/e2e.py",
            paper="MTCNN once, cached with a face-found flag; centre fallback crop",
            why="same detector and settings; the official fallback's column offset was computed from the height",
        ),
        Setting(
            "frames per MOSEI clip",
            "2 fps frames subsampled again by 15",
            "official src/datasets.py (MOSEI sample_imgs_by_interval assumes 30 fps)",
            paper="2 fps, as for IEMOCAP",
            why="one frame per 7.5 s leaves most clips one frame; the paper describes 2 fps",
        ),
        Setting(
            "utterances without frames",
            "dropped by the collate",
            "official src/datasets.py (collate_fn)",
            paper="every utterance gets at least one frame",
            why="dropping them changes the test set",
        ),
    )
