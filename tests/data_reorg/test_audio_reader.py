"""``data_reorg.media.read_audio``, the project's one audio reader: sound files and media files' audio
tracks, and one error type (AudioReadError, a MediaError) whose message names the file."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import soundfile as sf

from data_reorg.media import SAMPLE_RATE, AudioReadError, MediaError, read_audio, write_wav

TONE_HZ = 440


def _tone(seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


def _peak_hz(samples: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(samples)))) * SAMPLE_RATE / len(samples)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """A 2 s video with a 48 kHz AAC tone, the same video without audio, and a file that is no media."""
    folder = tmp_path_factory.mktemp("media")
    files = {"with_audio": folder / "talk.mp4", "silent": folder / "silent.mp4", "corrupt": folder / "broken.mp4"}
    video = ["-f", "lavfi", "-i", "color=size=64x64:rate=10:duration=2"]
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={TONE_HZ}:sample_rate=48000:duration=2",
        *video,
        "-shortest",
        "-c:v",
        "mpeg4",
        "-c:a",
        "aac",
        str(files["with_audio"]),
    )
    _ffmpeg(*video, "-c:v", "mpeg4", str(files["silent"]))
    files["corrupt"].write_bytes(b"not a media file\n" * 64)
    return files


def test_a_16k_mono_wav_clip_is_read_whole(tmp_path):
    clip = tmp_path / "clip.wav"
    write_wav(clip, _tone(0.5, SAMPLE_RATE))
    samples = read_audio(clip)
    assert samples.dtype == np.float32 and samples.shape == (SAMPLE_RATE // 2,)
    np.testing.assert_allclose(samples, _tone(0.5, SAMPLE_RATE), atol=1 / 2**14)


def test_a_wav_span_of_one_channel_is_resampled_to_16k(tmp_path):
    stereo = tmp_path / "dialog.wav"
    sf.write(str(stereo), np.stack([np.zeros(48000, np.float32), _tone(1.0, 48000)], axis=1), 48000)
    samples = read_audio(stereo, 0.25, 0.75, channel=1)
    assert samples.shape == (SAMPLE_RATE // 2,)
    assert abs(_peak_hz(samples) - TONE_HZ) < 5
    assert not read_audio(stereo, channel=0).any()


def test_the_audio_track_of_a_media_file_is_decoded_whole_or_between_times(media):
    whole = read_audio(media["with_audio"])
    span = read_audio(media["with_audio"], 0.5, 1.5)
    assert whole.dtype == span.dtype == np.float32
    assert abs(len(whole) - 2 * SAMPLE_RATE) <= SAMPLE_RATE // 20
    assert abs(len(span) - SAMPLE_RATE) <= SAMPLE_RATE // 100
    assert abs(_peak_hz(span) - TONE_HZ) < 5
    assert len(read_audio(media["with_audio"], 1.5)) == pytest.approx(SAMPLE_RATE / 2, abs=SAMPLE_RATE // 20)


@pytest.mark.parametrize(
    "name, reason",
    [
        ("missing", "audio file is missing"),
        ("silent", "the file has no audio stream"),
        ("corrupt", "cannot decode the audio track"),
        ("garbage_wav", "unreadable audio"),
    ],
)
def test_every_failure_is_one_error_type_that_names_the_file(media, tmp_path, name, reason):
    paths = {**media, "missing": tmp_path / "gone.mp4", "garbage_wav": tmp_path / "garbage.wav"}
    paths["garbage_wav"].write_bytes(b"RIFF but not really a wav file")
    with pytest.raises(AudioReadError) as raised:
        read_audio(paths[name])
    error = raised.value
    assert isinstance(error, MediaError)
    assert str(error).startswith(f"{paths[name]}: {reason}")
    assert error.path == paths[name] and error.reason.startswith(reason)


def test_too_few_samples_is_an_error_that_names_the_file(media, tmp_path):
    clip = tmp_path / "short.wav"
    write_wav(clip, _tone(0.01, SAMPLE_RATE))
    with pytest.raises(AudioReadError, match=rf"^{clip}: only 160 audio samples .*fewer than the 400 needed"):
        read_audio(clip, min_samples=400)
    with pytest.raises(AudioReadError, match=rf"^{media['with_audio']}: no audio samples in \[1.0, 1.0\)"):
        read_audio(media["with_audio"], 1.0, 1.0)
    with pytest.raises(AudioReadError, match=rf"^{clip}: no audio in \[5.0, None\)"):
        read_audio(clip, 5.0)


def test_the_error_survives_a_trip_to_a_worker_process_and_back(tmp_path):
    error = pickle.loads(pickle.dumps(AudioReadError(tmp_path / "a.wav", "audio file is missing")))
    assert (error.path, error.reason, str(error)) == (
        tmp_path / "a.wav",
        "audio file is missing",
        f"{tmp_path / 'a.wav'}: audio file is missing",
    )
