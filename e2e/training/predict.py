"""``e2e predict``: run a trained checkpoint on a new video, with the training-time preprocessing.

Frames are sampled every ``img_interval_ms`` from the clip start and cropped with MTCNN (centre crop when
no face is found), the audio is decoded by ffmpeg to 16 kHz mono, and both go through the same
normalisation and mel chunking as the cached training data. The audio is the video's own track, the
``audio`` file when given, or, for a video without an audio stream that is a clip of a reorganized
folder (``DATA/video/<id>.mp4``), the clip's ``DATA/audio/<id>.wav``.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from torch import nn

from data_reorg.media import MediaError, VideoInfo, frame_span, probe_video, read_audio
from e2e.config import ConfigError, ExperimentConfig, UsageError
from e2e.data.batch import Batch
from e2e.data.dataset import collate, normalise_faces
from e2e.data.faces import FaceCropper, read_frames, sample_frame_indices
from e2e.data.mel import N_FFT, mel_chunks, mel_spectrogram
from e2e.data.text import load_tokenizer
from e2e.models import model_inputs, shipped_models
from e2e.training.checkpoint import load_checkpoint, model_from_checkpoint
from e2e.training.distributed import resolve_device
from e2e.training.inference import autocast

_AUDIO_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*: Audio: ", re.MULTILINE)


@dataclass
class Prediction:
    """``probabilities`` and ``decisions`` (at the stored thresholds) per class for an emotion checkpoint;
    for a regression checkpoint (``data.task`` sentiment / vad: no thresholds) ``values`` per target."""

    class_names: list[str]
    probabilities: list[float] | None
    decisions: list[bool] | None
    faces_found: int
    frames: int
    note: str = ""  # how the audio was found, when it was not the obvious source
    values: list[float] | None = None

    def format(self) -> str:
        if self.values is not None:
            lines = [f"{'target':<10} {'value':>7}"]
            lines += [f"{name:<10} {value:7.3f}" for name, value in zip(self.class_names, self.values)]
        else:
            lines = [f"{'emotion':<10} {'prob':>6}  decision"]
            lines += [
                f"{name:<10} {prob:6.3f}  {'yes' if decided else 'no'}"
                for name, prob, decided in zip(self.class_names, self.probabilities, self.decisions)
            ]
        lines.append(f"(faces found in {self.faces_found} of {self.frames} sampled frames)")
        if self.note:
            lines.append(f"({self.note})")
        return "\n".join(lines)


def predict_video(
    ckpt: Path | str,
    video: Path | str,
    text: str,
    start: float | None = None,
    end: float | None = None,
    device: str = "cpu",
    audio: Path | str | None = None,
) -> Prediction:
    """Per-emotion probabilities and thresholded decisions for ``video`` over [start, end] seconds.

    The audio comes from the video's audio track, or from ``audio`` (any file ffmpeg reads, on the
    same timeline) when the recording keeps it separately, as IEMOCAP and CMU-MOSEI do. Inputs are
    checked before the checkpoint is loaded.
    """
    _check_span(start, end)
    if not text.strip():
        raise UsageError("the transcript is empty: pass --text or --transcript")
    target = resolve_device(device)
    video = Path(video)
    info = probe_video(video)
    audio, note = audio_source(video, audio)
    checkpoint = load_checkpoint(ckpt)
    check_end_to_end(checkpoint, ckpt)
    config, model = model_from_checkpoint(checkpoint, ckpt)
    crops, found = _face_crops(video, info, start, end, config.data.img_interval_ms, target)
    samples = read_audio(audio, start, end, min_samples=N_FFT)
    item = {
        "id": video.stem,
        "text": text,
        "label": torch.zeros(len(checkpoint["class_names"])),
        "faces": normalise_faces(crops),
        "audio": _mel_chunks(samples, config),
    }
    batch = collate([item], load_tokenizer(config.model.text_model), config.model.text_max_length)
    outputs = run_model(model, batch, target, config)[0]
    names, faces = list(checkpoint["class_names"]), (int(found.sum()), len(found))
    if checkpoint["thresholds"] is None:  # a regression task: the outputs are the predictions
        return Prediction(names, None, None, *faces, note, values=outputs.tolist())
    probabilities = torch.sigmoid(outputs)
    thresholds = torch.as_tensor(checkpoint["thresholds"], dtype=probabilities.dtype)
    return Prediction(names, probabilities.tolist(), (probabilities >= thresholds).tolist(), *faces, note)


def run_model(model: nn.Module, batch: Batch, device: torch.device, config: ExperimentConfig) -> torch.Tensor:
    """float32 logits (on CPU) of ``model`` on ``batch``, both moved to ``device`` first; autocast as in
    evaluation (bf16 on CUDA when ``train.bf16``), so predictions match ``e2e eval``'s thresholds."""
    model = model.to(device).eval()
    mixed = autocast(config, device) if device.type == "cuda" else contextlib.nullcontext()  # eval's: CUDA only
    with torch.no_grad(), mixed:
        logits = model(batch.to(device)).logits
    return logits.float().cpu()


def _check_span(start: float | None, end: float | None) -> None:
    if start is not None and start < 0:
        raise UsageError(f"--start {start} is before the start of the video: it must be >= 0")
    if end is not None and end <= (start or 0.0):
        raise UsageError(f"--start {start or 0.0} must be before --end {end}")


def check_end_to_end(checkpoint: dict, source: Path | str) -> None:
    """ConfigError unless the checkpoint's model reads raw frames, waveforms and text (not feature caches)."""
    name = checkpoint["config"]["model"]["name"]
    if model_inputs(name) == "features":
        end_to_end = [model for model in shipped_models() if model_inputs(model) != "features"]
        raise ConfigError(
            f"{source}: predict needs an end-to-end model ({', '.join(end_to_end)}); this "
            f"checkpoint holds {name!r}, which reads the two-stage feature cache of a corpus"
        )


def audio_source(video: Path, audio: Path | str | None) -> tuple[Path, str]:
    """(the file to take the audio from, a note saying why when it is not ``video`` or ``audio``).

    A video without an audio stream falls back on its clip's wav in a reorganized folder
    (``DATA/video/<id>.mp4`` -> ``DATA/audio/<id>.wav``); without one it is a MediaError that
    suggests ``--audio``.
    """
    if audio is not None:
        if not Path(audio).is_file():
            raise MediaError(f"{audio}: audio file is missing")
        return Path(audio), ""
    if has_audio_stream(video):
        return video, ""
    clip_wav = video.parent.parent / "audio" / f"{video.stem}.wav"
    if video.parent.name == "video" and (video.parent.parent / "manifest.jsonl").is_file() and clip_wav.is_file():
        return clip_wav, f"{video} has no audio stream: audio from its reorganized clip {clip_wav}"
    raise MediaError(
        f"{video}: the video has no audio stream; pass the recording's audio with --audio FILE "
        f"(a reorganized clip's is DATA/audio/<id>.wav)"
    )


def has_audio_stream(media: Path) -> bool:
    """Whether ffmpeg lists an audio stream in ``media`` (``ffmpeg -i``: there is no ffprobe)."""
    listing = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(media)],
        capture_output=True,
        text=True,
        errors="replace",
    )
    return _AUDIO_STREAM.search(listing.stderr) is not None


def _face_crops(
    video: Path, info: VideoInfo, start: float | None, end: float | None, img_interval_ms: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    first, stop = frame_span(start or 0.0, info.duration if end is None else end, info)
    if stop <= first:
        raise MediaError(f"{video}: no frames in [{start}, {end}] (video lasts {info.duration:.2f} s)")
    indices = [first + index for index in sample_frame_indices(stop - first, info.fps, img_interval_ms)]
    return FaceCropper(device=device).crops(read_frames(video, indices))  # MTCNN on the prediction's device


def _mel_chunks(samples: np.ndarray, config: ExperimentConfig) -> torch.Tensor:
    return mel_chunks(mel_spectrogram(torch.from_numpy(samples)), log=config.data.audio_features == "log_mel")
