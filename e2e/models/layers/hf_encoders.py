"""Hugging Face speech and vision encoders as FE2E / MESM's per-frame encoders (instead of the VGG CNNs).

``model.audio_encoder`` / ``model.visual_encoder`` name a Hub id or a local folder that ``AutoModel`` loads:
speech models (wav2vec2, HuBERT, WavLM, data2vec-audio; Whisper's encoder) take raw 16 kHz waveform
chunks, vision models (ViT, DINOv2, CLIP / SigLIP vision towers; a full CLIP / SigLIP checkpoint gives
its ``vision_model``) take face crops, and VideoMAE takes clips of its ``num_frames`` consecutive face crops
(:meth:`HFEncoder.clips`; the temporal transformer then runs over clips, not frames: with VideoMAE's 16
frames, ``data.img_interval_ms: 125`` gives 2 s clips, about the span it was pretrained on). Inputs are
normalised as the checkpoint's own preprocessor does:

* speech: ``do_normalize`` of its feature extractor (``preprocessor_config.json``): zero mean, unit variance
  per chunk (``(x - mean) / sqrt(var + 1e-7)``, Wav2Vec2FeatureExtractor's formula) or raw samples; a
  folder without one gets zero-mean unit-variance (recorded in ``normalisation``). Whisper's encoder gets its
  own log-mel features over its fixed window (30 s for the released models; each chunk is padded to it, and
  only the frames of the chunk's own samples are pooled), so with Whisper set ``model.audio_chunk_ms`` to
  the window (one chunk per utterance of up to 30 s, as MERBench uses it) rather than 1 s chunks each padded
  to 30 s;
* vision: the image processor's ``image_mean`` / ``image_std`` on [0, 1] pixels (ImageNet's without a
  processor, recorded likewise), after a bilinear resize of the crops to the encoder's ``image_size`` when
  they are not already that size (``data.face_size`` should be it).

The chunk vector is a learned softmax-weighted sum over the pooled hidden states of the embedding output
and every layer (MERBench): each state pooled by its CLS token (vision models with one) or the mean of its
valid tokens (speech, SigLIP).

Architectures listed in :data:`PRUNABLE` run layer by layer here (embeddings, each layer, final norm),
which is what token pruning (:mod:`e2e.models.layers.token_pruning`) needs; the others (WavLM: its
relative position bias is shared across layers; Whisper: log-mel inputs over a fixed window; VideoMAE: its
attention takes no mask, so a pruned, padded clip cannot hide its padding) run through
the model's own forward with ``output_hidden_states`` and cannot be pruned. SpecAugment masking and
LayerDrop of the HF speech models are not applied in the layer-by-layer run.

``tiny-vit``, ``tiny-clip-vision``, ``tiny-videomae`` and ``tiny-wav2vec2``
(:data:`e2e.data.hf_inputs.TINY_ENCODERS`) are random-weight stand-ins built from a small config (no
download), as ``tiny-bert`` is for text: the CPU demo configs use them.

``freeze``: ``all`` (the encoder is a fixed feature extractor; the layer weights still learn), ``none``, or
``first_n``: the embeddings and the first ``freeze_layers`` layers frozen.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from e2e.config import UsageError
from e2e.data.hf_inputs import IMAGENET_MEAN as IMAGENET_MEAN  # re-exported (the tests' default check)
from e2e.data.hf_inputs import (
    frame_clips,
    image_size,
    input_normalisation,
    load_backbone,
    resize_faces,
    whisper_log_mel,
    zero_mean_unit_variance,
)
from e2e.models.layers.token_pruning import PruneTrace, TokenPruner, TokenState, parse_prune_layers

VGG = "vgg"
FREEZE_MODES = ("all", "none", "first_n")
PRUNABLE = ("vit", "dinov2", "clip_vision_model", "siglip_vision_model", "wav2vec2", "hubert", "data2vec-audio")


@dataclass
class EncoderOptions:
    """One modality's encoder settings (fields of :class:`~e2e.models.layers.end_to_end.EndToEndConfig`)."""

    name: str  # HF id or folder
    key: str  # its config key, for messages ("model.audio_encoder")
    freeze: str = "none"
    freeze_layers: int = 0
    gradient_checkpointing: bool = False
    bf16: bool = False  # bf16 autocast around the encoder on CUDA
    prune_layers: str | int = ""  # "" = no pruning; 4 / "3,6": prune after those layers
    top_p: float = 1.0
    attention_mode: str = "faithful"


class _Anatomy:
    """Where an architecture keeps its parts, for the layer-by-layer run."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.type = model.config.model_type
        self.layers = self._layers()
        self.special_tokens = self._special_tokens()

    def _layers(self) -> nn.ModuleList:
        model = self.model
        for path in ("layers", "encoder.layers", "encoder.layer"):
            module = model
            for part in path.split("."):
                module = getattr(module, part, None)
            if isinstance(module, nn.ModuleList):
                return module
        raise UsageError(f"cannot find the transformer layers of a {self.type!r} model")

    def _special_tokens(self) -> int:
        if self.type in ("vit", "clip_vision_model"):
            return 1
        if self.type == "dinov2":
            return 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)
        return 0

    def final_norm(self) -> nn.Module | None:
        model = self.model
        if self.type in ("vit", "dinov2"):
            return model.layernorm
        if self.type in ("clip_vision_model", "siglip_vision_model"):
            return model.post_layernorm
        if getattr(model.config, "do_stable_layer_norm", False):
            return model.encoder.layer_norm
        return None

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        if self.type in ("vit", "dinov2"):
            return model.embeddings(inputs)
        if self.type == "clip_vision_model":
            return model.pre_layrnorm(model.embeddings(inputs))
        if self.type == "siglip_vision_model":
            return model.embeddings(inputs)
        features = model.feature_extractor(inputs).transpose(1, 2)
        projected = model.feature_projection(features)
        hidden = projected[0] if isinstance(projected, tuple) else projected
        encoder = model.encoder
        hidden = hidden + encoder.pos_conv_embed(hidden)
        if not getattr(model.config, "do_stable_layer_norm", False):
            hidden = encoder.layer_norm(hidden)
        return encoder.dropout(hidden)


class HFEncoder(nn.Module):
    """A pretrained encoder on packed chunks ``(N, samples)``, faces ``(N, 3, H, W)`` or clips of faces
    ``(N, frames, 3, H, W)`` → ``(N, hidden)``."""

    def __init__(self, options: EncoderOptions, kind: str, text_dim: int | None):
        super().__init__()
        self.kind, self.options = kind, options
        self.backbone = load_backbone(options.name, options.key, kind)
        config = self.backbone.config
        self.hidden_size = config.hidden_size
        self.anatomy = _Anatomy(self.backbone)
        num_layers = len(self.anatomy.layers)
        self.layer_logits = nn.Parameter(torch.zeros(num_layers + 1))  # MERBench weighted sum, starts at the mean
        self.pool_cls = self.anatomy.special_tokens > 0
        self.clip_frames = config.num_frames if config.model_type == "videomae" else 0  # 0: one frame per step
        self._set_normalisation(options.name, config)
        prune_after = parse_prune_layers(options.prune_layers, num_layers, f"{options.key} pruning layers")
        if prune_after and self.anatomy.type not in PRUNABLE:
            raise UsageError(
                f"{options.key}={options.name!r}: token pruning needs a layer-by-layer run, supported for "
                f"{', '.join(PRUNABLE)}, not {self.anatomy.type!r}; set model.prune_layers=''"
            )
        if prune_after and text_dim is None:
            raise UsageError("token pruning is queried by the text CLS: it needs text in model.modalities")
        self.last_tokens = (0, 0)  # (chunks, tokens per chunk) of the last forward, for FLOPs counts
        self.pruners = nn.ModuleDict(
            {
                str(layer): TokenPruner(
                    self.hidden_size, text_dim, options.top_p, options.attention_mode, self.anatomy.special_tokens
                )
                for layer in prune_after
            }
        )
        self._freeze(options)
        if options.gradient_checkpointing and self.anatomy.type not in PRUNABLE:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # ------------------------------------------------------------------ setup

    def _set_normalisation(self, name: str, config) -> None:
        self.log_mel = whisper_log_mel(name, config) if config.model_type == "whisper" else None
        self.valid_tokens = 0  # Whisper: encoder frames that hold the last chunks' samples (0: all)
        if self.log_mel is not None:
            self.normalisation = "Whisper log-mel feature extractor"
            return
        normalisation = input_normalisation(name, self.options.key, self.kind)
        self.normalisation = normalisation.description
        if self.kind == "audio":
            self.normalise_audio = normalisation.normalise_audio
            return
        self.register_buffer("pixel_mean", torch.tensor(normalisation.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(normalisation.image_std).view(1, 3, 1, 1), persistent=False)
        self.image_size = image_size(config)

    def _freeze(self, options: EncoderOptions) -> None:
        if options.freeze not in FREEZE_MODES:
            raise UsageError(f"{options.key}_freeze must be one of {', '.join(FREEZE_MODES)}, got {options.freeze!r}")
        if options.freeze == "none":
            return
        if options.freeze == "all":
            self.backbone.requires_grad_(False)
            return
        layers = self.anatomy.layers
        if not 0 <= options.freeze_layers <= len(layers):
            raise UsageError(
                f"{options.key}_freeze_layers={options.freeze_layers} must be in 0..{len(layers)} "
                f"({options.name!r} has {len(layers)} layers)"
            )
        trainable = {id(p) for layer in layers[options.freeze_layers :] for p in layer.parameters()}
        norm = self.anatomy.final_norm()
        trainable |= {id(p) for p in norm.parameters()} if norm is not None else set()
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(id(parameter) in trainable)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The pretrained encoder's own parameters (their own lr group, ``model.encoder_lr_factor``)."""
        return list(self.backbone.parameters())

    # ------------------------------------------------------------------ forward

    def clips(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's steps and their count per utterance: the packed frames / chunks themselves, or for
        a video encoder clips of ``num_frames`` consecutive frames (:func:`~e2e.data.hf_inputs.frame_clips`)."""
        if not self.clip_frames:
            return frames, lengths
        return frame_clips(frames, lengths, self.clip_frames)

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        """The checkpoint's input normalisation: per-chunk zero-mean unit-variance audio, or [0, 1] faces
        (or clips of them) resized to the encoder's resolution and normalised by the processor's mean / std."""
        if self.log_mel is not None:
            return self._whisper_features(inputs)
        if self.kind == "audio":
            return zero_mean_unit_variance(inputs) if self.normalise_audio else inputs.float()
        if self.clip_frames:  # (clips, frames, 3, H, W): each frame as an image
            frames = self._normalise_faces(inputs.flatten(0, 1))
            return frames.view(*inputs.shape[:2], *frames.shape[1:])
        return self._normalise_faces(inputs)

    def _normalise_faces(self, faces: torch.Tensor) -> torch.Tensor:
        return (resize_faces(faces, self.image_size) - self.pixel_mean) / self.pixel_std

    def _whisper_features(self, chunks: torch.Tensor) -> torch.Tensor:
        """Whisper's log-mel of each chunk ``(N, samples)``, padded to its window: ``(N, mels, frames)``."""
        window = self.log_mel.n_samples
        if chunks.shape[1] > window:
            raise UsageError(
                f"{self.options.key}={self.options.name!r}: audio chunks of {chunks.shape[1]} samples exceed "
                f"Whisper's window of {window} samples ({window // 16} ms); set model.audio_chunk_ms to at most that"
            )
        features = self.log_mel(list(chunks.float().cpu().numpy()), sampling_rate=16000, return_tensors="pt")
        frames = self.backbone.config.max_source_positions
        self.valid_tokens = min(frames, math.ceil(chunks.shape[1] * frames / window))
        return features.input_features.to(chunks.device)

    def forward(self, inputs: torch.Tensor, text: torch.Tensor | None = None) -> tuple[torch.Tensor, list[PruneTrace]]:
        """(chunk vectors (N, hidden), the pruning traces); ``text`` (N, text_dim) when pruning."""
        inputs = self.prepare(inputs)
        with self._autocast(inputs.device):
            if self.anatomy.type in PRUNABLE:
                pooled, traces = self._layer_by_layer(inputs, text)
            else:
                pooled, traces = self._whole(inputs), []
        weights = self.layer_logits.softmax(0)
        return torch.einsum("l,lnd->nd", weights, torch.stack(pooled).float()), traces

    def _autocast(self, device: torch.device):
        if self.options.bf16 and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _whole(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        output = self.backbone(inputs, output_hidden_states=True)
        self.last_tokens = tuple(output.hidden_states[0].shape[:2])
        states = [TokenState.full(hidden) for hidden in output.hidden_states]
        if self.valid_tokens:  # Whisper: the padding of its window is not the chunk
            for state in states:
                state.valid[:, self.valid_tokens :] = False
        return [self._pool(state) for state in states]

    def _layer_by_layer(self, inputs: torch.Tensor, text: torch.Tensor | None):
        state = TokenState.full(self.anatomy.embed(inputs))
        full_tokens = state.hidden.shape[1]
        self.last_tokens = (state.hidden.shape[0], full_tokens)
        pooled, traces = [self._pool(state)], []
        layers = self.anatomy.layers
        norm = self.anatomy.final_norm()
        for index, layer in enumerate(layers, start=1):
            state.hidden = self._run_layer(layer, state)
            if index == len(layers) and norm is not None:
                state.hidden = norm(state.hidden)
            pooled.append(self._pool(state))
            if str(index) in self.pruners:
                state, trace = self.pruners[str(index)](state, text, full_tokens, index)
                traces.append(trace)
        return pooled, traces

    def _run_layer(self, layer: nn.Module, state: TokenState) -> torch.Tensor:
        mask = state.attention_mask()
        if mask is not None and torch.is_autocast_enabled(mask.device.type):
            mask = mask.to(torch.get_autocast_dtype(mask.device.type)).clamp(min=torch.finfo(torch.bfloat16).min)
        if self.options.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, state.hidden, mask, use_reentrant=False)
        return layer(state.hidden, mask)

    def _pool(self, state: TokenState) -> torch.Tensor:
        """CLS (position 0) for vision models with one, else the mean of the valid tokens."""
        if self.pool_cls:
            return state.hidden[:, 0]
        weights = state.valid.to(state.hidden.dtype)[..., None]
        return (state.hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def wants_encoder(name: str) -> bool:
    """True when ``name`` asks for a Hugging Face encoder rather than the paper's VGG."""
    return name != VGG
