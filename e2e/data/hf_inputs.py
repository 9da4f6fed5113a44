"""Loading Hugging Face speech / vision encoders and normalising their inputs as the checkpoint's own
preprocessor does; shared by the end-to-end models' encoders (:mod:`e2e.models.layers.hf_encoders`) and
the two-stage encoder features (:mod:`e2e.data.encoder_features`).

* speech: ``do_normalize`` of its feature extractor (``preprocessor_config.json``): zero mean, unit variance
  per input (``(x - mean) / sqrt(var + 1e-7)``, Wav2Vec2FeatureExtractor's formula) or raw samples; a
  folder without one gets zero-mean unit-variance (said in the description);
* vision: the image processor's ``image_mean`` / ``image_std`` on [0, 1] pixels (ImageNet's without a
  processor, said likewise), after a bilinear resize to the encoder's ``image_size``.

``tiny-vit``, ``tiny-clip-vision``, ``tiny-videomae`` and ``tiny-wav2vec2`` (:data:`TINY_ENCODERS`) are
random-weight stand-ins built from a small config (no download).

:func:`weights_fingerprint` identifies the weights a name loads (a hash of a folder's or cached
snapshot's files), so caches of features computed with them are rebuilt when they change.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from e2e.config import ConfigError

AUDIO_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")
VISION_TYPES = ("vit", "dinov2", "clip_vision_model", "siglip_vision_model", "videomae")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_EPS = 1e-7  # Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
WHISPER_RATE, WHISPER_HOP = 16000, 160  # Whisper's log-mel: 16 kHz, 10 ms hop
TINY_ENCODERS = ("tiny-vit", "tiny-clip-vision", "tiny-videomae", "tiny-wav2vec2")

logger = logging.getLogger(__name__)


def _tiny_configs() -> dict:
    """name -> the small config of each random-weight stand-in (32 wide, 2 layers)."""
    from transformers import CLIPVisionConfig, VideoMAEConfig, ViTConfig, Wav2Vec2Config

    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    return {
        "tiny-vit": ViTConfig(**small, image_size=48, patch_size=8),
        "tiny-clip-vision": CLIPVisionConfig(**small, image_size=48, patch_size=8),
        # clips of 4 face crops, tubelets of 2 frames: 2 x 6 x 6 = 72 tokens per clip
        "tiny-videomae": VideoMAEConfig(**small, image_size=48, patch_size=8, num_frames=4, tubelet_size=2),
        # three strided convs of total stride 320 (wav2vec2's): 50 frames per second
        "tiny-wav2vec2": Wav2Vec2Config(
            **small,
            conv_dim=(16, 16, 16),
            conv_kernel=(10, 8, 8),
            conv_stride=(5, 8, 8),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        ),
    }


def _load(load, name: str, key: str):
    """``load(name)`` from a folder or the HF cache, else the Hub; ConfigError naming ``key`` and ``name``."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        if Path(name).is_dir():
            return load(name)
        try:
            return load(name, local_files_only=True)
        except (OSError, ValueError):
            return load(name)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(
            f"{key}={name!r}: cannot load it as a Hugging Face model from a local folder, the HF cache or the "
            f"Hub ({str(error).splitlines()[0] if str(error) else type(error).__name__}); give a model folder "
            f"(`hf download ID --local-dir DIR` where the Hub is reachable), 'vgg' or one of {', '.join(TINY_ENCODERS)}"
        ) from None


def load_backbone(name: str, key: str, kind: str) -> nn.Module:
    """The encoder ``name`` (AutoModel) of ``kind`` ``audio`` or ``visual``; ConfigError naming it otherwise."""
    from transformers import AutoConfig, AutoModel  # after e2e.compat (e2e/__init__ imports it first)

    if name in TINY_ENCODERS:
        return _check_kind(AutoModel.from_config(_tiny_configs()[name]), name, key, kind)
    config = _load(AutoConfig.from_pretrained, name, key)
    model_type = getattr(config, "model_type", "?")
    if model_type in ("clip", "siglip"):
        model = _load(AutoModel.from_pretrained, name, key).vision_model
    elif model_type == "whisper":  # the encoder of the encoder-decoder
        model = _load(AutoModel.from_pretrained, name, key).get_encoder()
    else:
        model = _load(AutoModel.from_pretrained, name, key)
    return _check_kind(model, name, key, kind)


def _check_kind(model: nn.Module, name: str, key: str, kind: str) -> nn.Module:
    model_type = model.config.model_type
    allowed = AUDIO_TYPES if kind == "audio" else VISION_TYPES
    if model_type not in allowed:
        raise ConfigError(
            f"{key}={name!r} is a {model_type!r} model, not a supported {kind} encoder "
            f"(supported model types: {', '.join(allowed)}; or 'vgg')"
        )
    return model


def _preprocessor(name: str) -> dict | None:
    """The checkpoint's ``preprocessor_config.json`` as a dict (folder or HF cache), None without one."""
    path = Path(name) / "preprocessor_config.json"
    if name in TINY_ENCODERS:
        return None
    if not Path(name).is_dir():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(name, "preprocessor_config.json"))
        except Exception:  # noqa: BLE001 - no preprocessor on the Hub / Hub unreachable: documented default
            return None
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass(frozen=True)
class InputNormalisation:
    """How one checkpoint wants its inputs; ``description`` is recorded (a default is said so)."""

    description: str
    normalise_audio: bool = True
    image_mean: tuple[float, ...] = IMAGENET_MEAN
    image_std: tuple[float, ...] = IMAGENET_STD


def input_normalisation(name: str, key: str, kind: str) -> InputNormalisation:
    """The normalisation of ``name``'s preprocessor (``kind`` audio / visual); defaults are logged."""
    processor = _preprocessor(name) or {}
    if not processor and name not in TINY_ENCODERS:
        logger.warning("%s=%r has no preprocessor_config.json: default input normalisation", key, name)
    if kind == "audio":
        normalise = bool(processor.get("do_normalize", True))
        description = (
            f"feature extractor: do_normalize={normalise}"
            if processor
            else "no feature extractor: zero mean, unit variance per chunk"
        )
        return InputNormalisation(description, normalise_audio=normalise)
    mean, std = processor.get("image_mean"), processor.get("image_std")
    if mean and std:
        return InputNormalisation("image processor mean/std", image_mean=tuple(mean), image_std=tuple(std))
    return InputNormalisation("no image processor: ImageNet mean/std")


def whisper_log_mel(name: str, config):
    """Whisper's feature extractor (log-mel over a fixed window of ``2 * max_source_positions`` frames of
    10 ms, padded): the checkpoint's own, or one built from the model config for a folder without it."""
    from transformers import WhisperFeatureExtractor

    if _preprocessor(name) is not None:
        return _load(WhisperFeatureExtractor.from_pretrained, name, "model.audio_encoder")
    frames = 2 * config.max_source_positions  # the encoder's two convs: stride 1 then 2
    seconds, rest = divmod(frames * WHISPER_HOP, WHISPER_RATE)
    if rest:
        raise ConfigError(f"{name!r}: a Whisper window of {frames} frames is not a whole number of seconds")
    return WhisperFeatureExtractor(feature_size=config.num_mel_bins, chunk_length=seconds, hop_length=WHISPER_HOP)


def zero_mean_unit_variance(samples: torch.Tensor) -> torch.Tensor:
    """Each row of ``(N, samples)`` to zero mean, unit variance (Wav2Vec2FeatureExtractor's formula)."""
    samples = samples.float()
    mean = samples.mean(dim=1, keepdim=True)
    return (samples - mean) / torch.sqrt(samples.var(dim=1, unbiased=False, keepdim=True) + NORM_EPS)


def image_size(config) -> tuple[int, int]:
    """The encoder's input resolution ``(H, W)`` from its config's ``image_size``."""
    size = config.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


def resize_faces(faces: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, 3, H, W)`` faces bilinearly resized to ``size`` when they are not that size already."""
    if tuple(faces.shape[-2:]) == tuple(size):
        return faces
    return F.interpolate(faces, size=size, mode="bilinear", align_corners=False)


def frame_clips(frames: torch.Tensor, lengths: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed frames ``(sum L_b, ...)`` of utterances of ``lengths`` frames as consecutive clips of ``size``
    frames, ``(sum C_b, size, ...)``, and the clips per utterance ``C_b = ceil(L_b / size)``. A video encoder
    (VideoMAE) takes a fixed number of frames, so an utterance's last clip is filled up by repeating its
    last frame."""
    lengths = lengths.to(torch.long)
    clips = (lengths + size - 1) // size
    slots = clips * size  # frame slots per utterance
    utterance = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), slots)
    first_slot = torch.cumsum(slots, 0) - slots
    first_frame = torch.cumsum(lengths, 0) - lengths
    position = torch.arange(int(slots.sum()), device=lengths.device) - first_slot[utterance]
    index = first_frame[utterance] + torch.minimum(position, lengths[utterance] - 1)
    return frames[index.to(frames.device)].reshape(-1, size, *frames.shape[1:]), clips


WEIGHT_FILES = ("config.json", "preprocessor_config.json", "*.safetensors", "*.bin")  # what identifies a model
HASH_CHUNK = 1 << 20  # bytes read at a time while hashing


def weights_fingerprint(name: str) -> str:
    """What identifies the weights ``name`` loads, for the feature cache's fingerprint
    (:func:`e2e.data.feature_cache.feature_source`).

    ``sha256:<hex>`` over the :data:`WEIGHT_FILES` (relative path, size and contents, sorted by path) of a
    local folder, or of the snapshot a Hub id resolves to in the HF cache (looked up there, no network);
    a fixed tag for the tiny-* stand-ins (their config and seed 0 fix them); the name itself for a Hub id
    that is not in the HF cache, whose weights cannot be identified offline. The files are hashed once per
    process while their sizes and modification times stay the same."""
    if name in TINY_ENCODERS:
        return f"{name}: random init, seed 0"
    folder = _model_folder(name)
    if folder is None:
        return name
    files = sorted(path for path in folder.rglob("*") if _is_weight_file(path))
    stamps = tuple((path.relative_to(folder).as_posix(), *_size_and_mtime(path)) for path in files)
    return f"sha256:{_hash_files(str(folder), stamps)}"


def _is_weight_file(path: Path) -> bool:
    return any(fnmatch.fnmatchcase(path.name, pattern) for pattern in WEIGHT_FILES) and path.is_file()


def _size_and_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _model_folder(name: str) -> Path | None:
    """``name`` as a local folder, else the HF cache's snapshot of Hub id ``name``; None when neither."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid Hub id (HFValidationError)
        return None
    return Path(config).parent if isinstance(config, str) else None


@functools.cache
def _hash_files(folder: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    """SHA-256 over the files ``stamps`` lists (relative path, size, mtime) in ``folder``."""
    digest = hashlib.sha256()
    for relative, size, _ in stamps:
        digest.update(f"{relative}\0{size}\0".encode())
        with open(Path(folder) / relative, "rb") as file:
            while chunk := file.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
