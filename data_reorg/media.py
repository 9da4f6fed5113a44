"""Video and audio cutting. Each source video is decoded once, in order, for all of its clips."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from data_reorg.io import atomic_path, temp_path_for

SAMPLE_RATE = 16000
CLIP_FOURCC = "mp4v"


class MediaError(Exception):
    """A source file is missing, unreadable or yields nothing for the requested interval."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


@dataclass(frozen=True)
class VideoCut:
    """Frames [first, stop) of a source video, cropped to ``crop`` or kept whole.

    ``crop`` = (x, y, w, h) as fractions of the frame size, e.g. (0.5, 0, 0.5, 1) is the right half.
    """

    key: str
    first: int
    stop: int
    out_path: Path
    crop: tuple[float, float, float, float] | None = None


def probe_video(path: Path) -> VideoInfo:
    if not Path(path).is_file():
        raise MediaError(f"{path}: video file is missing")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MediaError(f"{path}: cannot open video (corrupt or unsupported container)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        info = VideoInfo(
            fps=float(fps),
            num_frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()
    if not (info.fps > 0 and info.num_frames > 0 and info.width > 0 and info.height > 0):
        raise MediaError(f"{path}: no decodable video stream (fps={info.fps}, frames={info.num_frames})")
    return info


def frame_span(start: float, end: float, info: VideoInfo) -> tuple[int, int]:
    """Frames whose timestamps i/fps fall in [start, end), clipped to the video.

    An interval shorter than one frame period still yields the frame nearest to ``start``;
    an interval that begins after the last frame yields an empty span.
    """
    first = max(0, math.ceil(start * info.fps - 1e-6))
    stop = min(info.num_frames, math.ceil(end * info.fps - 1e-6))
    if stop <= first:
        nearest = min(max(0, round(start * info.fps)), info.num_frames - 1)
        if start < info.duration:
            return nearest, nearest + 1
        return first, first
    return first, stop


def cut_video(src: Path, cuts: list[VideoCut], fps: float) -> dict[str, int | MediaError]:
    """Decode ``src`` once and write every cut; returns frames written per key, or the error for that key.

    Frames are read in order up to the last one any cut needs. Each clip is written under a temporary
    name and renamed when complete, so an interrupted run never leaves a partial clip behind.
    A cut that got no decodable frame fails; one cut short by a truncated source keeps what was read.
    """
    capture = cv2.VideoCapture(str(src))
    if not capture.isOpened():
        return {cut.key: MediaError(f"{src}: cannot open video") for cut in cuts}
    writers: dict[str, tuple[cv2.VideoWriter, Path]] = {}
    written = {cut.key: 0 for cut in cuts}
    try:
        for index in range(max(cut.stop for cut in cuts)):
            if not capture.grab():
                break
            active = [cut for cut in cuts if cut.first <= index < cut.stop]
            if not active:
                continue
            ok, frame = capture.retrieve()
            if not ok:
                break
            for cut in active:
                image = _crop(frame, cut.crop)
                if cut.key not in writers:
                    writers[cut.key] = _open_writer(cut.out_path, fps, image.shape[1], image.shape[0])
                writers[cut.key][0].write(image)
                written[cut.key] += 1
        for writer, _ in writers.values():
            writer.release()
        for cut in cuts:
            if cut.key in writers:
                os.replace(writers[cut.key][1], cut.out_path)
    finally:
        capture.release()
        for writer, tmp in writers.values():
            writer.release()
            tmp.unlink(missing_ok=True)
    return {
        cut.key: written[cut.key] or MediaError(f"{src}: no frame decoded in frames [{cut.first}, {cut.stop})")
        for cut in cuts
    }


def _crop(frame: np.ndarray, crop: tuple[float, float, float, float] | None) -> np.ndarray:
    if crop is None:
        return frame
    height, width = frame.shape[:2]
    x, y, w, h = crop
    left, top = round(x * width), round(y * height)
    return np.ascontiguousarray(frame[top : top + round(h * height), left : left + round(w * width)])


def _open_writer(final: Path, fps: float, width: int, height: int) -> tuple[cv2.VideoWriter, Path]:
    tmp = temp_path_for(final)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*CLIP_FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise MediaError(f"{final}: OpenCV cannot open a {CLIP_FOURCC} writer")
    return writer, tmp


def read_audio(path: Path, start: float | None = None, end: float | None = None,
               channel: int = 0) -> np.ndarray:
    """Float32 mono samples at 16 kHz of ``path`` over [start, end) seconds (whole file by default).

    ``channel`` picks one channel of a multi-channel file (clamped to the last one that exists);
    other rates are resampled with a polyphase filter.
    """
    if not Path(path).is_file():
        raise MediaError(f"{path}: audio file is missing")
    try:
        info = sf.info(str(path))
        first = 0 if start is None else max(0, int(round(start * info.samplerate)))
        stop = info.frames if end is None else min(info.frames, int(round(end * info.samplerate)))
        if stop <= first:
            raise MediaError(f"{path}: no audio in [{start}, {end}) (file is {info.duration:.3f} s)")
        samples, rate = sf.read(str(path), start=first, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise MediaError(f"{path}: unreadable audio ({error})") from error
    mono = samples[:, min(channel, samples.shape[1] - 1)]
    if rate != SAMPLE_RATE:
        divisor = math.gcd(int(rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // divisor, int(rate) // divisor).astype(np.float32)
    if mono.size == 0:
        raise MediaError(f"{path}: no audio samples in [{start}, {end})")
    return mono


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16 kHz mono PCM16 wav, written to a temporary name and renamed."""
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
