"""``e2e predict``: run a trained checkpoint on a new video, with the training-time preprocessing.

Frames are sampled every ``img_interval_ms`` from the clip start and cropped with MTCNN (centre crop when
no face is found), the audio track is decoded by ffmpeg to 16 kHz mono, and both go through the same
normalisation and mel chunking as the cached training data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import imageio_ffmpeg
import numpy as np
import torch

from data_reorg.media import MediaError, SAMPLE_RATE, frame_span, probe_video
from e2e.data import collate, normalise_faces
from e2e.features.audio import mel_chunks, mel_spectrogram
from e2e.features.faces import FaceCropper, read_frames, sample_frame_indices
from e2e.features.text import load_tokenizer
from e2e.train import load_checkpoint, model_from_checkpoint


@dataclass
class Prediction:
    class_names: list[str]
    probabilities: list[float]
    decisions: list[bool]
    faces_found: int
    frames: int

    def format(self) -> str:
        lines = [f"{'emotion':<10} {'prob':>6}  decision"]
        lines += [f"{name:<10} {prob:6.3f}  {'yes' if decided else 'no'}"
                  for name, prob, decided in zip(self.class_names, self.probabilities, self.decisions)]
        lines.append(f"(faces found in {self.faces_found} of {self.frames} sampled frames)")
        return "\n".join(lines)


def predict_video(ckpt: Path | str, video: Path | str, text: str, start: float | None = None,
                  end: float | None = None, device: str = "cpu", audio: Path | str | None = None) -> Prediction:
    """Per-emotion probabilities and thresholded decisions for ``video`` over [start, end] seconds.

    The audio comes from the video's audio track, or from ``audio`` (any file ffmpeg reads, on the
    same timeline) when the recording keeps it separately, as IEMOCAP and CMU-MOSEI do.
    """
    if not text.strip():
        raise ValueError("the transcript is empty: pass --text or --transcript")
    checkpoint = load_checkpoint(ckpt)
    config, model = model_from_checkpoint(checkpoint, ckpt)
    crops, found = _face_crops(Path(video), start, end, config.data.img_interval_ms, device)
    samples = _audio_track(Path(audio or video), start, end)
    item = {"id": Path(video).stem, "text": text, "label": torch.zeros(len(checkpoint["class_names"])),
            "faces": normalise_faces(crops),
            "audio": mel_chunks(mel_spectrogram(torch.from_numpy(samples)),
                                log=config.data.audio_features == "log_mel")}
    batch = collate([item], load_tokenizer(config.model.text_model), config.model.text_max_length)
    with torch.no_grad():
        probabilities = torch.sigmoid(model(batch.to(device) if device != "cpu" else batch).logits)[0].cpu()
    thresholds = torch.as_tensor(checkpoint["thresholds"], dtype=probabilities.dtype)
    return Prediction(list(checkpoint["class_names"]), probabilities.tolist(),
                      (probabilities >= thresholds).tolist(), int(found.sum()), len(found))


def _face_crops(video: Path, start: float | None, end: float | None, img_interval_ms: int,
                device: str) -> tuple[np.ndarray, np.ndarray]:
    info = probe_video(video)
    first, stop = frame_span(start or 0.0, info.duration if end is None else end, info)
    if stop <= first:
        raise MediaError(f"{video}: no frames in [{start}, {end}] (video lasts {info.duration:.2f} s)")
    indices = [first + index for index in sample_frame_indices(stop - first, info.fps, img_interval_ms)]
    return FaceCropper(device=device).crops(read_frames(video, indices))


def _audio_track(media: Path, start: float | None, end: float | None) -> np.ndarray:
    """The audio of ``media`` over [start, end] as 16 kHz mono float32, decoded by ffmpeg."""
    options = {"ss": start} if start else {}
    if end is not None:
        options["t"] = end - (start or 0.0)
    try:
        raw, _ = (ffmpeg.input(str(media), **options)
                  .output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE)
                  .run(cmd=imageio_ffmpeg.get_ffmpeg_exe(), capture_stdout=True, capture_stderr=True))
    except ffmpeg.Error as error:
        detail = error.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["ffmpeg failed"]
        raise MediaError(f"{media}: cannot decode the audio track ({detail[0]})") from error
    samples = np.frombuffer(raw, dtype=np.float32).copy()
    if samples.size < 400:
        raise MediaError(f"{media}: the audio track has no usable audio in [{start}, {end}]")
    return samples
