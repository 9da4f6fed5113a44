"""Video and audio cutting. Each source video is decoded once, by one ffmpeg process, for all of its clips."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import ffmpeg
import imageio_ffmpeg
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from data_reorg.io import atomic_path, temp_path_for

SAMPLE_RATE = 16000
CLIP_QUALITY = 5  # MPEG-4 qscale: 1 best .. 31 worst


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


def cut_video(src: Path, cuts: list[VideoCut], info: VideoInfo) -> dict[str, int | MediaError]:
    """Decode ``src`` once and write every cut; returns frames written per key, or the error for that key.

    One ffmpeg process splits the decoded stream into a trim (by frame index) + crop branch per cut and
    encodes each to MPEG-4 Part 2 in an mp4 (fast, readable by OpenCV everywhere). Each clip is
    written under a temporary name and renamed once its frame count is checked, so an interrupted run
    never leaves a partial clip behind.
    """
    temps = {cut.key: temp_path_for(cut.out_path) for cut in cuts}
    branches = ffmpeg.input(str(src)).video.filter_multi_output("split", len(cuts))
    outputs = []
    for index, cut in enumerate(cuts):
        stream = branches[index].trim(start_frame=cut.first, end_frame=cut.stop).setpts("PTS-STARTPTS")
        if cut.crop is not None:
            stream = stream.crop(*_crop_pixels(cut.crop, info))
        outputs.append(stream.output(str(temps[cut.key]), vcodec="mpeg4", threads=1, fps_mode="passthrough",
                                     **{"q:v": CLIP_QUALITY}))
    try:
        ffmpeg.merge_outputs(*outputs).global_args("-nostdin", "-v", "error").overwrite_output().run(
            cmd=imageio_ffmpeg.get_ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        return {cut.key: _finish_cut(cut, temps[cut.key], src) for cut in cuts}
    except ffmpeg.Error as error:
        message = error.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["ffmpeg failed"]
        return {cut.key: MediaError(f"{src}: cannot decode video ({message[0]})") for cut in cuts}
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def _finish_cut(cut: VideoCut, tmp: Path, src: Path) -> int | MediaError:
    """Rename a finished clip into place if it holds frames; a truncated source may yield fewer."""
    try:
        frames = probe_video(tmp).num_frames
    except MediaError:
        return MediaError(f"{src}: no frame decoded in frames [{cut.first}, {cut.stop})")
    os.replace(tmp, cut.out_path)
    return frames


def _crop_pixels(crop: tuple[float, float, float, float], info: VideoInfo) -> tuple[int, int, int, int]:
    """(x, y, w, h) in pixels from frame fractions, with even sizes as 4:2:0 encoders require."""
    x, y, w, h = crop
    width, height = round(w * info.width), round(h * info.height)
    return round(x * info.width), round(y * info.height), width - width % 2, height - height % 2


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
