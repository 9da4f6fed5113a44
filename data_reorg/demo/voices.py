"""Voices and words: pyannote's sample speech turned into one voice per class, and class phrases."""

from __future__ import annotations

import importlib.util
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from data_reorg.media import SAMPLE_RATE

# Per class: speaker of pyannote's sample, speed/pitch factor, and the centre (Hz) of a +RESONANCE_DB
# formant-like peak added to the timbre. Pitch alone is a weak cue: the two speakers sound alike (both
# ~200 Hz F0, the same spectral centroid), a speaker's own intonation spreads F0 by +-15 %, and the
# sample is telephone speech (nothing above ~3.5 kHz), so neighbouring factors overlap. The resonances
# lie inside every class's band (<= 3.5 kHz * factor), >= 0.6 octave apart, and classes that are
# neighbours in pitch are >= 1.2 octaves apart in resonance: each class has its own clearly different voice.
VOICES = {
    "sad": ("Diane", 0.62, 700),
    "neu": ("Sheila", 0.76, 1630),
    "fru": ("Diane", 0.93, 300),
    "ang": ("Sheila", 1.14, 2500),
    "hap": ("Diane", 1.4, 460),
    "exc": ("Sheila", 1.72, 1070),
}
RESONANCE_DB = 18.0
RESONANCE_OCTAVES = 0.3  # standard deviation of the Gaussian peak on a log-frequency axis
CLASS_PHRASES = {
    "ang": ("furious", "unacceptable", "this is outrageous", "I hate this", "get out of here", "ridiculous"),
    "exc": ("amazing", "incredible", "I can't wait", "this is fantastic", "unbelievable news", "awesome"),
    "fru": ("annoying", "again and again", "this is useless", "I give up", "it never works", "pointless"),
    "hap": ("wonderful", "lovely", "I'm so glad", "delightful", "what a nice day", "I'm pleased"),
    "neu": ("okay", "the forms", "on Tuesday", "at the office", "the second line", "I see"),
    "sad": ("I miss her", "lonely", "I'm so sorry", "it's all gone", "heartbroken", "I lost everything"),
}
CLASS_PUNCT = {"ang": "!", "exc": "!", "fru": ".", "hap": "!", "neu": ".", "sad": "."}


def load_voices() -> tuple[dict[str, np.ndarray], list[str]]:
    """(speaker -> speech, filler sentences) from pyannote-audio's sample dialogue (a pip package)."""
    return _load_sample_speech(_pyannote_sample_dir())


def _pyannote_sample_dir() -> Path:
    """pyannote-audio's sample folder, found without importing pyannote.audio (its deps may be absent)."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the demo corpus needs the pyannote-audio wheel for its sample dialogue: "
            "pip install --no-deps pyannote-audio"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "sample"


def _load_sample_speech(folder: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each speaker's turns (from ``sample.stm``) concatenated, and the turn texts as filler."""
    audio, rate = sf.read(str(folder / "sample.wav"), dtype="float32")
    turns: dict[str, list[np.ndarray]] = {}
    filler = []
    for line in (folder / "sample.stm").read_text(encoding="utf-8").splitlines():
        _, _, speaker, start, end, text = line.split(maxsplit=5)
        turns.setdefault(speaker, []).append(audio[round(float(start) * rate) : round(float(end) * rate)])
        filler.append(text.strip())
    voices = {speaker: np.concatenate(parts) for speaker, parts in turns.items()}
    return {speaker: voice / np.abs(voice).max() for speaker, voice in voices.items()}, filler


def class_speech(voices: dict[str, np.ndarray], cls: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """``num_samples`` of the class voice: a random stretch of its speaker, resampled by its factor and
    coloured by its resonance, peak-normalised times a random gain."""
    speaker, factor, resonance = VOICES[cls]
    ratio = Fraction(factor).limit_denominator(50)
    source = voices[speaker]
    need = math.ceil(num_samples * ratio) + 64
    window = np.take(source, np.arange(need) + rng.integers(len(source)), mode="wrap")
    speech = resample_poly(window, ratio.denominator, ratio.numerator)[:num_samples]
    speech = _resonate(np.pad(speech, (0, num_samples - len(speech))), resonance)
    fade = np.minimum(1, np.minimum(np.arange(num_samples), np.arange(num_samples)[::-1]) / 128)
    peak = max(float(np.abs(speech).max()), 1e-6)
    return (speech * fade * (rng.uniform(0.4, 0.8) / peak)).astype(np.float32)


def _resonate(speech: np.ndarray, centre_hz: float) -> np.ndarray:
    """``speech`` through a zero-phase filter whose gain (dB) is a Gaussian peak on log frequency."""
    frequencies = np.fft.rfftfreq(len(speech), 1 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(frequencies, 1.0) / centre_hz)
    gain_db = RESONANCE_DB * np.exp(-0.5 * (octaves / RESONANCE_OCTAVES) ** 2)
    return np.fft.irfft(np.fft.rfft(speech) * 10 ** (gain_db / 20), len(speech))


def class_text(rng: np.random.Generator, cls: str, filler: list[str]) -> str:
    """One or two class phrases with a neutral filler sentence before or after them."""
    first, second = rng.choice(CLASS_PHRASES[cls], size=2, replace=False)
    lead = filler[rng.integers(len(filler))]
    punct = CLASS_PUNCT[cls]
    first = first[0].upper() + first[1:]
    choice = rng.integers(3)
    if choice == 0:
        return f"{lead} {first}{punct}"
    if choice == 1:
        return f"{first}, {second}{punct} {lead}"
    return f"{first}{punct} {lead} {second[0].upper() + second[1:]}{punct}"
