"""A miniature IEMOCAP and CMU-MOSEI in their exact raw formats, built from real faces and real speech.

No real corpus may ship with the project, so the demo and the end-to-end tests run on these. Every
utterance gets a hidden class (one of the six IEMOCAP classes), which decides three cues independently,
so that each modality alone can be learnt above chance:

* visual: the face on screen while the utterance is spoken, drawn from a per-class pool of real LFW
  faces (scikit-image) with a class-specific colour tint and lighting, animated with a pan/zoom jitter;
* audio: the voice, one speaker of pyannote's two-speaker sample dialogue resampled by a class-specific
  speed/pitch factor and coloured by a class-specific resonance (a formant-like peak in the timbre);
* text: class-specific phrases mixed with neutral filler taken from the same sample's transcript.

The trees also hold the traps of the real formats (codes outside the six classes, XX ids, junk files,
a latin-1 byte, a missing sentence wav, CSD rows out of clip order or matching nothing, negative starts,
segments past the media end, ...). ``demo_truth.json`` records every hidden class and every expected
drop with its reason. Which ids exist and where the traps sit is fixed; the seed decides the classes,
timings, faces, voices, words and backgrounds.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from data_reorg.io import atomic_path, write_text_atomic
from data_reorg.manifest import IEMOCAP_CLASSES, MOSEI_EMOTIONS
from data_reorg.media import SAMPLE_RATE, write_wav
from data_reorg.splits import load_split_lists

log = logging.getLogger("data_reorg.demo")

DEMO_VERSION = 3
CLASSES = IEMOCAP_CLASSES

# --- visual cues -------------------------------------------------------------------------------------
FACE_PX = 125             # face height at sprite scale 1 (MTCNN wants faces of 100-150 px in a half)
LFW_UPSCALE = 5           # the 25 px LFW crops hold the face alone: 25 * 5 = FACE_PX
LFW_PAD = 7               # replicated border around an LFW crop: context that face detectors need
SPRITE_PX = (25 + 2 * LFW_PAD) * LFW_UPSCALE
SKIN = (0.80, 0.90, 1.05)  # BGR gains that turn the grey LFW crops into a skin tone
CLASS_TINT = {             # BGR gains times a brightness: the colour cue a small CNN picks up. The six
    "ang": ((0.70, 0.70, 1.30), 1.00),   # final gains (SKIN * tint * light) are >= 0.39 apart pairwise
    "exc": ((0.55, 1.20, 1.20), 1.10),   # (red, yellow, magenta, green, skin, dark blue), so a few CPU
    "fru": ((1.35, 0.65, 1.15), 1.00),   # epochs separate them on any float kernels; MTCNN finds the
    "hap": ((0.75, 1.30, 0.80), 1.00),   # tinted faces in >= 96 % of the sampled frames of every class.
    "neu": ((1.00, 1.00, 1.00), 1.00),
    "sad": ((1.45, 1.00, 0.70), 0.80),
}
# MTCNN boxes (x1, y1, x2, y2) of the faces in the bundled photos.
PHOTO_FACES = {"astronaut": (181, 62, 268, 172), "camera": (199, 119, 254, 192),
               "grace_hopper": (174, 120, 356, 340)}

# --- audio and text cues -----------------------------------------------------------------------------
# Per class: speaker of pyannote's sample, speed/pitch factor, and the centre (Hz) of a +RESONANCE_DB
# formant-like peak added to the timbre. Pitch alone is a weak cue: the two speakers sound alike (both
# ~200 Hz F0, the same spectral centroid), a speaker's own intonation spreads F0 by +-15 %, and the
# sample is telephone speech (nothing above ~3.5 kHz), so neighbouring factors overlap. The resonances
# lie inside every class's band (<= 3.5 kHz * factor), >= 0.6 octave apart, and classes that are
# neighbours in pitch are >= 1.2 octaves apart in resonance: each class has its own clearly different voice.
VOICES = {"sad": ("Diane", 0.62, 700), "neu": ("Sheila", 0.76, 1630), "fru": ("Diane", 0.93, 300),
          "ang": ("Sheila", 1.14, 2500), "hap": ("Diane", 1.4, 460), "exc": ("Sheila", 1.72, 1070)}
RESONANCE_DB = 18.0
RESONANCE_OCTAVES = 0.3    # standard deviation of the Gaussian peak on a log-frequency axis
CLASS_PHRASES = {
    "ang": ("furious", "unacceptable", "this is outrageous", "I hate this", "get out of here", "ridiculous"),
    "exc": ("amazing", "incredible", "I can't wait", "this is fantastic", "unbelievable news", "awesome"),
    "fru": ("annoying", "again and again", "this is useless", "I give up", "it never works", "pointless"),
    "hap": ("wonderful", "lovely", "I'm so glad", "delightful", "what a nice day", "I'm pleased"),
    "neu": ("okay", "the forms", "on Tuesday", "at the office", "the second line", "I see"),
    "sad": ("I miss her", "lonely", "I'm so sorry", "it's all gone", "heartbroken", "I lost everything"),
}
CLASS_PUNCT = {"ang": "!", "exc": "!", "fru": ".", "hap": "!", "neu": ".", "sad": "."}

# --- IEMOCAP -----------------------------------------------------------------------------------------
IEMOCAP_FPS = 30
HALF_W, HALF_H = 360, 480
KEPT_PER_DIALOG = 24       # 4 per class
IEMOCAP_DIALOGS = ("Ses01F_impro01", "Ses01F_script01_1", "Ses02M_impro03", "Ses02M_script02_2",
                   "Ses03F_impro03", "Ses03M_impro05a")
DROP_CODES = {"Ses01F_impro01": ("xxx",), "Ses02M_script02_2": ("sur", "xxx"),
              "Ses03F_impro03": ("xxx",), "Ses03M_impro05a": ("fea",)}
# Traps placed on the k-th kept utterance (time order) of a dialog.
SPECIAL_TEXT = {("Ses01F_script01_1", 3): "[LAUGHTER] {}", ("Ses03M_impro05a", 9): "Note: {}",
                ("Ses02M_script02_2", 7): "At the caf\xe9, {}"}
LATIN1_DIALOG = "Ses02M_script02_2"
MISSING_WAV = ("Ses02M_impro03", 11)
FACELESS_START = {("Ses01F_script01_1", 2): 4, ("Ses03M_impro05a", 5): 4}   # blank frames at the start
LISTENER_AWAY = ("Ses02M_impro03", "Ses03F_impro03")
UNLABELLED_ID = "Ses03F_impro03_FXX0"
NON_UTTERANCE = ("Ses01F_script01_1", "BREAK [GARBAGE]")
JUNK_DIALOG = "Ses01F_impro01"
CATEGORY = {"ang": "Anger", "exc": "Excited", "fru": "Frustration", "hap": "Happiness", "neu": "Neutral",
            "sad": "Sadness", "sur": "Surprise", "fea": "Fear", "oth": "Other"}
VAD_CENTRE = {"ang": (2, 4, 4), "exc": (4, 4, 3), "fru": (2, 3, 3), "hap": (4, 3, 3), "neu": (3, 2, 3),
              "sad": (2, 2, 2), "sur": (3, 4, 3), "fea": (2, 4, 2), "xxx": (3, 3, 3)}

# --- CMU-MOSEI ---------------------------------------------------------------------------------------
CSD_NAME = "CMU_MOSEI_Labels.csd"
CSD_COLUMN = {"sentiment": 0, "happy": 1, "sad": 2, "anger": 3, "surprise": 4, "disgust": 5, "fear": 6}
MOSEI_PRIMARY = {"ang": "anger", "exc": "surprise", "fru": "disgust", "hap": "happy", "neu": None,
                 "sad": "sad"}
SENTIMENT_SIGN = {"ang": -1, "exc": 1, "fru": -1, "hap": 1, "neu": 0, "sad": -1}
UNDERSCORE_TEXT = {("mjQfQx2K__8", 3), ("_0efYOjQYRc", 3)}


class MoseiVideo(NamedTuple):
    """One demo video: real id and clip numbers, container geometry, and the traps it carries."""

    vid: str
    clips: tuple[int, ...]
    size: tuple[int, int]                   # width, height
    fps: int
    csd_order: tuple[int, ...] = ()         # clips in CSD row order; empty: a seeded shuffle
    no_row: tuple[int, ...] = ()            # transcript clips that get no CSD row
    stray_row: bool = False                 # a CSD row that matches no segment
    jitter: bool = False                    # CSD intervals off the transcript times by < 0.5 ms
    past_end: bool = False                  # the last segment ends after the media
    stereo: bool = False
    first_interval: tuple[float, float] | None = None


MOSEI_VIDEOS = (
    MoseiVideo("-3g5yACwYnA", (2, 3, 4, 9, 10, 13), (480, 360), 30, csd_order=(10, 13, 9, 2, 3, 4)),
    MoseiVideo("81406", (0, 1, 2, 3, 4, 5), (640, 360), 25, stereo=True),
    MoseiVideo("mjQfQx2K__8", (0, 1, 3, 4, 7, 8), (640, 480), 24),
    MoseiVideo("GdFP_p4eQX0", (2, 4, 5, 6, 7), (480, 360), 30, no_row=(5,), stray_row=True),
    MoseiVideo("--qXJuDtHPw", (4, 5, 6), (640, 360), 25),
    MoseiVideo("188343", (0, 1, 2, 3, 4, 5), (480, 360), 30, jitter=True),
    MoseiVideo("_0efYOjQYRc", (2, 3, 4), (640, 360), 25),
    MoseiVideo("_q7DM8WkzAQ", (2, 3, 4, 9, 15, 17), (640, 480), 24, past_end=True),
    MoseiVideo("-NFrJFQijFE", (0, 1, 2, 3), (480, 360), 30, first_interval=(-0.47755102, 4.10430839)),
)


@dataclass(frozen=True)
class DemoCorpora:
    iemocap_src: Path   # OUT/raw/IEMOCAP_full_release
    mosei_src: Path     # OUT/raw/CMU_MOSEI
    truth: Path         # OUT/raw/demo_truth.json


def build_demo_corpora(out: Path, seed: int = 0) -> DemoCorpora:
    """Build both corpora under ``out/raw`` (or return the complete build already there for ``seed``).

    Every file is written under a temporary name and renamed; the ``.complete`` marker comes last, so
    an interrupted build is simply redone (the file set does not depend on the seed: all is overwritten).
    """
    raw = Path(out) / "raw"
    corpora = DemoCorpora(raw / "IEMOCAP_full_release", raw / "CMU_MOSEI", raw / "demo_truth.json")
    marker = raw / ".complete"
    stamp = json.dumps({"version": DEMO_VERSION, "seed": seed})
    if marker.is_file() and marker.read_text(encoding="utf-8") == stamp and corpora.truth.is_file():
        return corpora
    began = time.perf_counter()
    assets = load_assets()
    truth = {"version": DEMO_VERSION, "seed": seed, "classes": list(CLASSES),
             "iemocap": build_iemocap(corpora.iemocap_src, assets, seed),
             "mosei": build_mosei(corpora.mosei_src, assets, seed)}
    write_text_atomic(corpora.truth, json.dumps(truth, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    write_text_atomic(marker, stamp)
    log.info("built the demo corpora in %s (seed %d) in %.1f s", raw, seed, time.perf_counter() - began)
    return corpora


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """An independent stream per (seed, keys), so that one part's draws never shift another's."""
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])


# =====================================================================================================
# Assets: sprites, voices, filler text
# =====================================================================================================

@dataclass(frozen=True)
class Sprite:
    """A face on a soft-edged square patch: uint8 BGR (S, S, 3) and float32 alpha (S, S)."""

    bgr: np.ndarray
    alpha: np.ndarray


@dataclass(frozen=True)
class Assets:
    class_faces: dict[str, list[Sprite]]
    resting_faces: list[Sprite]     # shown while an actor listens; never a class cue
    voices: dict[str, np.ndarray]   # speaker -> concatenated turns, float32, peak 1
    filler: list[str]


def load_assets() -> Assets:
    """Faces from scikit-image and matplotlib, speech from pyannote-audio's sample (all pip packages).

    The first 100 LFW crops are split into 7 pools by index (identities are not labelled, so one person
    may recur across pools): pools 0-5 are the class pools, pool 6 and the three photos rest.
    """
    from skimage import data as skdata

    lfw = skdata.lfw_subset()[:100]
    class_faces = {cls: [_lfw_sprite(lfw[i], _class_gains(cls)) for i in range(k, 100, 7)]
                   for k, cls in enumerate(CLASSES)}
    resting = [_photo_sprite(image, PHOTO_FACES[name]) for name, image in _photos().items()]
    resting += [_lfw_sprite(lfw[i], SKIN) for i in range(6, 100, 7)]
    voices, filler = _load_sample_speech(_pyannote_sample_dir())
    return Assets(class_faces, resting, voices, filler)


def _class_gains(cls: str) -> tuple[float, float, float]:
    tint, light = CLASS_TINT[cls]
    return tuple(skin * gain * light for skin, gain in zip(SKIN, tint))


def _lfw_sprite(face: np.ndarray, gains) -> Sprite:
    padded = cv2.copyMakeBorder(face.astype(np.float32), *(LFW_PAD,) * 4, cv2.BORDER_REPLICATE)
    grey = np.clip(cv2.resize(padded, (SPRITE_PX, SPRITE_PX), interpolation=cv2.INTER_CUBIC), 0, 1)
    return _sprite(grey[..., None] * (255 * np.asarray(gains, np.float32)))


def _photos() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from skimage import data as skdata

    hopper = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {"astronaut": cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR),
            "camera": cv2.cvtColor(skdata.camera(), cv2.COLOR_GRAY2BGR), "grace_hopper": hopper}


def _photo_sprite(image: np.ndarray, box: tuple[int, int, int, int]) -> Sprite:
    """The face of ``box`` scaled to FACE_PX, centred, with the same margin as an LFW sprite."""
    x1, y1, x2, y2 = box
    k = FACE_PX / (y2 - y1)
    centre = (SPRITE_PX - 1) / 2
    matrix = np.float32([[k, 0, centre - k * (x1 + x2) / 2], [0, k, centre - k * (y1 + y2) / 2]])
    patch = cv2.warpAffine(image.astype(np.float32), matrix, (SPRITE_PX, SPRITE_PX),
                           flags=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REPLICATE)
    return _sprite(patch)


def _sprite(bgr: np.ndarray) -> Sprite:
    """Cut a soft-edged oval around the face (a head shape, not a pasted square)."""
    side = bgr.shape[0]
    alpha = np.zeros((side, side), np.float32)
    centre = round((side - 1) / 2)
    cv2.ellipse(alpha, (centre, centre), (round(0.43 * side), round(0.47 * side)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), side / 40)
    return Sprite(np.clip(bgr + 0.5, 0, 255).astype(np.uint8), alpha)


def _pyannote_sample_dir() -> Path:
    """pyannote-audio's sample folder, found without importing pyannote.audio (its deps may be absent)."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the demo corpus needs the pyannote-audio wheel for its sample dialogue: "
                                  "pip install --no-deps pyannote-audio")
    return Path(next(iter(spec.submodule_search_locations))) / "sample"


def _load_sample_speech(folder: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each speaker's turns (from ``sample.stm``) concatenated, and the turn texts as filler."""
    audio, rate = sf.read(str(folder / "sample.wav"), dtype="float32")
    turns: dict[str, list[np.ndarray]] = {}
    filler = []
    for line in (folder / "sample.stm").read_text(encoding="utf-8").splitlines():
        _, _, speaker, start, end, text = line.split(maxsplit=5)
        turns.setdefault(speaker, []).append(audio[round(float(start) * rate):round(float(end) * rate)])
        filler.append(text.strip())
    voices = {speaker: np.concatenate(parts) for speaker, parts in turns.items()}
    return {speaker: voice / np.abs(voice).max() for speaker, voice in voices.items()}, filler


# =====================================================================================================
# Rendering: backgrounds, animated faces, video and audio files
# =====================================================================================================

@dataclass(frozen=True)
class Motion:
    """Where a face sits over time: a base centre and scale, plus a slow sinusoidal pan and zoom."""

    cx: float
    cy: float
    scale: float
    phases: tuple[float, float, float]
    rate: float

    def at(self, t: float) -> tuple[float, float, float]:
        omega = 2 * math.pi * self.rate
        a, b, c = self.phases
        return (self.cx + 3 * math.sin(omega * t + a), self.cy + 2 * math.sin(0.7 * omega * t + b),
                self.scale * (1 + 0.02 * math.sin(1.3 * omega * t + c)))


def _motion(rng: np.random.Generator, cx: float, cy: float, scale: float) -> Motion:
    return Motion(cx + rng.uniform(-6, 6), cy + rng.uniform(-6, 6), scale * rng.uniform(0.9, 1.04),
                  tuple(rng.uniform(0, 2 * math.pi, 3)), rng.uniform(0.3, 0.8))


@dataclass(frozen=True)
class Shot:
    """Frames [first, stop) show ``sprite`` moving by ``motion``; no sprite = nobody facing the camera."""

    first: int
    stop: int
    sprite: Sprite | None
    motion: Motion | None = None


def frame_index(t: float, fps: float) -> int:
    """The first frame at or after ``t`` seconds, by the same rule as the clip cutter."""
    return max(0, math.ceil(t * fps - 1e-6))


@dataclass
class Track:
    """One camera view: a fixed background, a resting face, and shots that replace it (later wins)."""

    background: np.ndarray
    fps: float
    resting: Sprite | None
    rest_motion: Motion | None
    shots: list[Shot] = field(default_factory=list)

    def add(self, start: float, end: float, sprite: Sprite | None, motion: Motion | None = None) -> None:
        self.shots.append(Shot(frame_index(start, self.fps), frame_index(end, self.fps), sprite, motion))

    def render(self, index: int) -> np.ndarray:
        sprite, motion = self.resting, self.rest_motion
        for shot in self.shots:
            if shot.first <= index < shot.stop:
                sprite, motion = shot.sprite, shot.motion
        frame = self.background.copy()
        if sprite is not None:
            _paste(frame, sprite, *motion.at(index / self.fps))
        return frame


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A blurred vertical gradient of muted colours with soft blotches: a plausible, face-free room."""
    top, bottom = (rng.uniform(60, 180, (2, 1)) + rng.normal(0, 14, (2, 3))).astype(np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3))
    blotches = cv2.resize(rng.normal(0, 12, (4, 5, 3)).astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)
    image = cv2.GaussianBlur(image + blotches, (0, 0), 9)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, sprite: Sprite, cx: float, cy: float, scale: float) -> None:
    """Alpha-blend ``sprite`` centred at (cx, cy), warping only the region it covers."""
    side = sprite.alpha.shape[0]
    reach = side * scale / 2 + 2
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    x1, y1 = min(frame.shape[1], math.ceil(cx + reach)), min(frame.shape[0], math.ceil(cy + reach))
    centre = (side - 1) / 2
    matrix = np.float32([[scale, 0, cx - x0 - scale * centre], [0, scale, cy - y0 - scale * centre]])
    size = (x1 - x0, y1 - y0)
    bgr = cv2.warpAffine(sprite.bgr, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(sprite.alpha, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    region = frame[y0:y1, x0:x1]
    region[:] = cv2.blendLinear(region, bgr, 1 - alpha, alpha)


def _write_video(path: Path, tracks: list[Track], num_frames: int, fps: float, fourcc: str) -> None:
    """Tracks side by side, ``num_frames`` frames, written under a temporary name and renamed."""
    width = sum(track.background.shape[1] for track in tracks)
    height = tracks[0].background.shape[0]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"{path}: OpenCV cannot open a {fourcc} writer")
        try:
            for index in range(num_frames):
                writer.write(np.hstack([track.render(index) for track in tracks]))
        finally:
            writer.release()


def _speech(voices: dict[str, np.ndarray], cls: str, num_samples: int,
            rng: np.random.Generator) -> np.ndarray:
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


def _text(rng: np.random.Generator, cls: str, filler: list[str]) -> str:
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


def _class_face(assets: Assets, cls: str, rng: np.random.Generator) -> Sprite:
    pool = assets.class_faces[cls]
    return pool[rng.integers(len(pool))]


# =====================================================================================================
# IEMOCAP_full_release
# =====================================================================================================

@dataclass
class _Utterance:
    id: str
    cue: str            # the class whose face, voice and words the media carry
    code: str           # EmoEvaluation code: the cue, or a code outside the six classes
    start: float = 0.0
    end: float = 0.0
    text: str = ""

    @property
    def speaker(self) -> str:
        return self.id.rsplit("_", 1)[1][0]


@dataclass
class _Dialog:
    name: str
    utterances: list[_Utterance]
    num_frames: int

    @property
    def session(self) -> int:
        return int(self.name[4])

    @property
    def letter(self) -> str:
        return self.name[5]

    def channel(self, speaker: str) -> int:
        """0 = left half / first wav channel: the actor wearing the MoCap markers (session letter)."""
        return 0 if speaker == self.letter else 1


def build_iemocap(root: Path, assets: Assets, seed: int) -> dict:
    """Write the IEMOCAP tree under ``root``; returns its part of the truth file."""
    listed = _mesm_iemocap_ids()
    truth: dict = {"classes": {}, "dropped": {}, "dialogs": {}, "edge_cases": {
        "junk_files": [], "non_utterance_lines": {}, "missing_sentence_wavs": [], "texts": {},
        "faceless_speaker_frames": {}, "listener_away": {}, "latin1_files": [], "overlapping_pairs": [],
        "unlabelled_transcript_ids": []}}
    for name in IEMOCAP_DIALOGS:
        dialog = plan_dialog(name, listed, seed, assets.filler)
        _write_dialog(root, dialog, assets, seed, truth)
    truth["dropped"].update({item: "unlabelled (XX id): a transcript line without an EmoEvaluation block"
                             for item in truth["edge_cases"]["unlabelled_transcript_ids"]})
    _write_iemocap_docs(root, truth["dialogs"])
    return truth


def _mesm_iemocap_ids() -> dict[str, list[str]]:
    by_dialog: dict[str, list[str]] = {}
    for ids in load_split_lists("mesm_iemocap").values():
        for item in ids:
            by_dialog.setdefault(item.rsplit("_", 1)[0], []).append(item)
    return by_dialog


def plan_dialog(name: str, listed: dict[str, list[str]], seed: int, filler: list[str]) -> _Dialog:
    """Ids, hidden classes, timeline and texts of one dialog (no media): pure in ``seed``."""
    rng = _rng(seed, "iemocap", name)
    kept, dropped = _dialog_ids(name, listed[name])
    cues = rng.permutation(np.repeat(CLASSES, KEPT_PER_DIALOG // len(CLASSES)))
    utterances = [_Utterance(item, str(cue), str(cue)) for item, cue in zip(kept, cues)]
    utterances += [_Utterance(item, str(rng.choice(CLASSES)), code) for item, code in dropped]
    utterances.sort(key=lambda u: (int(u.id[-3:]), u.speaker))
    end = _timeline(utterances, rng)
    for utterance in utterances:
        utterance.text = _text(rng, utterance.cue, filler)
    return _Dialog(name, utterances, math.ceil((end + 0.4) * IEMOCAP_FPS))


def _dialog_ids(name: str, listed: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The first KEPT_PER_DIALOG MESM ids in turn order; dropped ones take turn numbers the lists lack.

    The MESM lists hold exactly the six-class utterances, so a real turn missing from them carries
    another code in the real corpus.
    """
    turns = sorted((int(item[-3:]), item[-4]) for item in listed)[:KEPT_PER_DIALOG]
    kept = [f"{name}_{speaker}{number:03d}" for number, speaker in turns]
    taken = {item[-4:] for item in listed}
    dropped = []
    for k, code in enumerate(DROP_CODES.get(name, ())):
        speaker = "FM"[k % 2]
        number = next(n for n in range(1000) if f"{speaker}{n:03d}" not in taken)
        taken.add(f"{speaker}{number:03d}")
        dropped.append((f"{name}_{speaker}{number:03d}", code))
    return kept, dropped


def _timeline(utterances: list[_Utterance], rng: np.random.Generator) -> float:
    """Short turns (1.0-1.8 s); a change of speaker often overlaps the previous turn, one actor never
    overlaps themself. Returns the last end time."""
    last_end = {"F": 0.0, "M": 0.0}
    previous, clock = None, rng.uniform(0.2, 0.6)
    for utterance in utterances:
        if previous is not None:
            gap = rng.uniform(-0.45, 0.2) if utterance.speaker != previous.speaker else rng.uniform(0.05, 0.2)
            clock = max(previous.end + gap, last_end[utterance.speaker] + 0.1)
        utterance.start = round(clock, 4)
        utterance.end = round(clock + rng.uniform(1.0, 1.8), 4)
        last_end[utterance.speaker] = utterance.end
        previous = utterance
    return max(u.end for u in utterances)


def _write_dialog(root: Path, dialog: _Dialog, assets: Assets, seed: int, truth: dict) -> None:
    rng = _rng(seed, "iemocap-media", dialog.name)
    kept = [u for u in dialog.utterances if u.code in CLASSES]
    edges = truth["edge_cases"]
    for k, utterance in enumerate(kept):
        template = SPECIAL_TEXT.get((dialog.name, k))
        if template:
            utterance.text = template.format(utterance.text)
            edges["texts"][utterance.id] = utterance.text
    session = root / f"Session{dialog.session}"
    stereo = _dialog_audio(dialog, assets, rng)
    _write_sentences(session / "sentences" / "wav" / dialog.name, dialog, stereo, kept, edges)
    write_wav(session / "dialog" / "wav" / f"{dialog.name}.wav", stereo)
    tracks = _dialog_tracks(dialog, assets, rng, kept, edges)
    _write_video(session / "dialog" / "avi" / "DivX" / f"{dialog.name}.avi", tracks, dialog.num_frames,
                 IEMOCAP_FPS, "DIVX")
    _write_dialog_texts(root, session, dialog, rng, edges)
    truth["classes"].update({u.id: u.cue for u in kept})
    truth["dropped"].update({u.id: f"emotion code {u.code} is not one of the six classes"
                             for u in dialog.utterances if u.code not in CLASSES})
    truth["dialogs"][dialog.name] = {"session": dialog.session, "frames": dialog.num_frames,
                                     "left_speaker": dialog.letter, "utterances": len(dialog.utterances)}
    edges["overlapping_pairs"] += _overlaps(dialog.utterances)


def _overlaps(utterances: list[_Utterance]) -> list[list[str]]:
    return [[a.id, b.id] for i, a in enumerate(utterances) for b in utterances[i + 1:]
            if b.start < a.end and a.start < b.end]


def _dialog_audio(dialog: _Dialog, assets: Assets, rng: np.random.Generator) -> np.ndarray:
    """(samples, 2): each actor's speech on their channel over a noise floor, plus 5 % crosstalk."""
    num_samples = round(dialog.num_frames / IEMOCAP_FPS * SAMPLE_RATE)
    speech = np.zeros((num_samples, 2), np.float32)
    for utterance in dialog.utterances:
        first, stop = round(utterance.start * SAMPLE_RATE), round(utterance.end * SAMPLE_RATE)
        speech[first:stop, dialog.channel(utterance.speaker)] += _speech(assets.voices, utterance.cue,
                                                                         stop - first, rng)
    noise = rng.normal(0, 0.003, speech.shape).astype(np.float32)
    return speech + 0.05 * speech[:, ::-1] + noise


def _write_sentences(folder: Path, dialog: _Dialog, stereo: np.ndarray, kept: list[_Utterance],
                     edges: dict) -> None:
    """One pre-cut mono wav per utterance (the speaker's channel), except the one left missing."""
    missing = kept[MISSING_WAV[1]].id if dialog.name == MISSING_WAV[0] else None
    for utterance in dialog.utterances:
        if utterance.id == missing:
            edges["missing_sentence_wavs"].append(utterance.id)
            continue
        first, stop = round(utterance.start * SAMPLE_RATE), round(utterance.end * SAMPLE_RATE)
        write_wav(folder / f"{utterance.id}.wav", stereo[first:stop, dialog.channel(utterance.speaker)])


def _dialog_tracks(dialog: _Dialog, assets: Assets, rng: np.random.Generator, kept: list[_Utterance],
                   edges: dict) -> list[Track]:
    """Left and right halves: each actor rests (one face per actor and session) and shows the class face
    of each of their utterances while speaking."""
    tracks = []
    for speaker in (dialog.letter, "M" if dialog.letter == "F" else "F"):
        actor = 2 * (dialog.session - 1) + (speaker == "M")
        resting = assets.resting_faces[actor % len(assets.resting_faces)]
        track = Track(_background(rng, HALF_W, HALF_H), IEMOCAP_FPS, resting,
                      _motion(rng, HALF_W / 2, HALF_H / 2, 1.0))
        for utterance in dialog.utterances:
            if utterance.speaker == speaker:
                track.add(utterance.start, utterance.end, _class_face(assets, utterance.cue, rng),
                          _motion(rng, HALF_W / 2, HALF_H / 2, 1.0))
        tracks.append(track)
    for k, utterance in enumerate(kept):
        blank = FACELESS_START.get((dialog.name, k))
        if blank:
            track = tracks[dialog.channel(utterance.speaker)]
            first = frame_index(utterance.start, IEMOCAP_FPS)
            track.shots.append(Shot(first, first + blank, None))
            edges["faceless_speaker_frames"][utterance.id] = blank
    if dialog.name in LISTENER_AWAY:
        _turn_away(dialog, tracks[1], edges)
    return tracks


def _turn_away(dialog: _Dialog, track: Track, edges: dict) -> None:
    """Blank the right half for up to 1 s in the first long enough pause of the right actor."""
    own = [u for u in dialog.utterances if dialog.channel(u.speaker) == 1]
    for before, after in zip(own, own[1:]):
        if after.start - before.end >= 0.6:
            start = before.end + 0.1
            end = round(min(after.start - 0.1, start + 1.0), 4)
            track.add(start, end, None)
            edges["listener_away"][dialog.name] = [round(start, 4), end]
            return


def _write_dialog_texts(root: Path, session: Path, dialog: _Dialog, rng: np.random.Generator,
                        edges: dict) -> None:
    folder = session / "dialog"
    rel = folder.relative_to(root).as_posix()
    lines = [f"{u.id} [{u.start:08.4f}-{u.end:08.4f}]: {u.text}" for u in dialog.utterances]
    if UNLABELLED_ID.startswith(dialog.name + "_"):
        anchor = dialog.utterances[len(lines) // 2].start
        lines.insert(len(lines) // 2 + 1, f"{UNLABELLED_ID} [{anchor:08.4f}-{anchor + 0.6:08.4f}]: Mm-hmm.")
        edges["unlabelled_transcript_ids"].append(UNLABELLED_ID)
    if dialog.name == NON_UTTERANCE[0]:
        lines.insert(5, NON_UTTERANCE[1])
        edges["non_utterance_lines"][f"{rel}/transcriptions/{dialog.name}.txt:6"] = NON_UTTERANCE[1]
    transcript = "".join(line + "\n" for line in lines)
    encoding = "latin-1" if dialog.name == LATIN1_DIALOG else "ascii"
    with atomic_path(folder / "transcriptions" / f"{dialog.name}.txt") as tmp:
        tmp.write_bytes(transcript.encode(encoding))
    if encoding == "latin-1":
        edges["latin1_files"].append(f"{rel}/transcriptions/{dialog.name}.txt")
    _write_evaluations(folder / "EmoEvaluation", dialog, rng)
    if dialog.name == JUNK_DIALOG:
        junk = folder / "EmoEvaluation" / f"._{dialog.name}.txt"
        with atomic_path(junk) as tmp:
            tmp.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(range(256)))
        edges["junk_files"].append(junk.relative_to(root).as_posix())


def _write_evaluations(folder: Path, dialog: _Dialog, rng: np.random.Generator) -> None:
    """The consensus file and its Categorical/Attribute companions (annotator E2) for one dialog."""
    blocks, categorical, attribute = [], [], []
    for utterance in dialog.utterances:
        votes = _votes(utterance.code, rng)
        scores = [_vad(utterance.code, rng) for _ in range(3)]
        blocks.append(_emo_block(utterance, votes, scores))
        e2 = "Neutral state" if votes[0] == "Neutral" else votes[0]
        categorical.append(f"{utterance.id} :{e2};")
        val, act, dom = _vad(utterance.code, rng)
        attribute.append(f"{utterance.id} :act {act}; :val {val}; :dom {dom};")
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    write_text_atomic(folder / f"{dialog.name}.txt", header + "\n".join(blocks))
    write_text_atomic(folder / "Categorical" / f"{dialog.name}_e2_cat.txt", "\n".join(categorical) + "\n")
    write_text_atomic(folder / "Attribute" / f"{dialog.name}_e2_atr.txt", "\n".join(attribute) + "\n")


def _votes(code: str, rng: np.random.Generator) -> list[str]:
    """Three external votes: a majority for a real code, three different categories for ``xxx``."""
    others = [name for key, name in CATEGORY.items() if key != code]
    if code == "xxx":
        return [str(vote) for vote in rng.choice(others, size=3, replace=False)]
    votes = [CATEGORY[code]] * 3
    if rng.random() < 0.4:
        votes[rng.integers(3)] = str(rng.choice(others))
    return votes


def _vad(code: str, rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-1, 2), 1, 5)) for c in VAD_CENTRE[code])


def _emo_block(utterance: _Utterance, votes: list[str], scores: list[tuple[int, int, int]]) -> str:
    """Summary line (single TABs, 4 decimals) then C- and A- lines; the summary VAD averages E3 and E4."""
    mean = [sum(score[axis] for score in scores[:2]) / 2 for axis in range(3)]
    self_rater = f"{utterance.speaker}1"
    lines = [f"[{utterance.start:.4f} - {utterance.end:.4f}]\t{utterance.id}\t{utterance.code}\t"
             f"[{mean[0]:.4f}, {mean[1]:.4f}, {mean[2]:.4f}]"]
    lines += [f"C-E{n}:\t{vote};\t()" for n, vote in zip((2, 3, 4), votes)]
    lines.append(f"C-{self_rater}:\t{votes[0]};\t(demo self-rating)")
    for rater, (val, act, dom) in zip(("E3", "E4", self_rater), scores):
        lines.append(f"A-{rater}:\tval {val}; act {act}; dom  {dom};\t()")
    return "\n".join(lines) + "\n"


def _write_iemocap_docs(root: Path, dialogs: dict) -> None:
    write_text_atomic(root / "README.txt",
                      "Synthetic miniature of IEMOCAP_full_release, built by data_reorg.demo for tests and\n"
                      "demos. Same layout and file formats as the real release; faces from scikit-image\n"
                      "(LFW subset) and matplotlib, speech from pyannote-audio's sample. Not real data.\n")
    lines = [f"{name}\t{info['frames'] / IEMOCAP_FPS:.4f}" for name, info in sorted(dialogs.items())]
    write_text_atomic(root / "Documentation" / "timeinfo.txt", "\n".join(lines) + "\n")


# =====================================================================================================
# CMU_MOSEI
# =====================================================================================================

@dataclass
class _Segment:
    clip: int
    cue: str
    start: float
    end: float
    text: str


def build_mosei(root: Path, assets: Assets, seed: int) -> dict:
    """Write the CMU_MOSEI tree under ``root``; returns its part of the truth file."""
    from data_reorg.csd import write_csd

    folds = {vid: fold for fold, vids in load_split_lists("mosei_sdk_folds").items() for vid in vids}
    mesm = {item for ids in load_split_lists("mesm_mosei").values() for item in ids}
    cues = _rng(seed, "mosei-classes").permutation(
        np.resize(CLASSES, sum(len(video.clips) for video in MOSEI_VIDEOS)))
    truth: dict = {"classes": {}, "labels": {}, "dropped": {}, "videos": {}, "edge_cases": {
        "csd_row_order": {}, "unmatched_csd_rows": {}, "negative_start": [], "clipped_at_media_end": {},
        "interval_jitter_videos": [], "underscore_texts": {}, "not_in_mesm": [], "overlapping_pairs": [],
        "stereo_wavs": [], "not_in_sdk_folds": []}}
    labels = {}
    used = 0
    for video in MOSEI_VIDEOS:
        segments = plan_video(video, cues[used:used + len(video.clips)], seed, assets.filler)
        used += len(video.clips)
        duration = _write_video_media(root, video, segments, assets, seed)
        _write_transcript(root, video, segments)
        labels[video.vid] = _csd_rows(video, segments, duration, seed, truth)
        _record_video(video, segments, duration, folds.get(video.vid), mesm, truth)
    write_csd(root / CSD_NAME, labels)
    return truth


def plan_video(video: MoseiVideo, cues, seed: int, filler: list[str]) -> list[_Segment]:
    """Segments of one video (no media): short, mostly in sequence, the second overlapping the first."""
    rng = _rng(seed, "mosei", video.vid)
    segments = []
    clock = rng.uniform(0.4, 1.0)
    for k, (clip, cue) in enumerate(zip(video.clips, cues)):
        if k == 0 and video.first_interval:
            start, end = video.first_interval
        else:
            gap = -rng.uniform(0.15, 0.3) if k == 1 else rng.uniform(-0.2, 0.4)
            start = round(clock + gap, 3) if k else round(clock, 3)
            end = round(start + rng.uniform(1.2, 3.0), 3)
        text = _text(rng, str(cue), filler)
        if (video.vid, clip) in UNDERSCORE_TEXT:
            text += " The _____ part."
        segments.append(_Segment(clip, str(cue), start, end, text))
        clock = end
    return segments


def _media_duration(video: MoseiVideo, segments: list[_Segment]) -> float:
    """Whole frames covering the last segment plus 0.5 s, or ending 0.8 s before it (``past_end``)."""
    end = segments[-1].end + (-0.8 if video.past_end else 0.5)
    return math.ceil(end * video.fps) / video.fps


def _write_video_media(root: Path, video: MoseiVideo, segments: list[_Segment], assets: Assets,
                       seed: int) -> float:
    """The full mp4 and the 16 kHz wav of one video; returns the media duration."""
    rng = _rng(seed, "mosei-media", video.vid)
    width, height = video.size
    duration = _media_duration(video, segments)
    scale = 0.35 * height / FACE_PX
    resting = assets.resting_faces[zlib.crc32(video.vid.encode()) % len(assets.resting_faces)]
    track = Track(_background(rng, width, height), video.fps, resting,
                  _motion(rng, width / 2, height / 2, scale))
    track.add(0.0, max(0.0, segments[0].start), None)
    num_samples = round(duration * SAMPLE_RATE)
    audio = rng.normal(0, 0.003, num_samples).astype(np.float32)
    for segment in segments:
        track.add(segment.start, segment.end, _class_face(assets, segment.cue, rng),
                  _motion(rng, width / 2, height / 2, scale))
        first = round(max(0.0, segment.start) * SAMPLE_RATE)
        stop = round(segment.end * SAMPLE_RATE)
        speech = _speech(assets.voices, segment.cue, stop - first, rng)[:max(0, num_samples - first)]
        audio[first:first + len(speech)] = speech + rng.normal(0, 0.003, len(speech))
    raw = root / "Raw"
    _write_video(raw / "Videos" / "Full" / "Combined" / f"{video.vid}.mp4", [track],
                 round(duration * video.fps), video.fps, "mp4v")
    if video.stereo:
        audio = np.stack([audio, 0.6 * audio + rng.normal(0, 0.003, num_samples)], axis=1)
    write_wav(raw / "Audio" / "Full" / "WAV_16000" / f"{video.vid}.wav", audio)
    return duration


def _write_transcript(root: Path, video: MoseiVideo, segments: list[_Segment]) -> None:
    lines = [f"{video.vid}___{s.clip}___{float(s.start)!r}___{float(s.end)!r}___{s.text}\n" for s in segments]
    write_text_atomic(root / "Raw" / "Transcript" / "Segmented" / "Combined" / f"{video.vid}.txt",
                      "".join(lines))


def _csd_row(cue: str, rng: np.random.Generator) -> np.ndarray:
    """Sentiment and six emotion scores in thirds: the cue's emotion (none for neutral), sometimes a
    weaker second one."""
    row = np.zeros(7)
    sign = SENTIMENT_SIGN[cue]
    row[0] = sign * rng.integers(1, 8) / 3 if sign else rng.integers(-1, 2) / 3
    primary = MOSEI_PRIMARY[cue]
    if primary:
        row[CSD_COLUMN[primary]] = rng.integers(2, 8) / 3
    if rng.random() < 0.3:
        second = rng.choice([e for e in MOSEI_EMOTIONS if e != primary])
        row[CSD_COLUMN[second]] = rng.integers(1, 3) / 3
    return row


def _csd_rows(video: MoseiVideo, segments: list[_Segment], duration: float, seed: int,
              truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """(features, intervals) of one video, rows in CSD order, plus the stray row if any."""
    rng = _rng(seed, "mosei-csd", video.vid)
    by_clip = {s.clip: s for s in segments}
    labelled = [s.clip for s in segments if s.clip not in video.no_row]
    order: list[int | None] = list(video.csd_order) or [int(c) for c in rng.permutation(labelled)]
    if video.stray_row:
        order.insert(int(rng.integers(len(order) + 1)), None)
    features, intervals = [], []
    for clip in order:
        if clip is None:
            interval = [round(duration + 2.0, 3), round(duration + 6.5, 3)]
            features.append(_csd_row(str(rng.choice(CLASSES)), rng))
            truth["edge_cases"]["unmatched_csd_rows"][video.vid] = [
                {"row": len(intervals), "interval": interval}]
        else:
            segment = by_clip[clip]
            interval = [segment.start, segment.end]
            if video.jitter:
                interval = [t + rng.uniform(-4e-4, 4e-4) for t in interval]
            features.append(_csd_row(segment.cue, rng))
            truth["labels"][f"{video.vid}_{clip}"] = [int(features[-1][CSD_COLUMN[emotion]] > 0)
                                                      for emotion in MOSEI_EMOTIONS]
        intervals.append(interval)
    truth["edge_cases"]["csd_row_order"][video.vid] = order
    return np.asarray(features, np.float32), np.asarray(intervals, np.float64)


def _record_video(video: MoseiVideo, segments: list[_Segment], duration: float, fold: str | None,
                  mesm: set[str], truth: dict) -> None:
    edges = truth["edge_cases"]
    for segment in segments:
        item = f"{video.vid}_{segment.clip}"
        if segment.clip in video.no_row:
            truth["dropped"][item] = "no CSD label row"
        else:
            truth["classes"][item] = segment.cue
        if item not in mesm:
            edges["not_in_mesm"].append(item)
        if segment.start < 0:
            edges["negative_start"].append(item)
        if segment.end > duration:
            edges["clipped_at_media_end"][item] = duration
        if (video.vid, segment.clip) in UNDERSCORE_TEXT:
            edges["underscore_texts"][item] = segment.text
    edges["overlapping_pairs"] += [[f"{video.vid}_{a.clip}", f"{video.vid}_{b.clip}"]
                                   for a, b in zip(segments, segments[1:]) if b.start < a.end]
    if video.jitter:
        edges["interval_jitter_videos"].append(video.vid)
    if video.stereo:
        edges["stereo_wavs"].append(video.vid)
    if fold is None:
        edges["not_in_sdk_folds"].append(video.vid)
    truth["videos"][video.vid] = {"width": video.size[0], "height": video.size[1], "fps": video.fps,
                                  "frames": round(duration * video.fps), "channels": 2 if video.stereo else 1,
                                  "sdk_fold": fold, "duration": duration}
