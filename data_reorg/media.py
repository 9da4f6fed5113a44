"""Video and audio cutting. Each source video is decoded once, by one ffmpeg process, for all of its clips.

:func:`read_audio` is the one audio reader of the project (clips, source wavs, media files' audio tracks).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import ffmpeg
import imageio_ffmpeg
import numpy as np
import soundfile as sf

from data_reorg.io import atomic_path, raise_if_disk_full, temp_path_for

SAMPLE_RATE = 16000
CLIP_QUALITY = 5  # MPEG-4 qscale: 1 best .. 31 worst
CLIP_ENCODER = {"vcodec": "mpeg4", "threads": 1, "q:v": CLIP_QUALITY}


class MediaError(Exception):
    """A source file is missing, unreadable or yields nothing for the requested interval."""


class AudioReadError(MediaError):
    """:func:`read_audio` cannot give samples of ``path``; ``reason`` says why. Picklable (worker processes)."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


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
    written under a temporary name and renamed only when it holds exactly its frames, so an
    interrupted run never leaves a partial clip behind and every kept clip is frame-exact.

    A source that decodes only partly (a truncated file) costs one more pass, to count its decodable
    frames: the clips inside that part are kept (cut again if the first pass failed as a whole), the
    others get one reason that says where the video stops decoding.
    """
    written, failure = _encode_cuts(src, cuts, info)
    missing = [cut for cut in cuts if cut.key not in written]
    if not missing:
        return written
    decodable = decodable_frames(src)
    inside = [cut for cut in missing if cut.stop <= decodable]
    if inside and failure is not None:  # the first pass failed as a whole: cut the clips inside again
        again, failure = _encode_cuts(src, inside, info)
        written.update(again)
    beyond = _beyond_decodable(src, decodable, info, failure)
    results: dict[str, int | MediaError] = dict(written)
    for cut in missing:
        if cut.key not in written:
            results[cut.key] = (
                beyond
                if cut.stop > decodable
                else failure or MediaError(f"{src}: frames [{cut.first}, {cut.stop}) did not all decode")
            )
    return results


def _beyond_decodable(src: Path, decodable: int, info: VideoInfo, failure: MediaError | None) -> MediaError:
    """The one reason of every clip of ``src`` that ends after its first ``decodable`` frames."""
    if decodable == 0:
        return failure or MediaError(f"{src}: no frame of the video decodes")
    return MediaError(
        f"{src}: the video decodes only up to frame {decodable} ({decodable / info.fps:.3f} s) "
        f"of the {info.num_frames} its header declares (truncated or damaged file); "
        "clips past that point are dropped"
    )


def _encode_cuts(src: Path, cuts: list[VideoCut], info: VideoInfo) -> tuple[dict[str, int], MediaError | None]:
    """One ffmpeg pass over ``src`` for ``cuts``: the frame-exact clips renamed into place (key -> frames),
    and the error that stopped ffmpeg, if one did (then no clip is kept)."""
    temps = {cut.key: temp_path_for(cut.out_path) for cut in cuts}
    branches = ffmpeg.input(str(src)).video.filter_multi_output("split", len(cuts))
    outputs = []
    for index, cut in enumerate(cuts):
        stream = branches[index].trim(start_frame=cut.first, end_frame=cut.stop).setpts("PTS-STARTPTS")
        if cut.crop is not None:
            stream = stream.crop(*_crop_pixels(cut.crop, info))
        outputs.append(stream.output(str(temps[cut.key]), fps_mode="passthrough", **CLIP_ENCODER))
    try:
        ffmpeg.merge_outputs(*outputs).global_args("-nostdin", "-v", "error").overwrite_output().run(
            cmd=imageio_ffmpeg.get_ffmpeg_exe(), capture_stdout=True, capture_stderr=True
        )
        frames = {cut.key: _finish_cut(cut, temps[cut.key]) for cut in cuts}
        return {key: count for key, count in frames.items() if count is not None}, None
    except ffmpeg.Error as error:
        stderr = error.stderr.decode("utf-8", "replace")
        raise_if_disk_full(stderr, cuts[0].out_path.parent)
        message = stderr.strip().splitlines()[-1:] or ["ffmpeg failed"]
        return {}, MediaError(f"{src}: cannot decode video ({message[0]})")
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def _finish_cut(cut: VideoCut, tmp: Path) -> int | None:
    """Rename a clip into place if it holds exactly frames [first, stop); its frame count, else None."""
    try:
        frames = probe_video(tmp).num_frames
    except MediaError:
        return None
    if frames != cut.stop - cut.first:
        return None
    os.replace(tmp, cut.out_path)
    return frames


def decodable_frames(src: Path) -> int:
    """How many frames of ``src`` decode, from the first up to the first damaged packet or frame.

    One full decode pass (to ffmpeg's null muxer, every decoded frame passed through), stopped at the
    first error, so the count is the frame index up to which trims of the same stream are exact.
    """
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-xerror",
        "-err_detect",
        "explode",
        "-i",
        str(src),
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-f",
        "null",
        "-progress",
        "pipe:1",
        "-nostats",
        "-",
    ]
    progress = subprocess.run(command, capture_output=True, text=True, errors="replace").stdout
    counts = re.findall(r"^frame=(\d+)$", progress, flags=re.MULTILINE)
    return int(counts[-1]) if counts else 0


def _crop_pixels(crop: tuple[float, float, float, float], info: VideoInfo) -> tuple[int, int, int, int]:
    """(x, y, w, h) in pixels from frame fractions, with even sizes as 4:2:0 encoders require."""
    x, y, w, h = crop
    width, height = round(w * info.width), round(h * info.height)
    return round(x * info.width), round(y * info.height), width - width % 2, height - height % 2


def read_audio(
    path: Path | str, start: float | None = None, end: float | None = None, channel: int = 0, *, min_samples: int = 1
) -> np.ndarray:
    """Float32 mono samples at 16 kHz of ``path`` over [start, end) seconds (whole file by default).

    The one audio reader of the project: a sound file (wav, flac, ... by suffix) is read by libsndfile,
    ``channel`` picks one of its channels (clamped to the last one that exists) and other rates are
    resampled with a polyphase filter; any other file (mp4, avi, mkv, ...) is a media container whose
    first audio stream ffmpeg decodes, downmixes to mono and resamples. Fewer than ``min_samples``
    samples (e.g. one analysis window) is an error. Every failure is an :class:`AudioReadError` that
    names the file: missing, unreadable, no audio stream, or no audio in the interval.
    """
    if not Path(path).is_file():
        raise AudioReadError(path, "audio file is missing")
    if _is_sound_file(path):
        samples = _read_sound_file(path, start, end, channel)
    else:
        samples = _decode_audio_track(path, start, end)
    if samples.size < min_samples:
        found = f"only {samples.size} audio samples" if samples.size else "no audio samples"
        needed = f", fewer than the {min_samples} needed" if samples.size else ""
        raise AudioReadError(path, f"{found} in [{start}, {end}){needed}")
    return samples


def _is_sound_file(path: Path | str) -> bool:
    return Path(path).suffix.lstrip(".").upper() in sf.available_formats()


def _read_sound_file(path: Path | str, start: float | None, end: float | None, channel: int) -> np.ndarray:
    try:
        info = sf.info(str(path))
        first = 0 if start is None else max(0, int(round(start * info.samplerate)))
        stop = info.frames if end is None else min(info.frames, int(round(end * info.samplerate)))
        if stop <= first:
            raise AudioReadError(path, f"no audio in [{start}, {end}) (file is {info.duration:.3f} s)")
        samples, rate = sf.read(str(path), start=first, stop=stop, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioReadError(path, f"unreadable audio ({error})") from error
    mono = samples[:, min(channel, samples.shape[1] - 1)]
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly  # here: importing scipy.signal costs each worker ~2 CPU-s

        divisor = math.gcd(int(rate), SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // divisor, int(rate) // divisor).astype(np.float32)
    return mono


def _decode_audio_track(path: Path | str, start: float | None, end: float | None) -> np.ndarray:
    """The first audio stream of a media container over [start, end), decoded to 16 kHz mono by ffmpeg."""
    first = max(0.0, start or 0.0)
    if end is not None and end <= first:
        return np.zeros(0, np.float32)  # ffmpeg reads "-t 0" as no limit at all
    options = {"ss": first} if first else {}
    if end is not None:
        options["t"] = end - first
    try:
        raw, _ = (
            ffmpeg.input(str(path), **options)
            .audio.output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE)
            .global_args("-nostdin", "-v", "error")
            .run(cmd=imageio_ffmpeg.get_ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as error:
        raise _audio_track_error(path, error.stderr.decode("utf-8", "replace")) from error
    return np.frombuffer(raw, dtype=np.float32).copy()


def _audio_track_error(path: Path | str, stderr: str) -> AudioReadError:
    if "matches no streams" in stderr:  # ffmpeg's answer to "-map 0:a" on a file without audio
        return AudioReadError(path, "the file has no audio stream")
    detail = stderr.strip().splitlines()[-1:] or ["ffmpeg failed"]
    return AudioReadError(path, f"cannot decode the audio track ({detail[0]})")


def write_wav(path: Path, samples: np.ndarray) -> None:
    """16 kHz mono PCM16 wav, written to a temporary name and renamed."""
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
