"""Foundation-encoder features for the feature models (``e2e features --audio-encoder ID --visual-encoder ID``):
the same Hugging Face encoders the end-to-end models fine-tune (:mod:`e2e.data.hf_inputs`), frozen, replace
the librosa audio / O-Net visual substitutes of :mod:`e2e.data.sequences` when chosen.

* visual: per sampled face crop of the face cache (of ``data.face_size``, ``e2e features --face-size``; 48 px
  by default), resized to the encoder's resolution, the encoder's pooled output: the CLS token of the last
  (normalised) hidden states for ViT / DINOv2, the model's ``pooler_output`` for CLIP / SigLIP vision
  towers (CLS after the final norm / the attention-pooling head), then the face cache's ``face_found`` flag
  (0 where MTCNN found no face and the frame's centre crop stands in, as the O-Net substitute's last
  column), ``(frames, hidden + 1)``; VideoMAE instead gives one row per clip of its ``num_frames``
  consecutive crops (the last clip filled up with its last crop, as end to end): the mean of its last hidden
  states (it has no CLS token) and the share of the clip's frames with a face found, ``(clips, hidden + 1)``;
* audio: the whole 16 kHz utterance through the speech encoder once (normalised as its feature extractor
  does), its last hidden states mean-pooled per :data:`~e2e.data.sequences.AUDIO_STEP_MS` step, the time
  axis of the librosa substitute: encoder frame ``f`` (stride ``prod(conv_stride)`` samples) falls in step
  ``f * stride // step``, ``(steps, hidden)``.

The cache folder and each file's ``source`` name the encoder ids, each file's ``source`` also what
identifies their weights (:func:`e2e.data.feature_cache.feature_source`), so the default features stay valid
beside them and changed weights invalidate them; the feature models' input sizes are read from the cache
(:func:`with_encoder_dims`, recorded as ``model.input_dims``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from e2e.config import ConfigError, ExperimentConfig, format_input_dims, parse_input_dims
from e2e.data.faces import FACE_SIZE
from e2e.data.hf_inputs import (
    frame_clips,
    image_size,
    input_normalisation,
    load_backbone,
    resize_faces,
    zero_mean_unit_variance,
)
from e2e.data.mel import SAMPLE_RATE
from e2e.data.sequences import AUDIO_STEP_MS

FACE_BATCH = 64  # face crops per forward pass
MIN_SAMPLES = 400  # the conv front end's receptive field (25 ms)
POOLER_OUTPUT = ("clip_vision_model", "siglip_vision_model")


class EncoderFaces:
    """A frozen vision encoder over cached uint8 face crops: one pooled vector per frame (per clip of
    frames for VideoMAE)."""

    def __init__(self, name: str, device: str = "cpu"):
        torch.manual_seed(0)  # only matters for the random-weight tiny-* stand-ins
        self.model = load_backbone(name, "--visual-encoder", "visual").to(device).eval()
        normalisation = input_normalisation(name, "--visual-encoder", "visual")
        self.mean = torch.tensor(normalisation.image_mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(normalisation.image_std, device=device).view(1, 3, 1, 1)
        self.size, self.device = image_size(self.model.config), device
        self.hidden_size = self.model.config.hidden_size
        self.clip_frames = self.model.config.num_frames if self.model.config.model_type == "videomae" else 0

    @torch.no_grad()
    def __call__(self, crops: np.ndarray, face_found: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) RGB crops and (T,) flags -> (T, hidden + 1) float32 ((clips, hidden + 1) for
        VideoMAE)."""
        images = torch.from_numpy(np.asarray(crops)).permute(0, 3, 1, 2)
        found = torch.from_numpy(np.asarray(face_found, dtype=np.float32))[:, None]
        batch = FACE_BATCH
        if self.clip_frames:
            frames = torch.tensor([len(images)])
            images = frame_clips(images, frames, self.clip_frames)[0]
            found = frame_clips(found, frames, self.clip_frames)[0].mean(1)
            batch = max(1, FACE_BATCH // self.clip_frames)
        rows = [self._pooled(images[start : start + batch]) for start in range(0, len(images), batch)]
        return torch.cat([torch.cat(rows), found], dim=1).numpy().astype(np.float32)

    def _pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Faces (B, 3, H, W) or clips (B, frames, 3, H, W) -> (B, hidden)."""
        faces = resize_faces(images.to(self.device).flatten(0, images.dim() - 4).float() / 255, self.size)
        faces = faces.view(*images.shape[:-3], *faces.shape[1:])
        output = self.model(pixel_values=(faces - self.mean) / self.std)
        if self.model.config.model_type in POOLER_OUTPUT:
            return output.pooler_output.float().cpu()
        if self.clip_frames:  # no CLS token: VideoMAE's own mean pooling
            return output.last_hidden_state.mean(1).float().cpu()
        return output.last_hidden_state[:, 0].float().cpu()


class EncoderAudio:
    """A frozen speech encoder over a whole utterance: its last hidden states averaged per 100 ms step."""

    def __init__(self, name: str, device: str = "cpu"):
        torch.manual_seed(0)
        self.model = load_backbone(name, "--audio-encoder", "audio").to(device).eval()
        if self.model.config.model_type == "whisper":  # no waveform convs: its log-mel window has no 100 ms steps
            raise ConfigError(
                f"--audio-encoder={name!r}: Whisper's encoder is supported end to end (model.audio_encoder), "
                "not as a two-stage feature extractor; use a wav2vec2-family model here"
            )
        self.normalise = input_normalisation(name, "--audio-encoder", "audio").normalise_audio
        self.stride = math.prod(self.model.config.conv_stride)
        self.device, self.hidden_size = device, self.model.config.hidden_size

    @torch.no_grad()
    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """16 kHz samples -> (steps, hidden) float32."""
        audio = np.pad(np.asarray(samples, dtype=np.float32), (0, max(0, MIN_SAMPLES - len(samples))))
        waveform = torch.from_numpy(audio)[None].to(self.device)
        waveform = zero_mean_unit_variance(waveform) if self.normalise else waveform
        hidden = self.model(waveform).last_hidden_state[0].float().cpu().numpy()
        return step_means(hidden, self.stride)


def step_means(frames: np.ndarray, stride: int) -> np.ndarray:
    """(frames, D) encoder frames, ``stride`` samples apart -> (steps, D) means per 100 ms step."""
    step = AUDIO_STEP_MS * SAMPLE_RATE // 1000
    index = np.arange(len(frames)) * stride // step
    sums = np.zeros((index[-1] + 1, frames.shape[1]), dtype=np.float64)
    np.add.at(sums, index, frames)
    return (sums / np.bincount(index)[:, None]).astype(np.float32)


def cached_dims(cache_dir: Path) -> dict[str, int] | None:
    """The feature size per modality of one file of ``cache_dir``; None when it holds none."""
    for path in sorted(cache_dir.glob("*.npz")):
        try:
            with np.load(path) as archive:
                return {m: int(archive[name].shape[1]) for m, name in (("t", "text"), ("a", "audio"), ("v", "visual"))}
        except (OSError, ValueError, KeyError, EOFError):
            continue
    return None


def features_command(config: ExperimentConfig) -> str:
    """The ``e2e features`` command that builds ``config``'s feature cache."""
    model = config.model
    encoders = [
        f"--{flag} {name}"
        for flag, name in (
            ("audio-encoder", model.feature_audio_encoder),
            ("visual-encoder", model.feature_visual_encoder),
        )
        if name
    ]
    face_size = [] if config.data.face_size == FACE_SIZE else [f"--face-size {config.data.face_size}"]
    return " ".join(
        [
            f"e2e features {config.data.data_dir or 'DATA_DIR'} --text-model {model.text_model}",
            f"--text-max-length {model.text_max_length} --img-interval-ms {config.data.img_interval_ms}",
            *encoders,
            *face_size,
        ]
    )


def with_encoder_dims(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with ``model.input_dims`` set to the sizes its encoder-feature cache holds (unchanged
    without feature encoders); a ConfigError naming the command to run when that cache is empty, or when
    ``model.input_dims`` was set to other sizes, or ``data.face_size`` is not 48 px without a visual encoder."""
    from e2e.data.feature_cache import check_face_size, feature_cache_dir

    model, data = config.model, config.data
    if not (model.feature_audio_encoder or model.feature_visual_encoder):
        return config
    if not data.data_dir:
        raise ConfigError("model.feature_audio_encoder / feature_visual_encoder need data.data_dir (their cache)")
    check_face_size(data.face_size, model.feature_visual_encoder)
    cache_dir = feature_cache_dir(
        data.data_dir,
        model.text_model,
        data.img_interval_ms,
        model.feature_audio_encoder,
        model.feature_visual_encoder,
        data.face_size,
    )
    dims = cached_dims(cache_dir)
    if dims is None:
        raise ConfigError(
            f"{cache_dir} holds no features of the encoders the config names (audio "
            f"{model.feature_audio_encoder or 'librosa'}, visual {model.feature_visual_encoder or 'O-Net'}); "
            f"run `{features_command(config)}` first"
        )
    if model.input_dims and parse_input_dims(model.input_dims) != dims:
        raise ConfigError(
            f"model.input_dims={model.input_dims!r}, but the encoder features in {cache_dir} have sizes "
            f"{format_input_dims(dims)}"
        )
    return replace(config, model=replace(model, input_dims=format_input_dims(dims)))
