"""Mel spectrograms and the 400 ms mel "images" the audio CNN consumes.

The transform is torchaudio's ``MelSpectrogram`` defaults at 16 kHz: 25 ms Hann window (n_fft 400), 12.5 ms
hop, 128 HTK mel bands without filter normalisation, power 2, centred frames with reflect padding.
torchaudio is used where it imports and runs; on the CPU machines it does not (CUDA-linked build), so an
identical pure-torch path (``torch.stft`` + an HTK filterbank) takes over.
"""

from __future__ import annotations

import functools
import logging
import math

import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 200
N_MELS = 128
CHUNK_FRAMES = 32  # 32 hops of 12.5 ms = 400 ms per chunk
LOG_EPS = 1e-6
STD_FLOOR = 1e-5

logger = logging.getLogger(__name__)


def mel_spectrogram(samples: torch.Tensor) -> torch.Tensor:
    """Power mel spectrogram of 16 kHz audio: (N,) -> (128, frames) or (B, N) -> (B, 128, frames).

    frames = 1 + N // 200. N must exceed 200 samples (reflect padding needs it).
    """
    samples = samples if samples.is_floating_point() else samples.float()
    transform = _torchaudio_transform()
    if transform is not None:
        return transform.to(samples.device)(samples)
    return _torch_mel(samples)


def mel_chunks(mel: torch.Tensor, log: bool, chunk_frames: int = CHUNK_FRAMES) -> torch.Tensor:
    """Cut a (128, T) power mel into A = max(1, ceil(T / chunk_frames)) images of shape (1, 128, chunk_frames).

    ``log=False`` keeps raw power (the official code's input). ``log=True`` takes ``log(mel + 1e-6)`` and
    normalises per utterance with one scalar mean and std over all bands and frames of the utterance
    (``(x - mean) / max(std, 1e-5)``), so loudness and recording gain are removed while the spectral shape,
    which carries emotion cues, is kept. Normalisation happens before padding: the zero padding on the right
    of the last chunk equals the utterance mean in log mode and silence in power mode.
    """
    mel = mel.float()
    if log and mel.shape[-1] > 0:
        mel = torch.log(mel + LOG_EPS)
        mel = (mel - mel.mean()) / mel.std(unbiased=False).clamp(min=STD_FLOOR)
    num_chunks = max(1, math.ceil(mel.shape[-1] / chunk_frames))
    padded = torch.zeros(mel.shape[0], num_chunks * chunk_frames, dtype=mel.dtype, device=mel.device)
    padded[:, : mel.shape[-1]] = mel
    return padded.reshape(mel.shape[0], num_chunks, chunk_frames).permute(1, 0, 2).unsqueeze(1).contiguous()


@functools.cache
def _torchaudio_transform():
    """torchaudio's MelSpectrogram if torchaudio imports and runs here, else None (checked once)."""
    try:
        import torchaudio

        transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=N_FFT,
            win_length=N_FFT,
            hop_length=HOP_LENGTH,
            n_mels=N_MELS,
            power=2.0,
            center=True,
            pad_mode="reflect",
            norm=None,
            mel_scale="htk",
        )
        transform(torch.zeros(N_FFT))
    except Exception as error:  # noqa: BLE001  (a broken build fails with OSError, RuntimeError, ...)
        logger.debug("torchaudio unavailable (%s: %s); using the pure-torch mel", type(error).__name__, error)
        return None
    return transform


def _torch_mel(samples: torch.Tensor) -> torch.Tensor:
    window = torch.hann_window(N_FFT, dtype=samples.dtype, device=samples.device)
    spec = (
        torch.stft(
            samples,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=N_FFT,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        .abs()
        .pow(2)
    )
    filterbank = htk_filterbank(str(samples.device), samples.dtype)
    return torch.matmul(spec.transpose(-1, -2), filterbank).transpose(-1, -2)


@functools.cache
def htk_filterbank(device: str, dtype: torch.dtype) -> torch.Tensor:
    """(n_fft//2 + 1, 128) triangular filters, equally spaced on the HTK mel scale from 0 Hz to 8 kHz."""
    freqs = torch.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2, dtype=torch.float64)
    hz_points = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)
    lower, centre, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.minimum(rising, falling).clamp(min=0).to(device=device, dtype=dtype)


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)
