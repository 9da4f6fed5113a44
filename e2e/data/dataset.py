"""Dataset over the manifest and the feature cache (:mod:`e2e.data.preprocess`), and the batch collator.

Every item is checked when the dataset is built, so a bad utterance is skipped, logged and counted in
``dataset.skipped`` instead of failing mid-epoch. Skip reasons:

* ``empty_text``: the transcript is empty or whitespace;
* ``bad_label``: an IEMOCAP label outside the six classes, or a MOSEI label that is not six 0/1 values;
  for ``data.task=sentiment`` a ``sentiment`` that is not a finite number in [-3, 3], for ``vad`` a
  ``vad`` that is not ``{"valence", "activation", "dominance"}`` finite numbers in [1, 5];
* ``no_label``: (regression tasks) the row's ``sentiment`` / ``vad`` is null or absent (data-reorg
  writes ``"vad": null`` for an EmoEvaluation triple it could not use);
* ``missing_cache`` / ``bad_cache``: no cache file (preprocess not run, or the item is in its
  ``problems.jsonl``) or one that cannot be read;
* ``stale_cache``: the cache was built from other clip files than the manifest's (sha256 differs): rerun
  preprocess;
* ``no_frames``: the cache holds no face frames;
* ``short_audio``: fewer than 400 samples (one 25 ms analysis window). Anything longer is kept: the last
  400 ms chunk is zero-padded, and real utterances shorter than one chunk exist;
* ``silent_audio``: RMS below 1e-4 of full scale (-80 dBFS, about 3 PCM16 steps): digital silence;
* ``unshared_label``: (``data.label_space=shared``) none of the emotions both corpora share
  (:mod:`e2e.data.protocols`, which also picks the rows of a split under ``data.split``).

With Hugging Face encoders (``model.audio_encoder`` / ``model.visual_encoder`` not ``vgg``) an item's
``audio`` is the clip's raw 16 kHz waveform cut into ``model.audio_chunk_ms`` chunks ``(A, samples)`` (the
last chunk ends at the clip's end and overlaps the one before; a clip shorter than one chunk is zero-padded),
read from the manifest's audio file, and ``faces`` are the cached crops of ``data.face_size`` as [0, 1] RGB
``(T, 3, S, S)``: the encoder normalises both as its checkpoint does (:mod:`e2e.models.layers.hf_encoders`).
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data_reorg.manifest import IEMOCAP_CLASSES, MOSEI_EMOTIONS, VAD_DIMENSIONS
from e2e.config import ExperimentConfig, UsageError
from e2e.data.batch import Batch
from e2e.data.mel import N_FFT, SAMPLE_RATE, mel_chunks
from e2e.data.preprocess import FACE_SIZE, cache_path, read_clip_audio, source_key
from e2e.data.protocols import class_names, shared_label, split_rows

FACE_MEAN = torch.tensor([159.0, 111.0, 102.0])  # per RGB channel, 0-255 scale
FACE_STD = torch.tensor([37.0, 33.0, 32.0])
SILENCE_RMS = 1e-4
AUDIO_FEATURES = ("log_mel", "power")
CLASSES = {"iemocap": IEMOCAP_CLASSES, "mosei": MOSEI_EMOTIONS}
VGG = "vgg"  # model.audio_encoder / visual_encoder value of the paper's CNNs (e2e.models.layers.hf_encoders)


@dataclass(frozen=True)
class RegressionTarget:
    """Where a regression task's targets are in a manifest row, their names (the outputs) and range."""

    field: str
    names: tuple[str, ...]
    low: float
    high: float

    def values(self, raw) -> list | None:
        """The targets in a row's ``field`` value ``raw`` in ``names`` order (unchecked), or None when it
        does not have exactly them (a scalar for one target, a dict keyed by the names for several)."""
        if self.names == (self.field,):
            return [raw]
        if isinstance(raw, dict) and set(raw) == set(self.names):
            return [raw[name] for name in self.names]
        return None

    def expected(self) -> str:
        kind = "a number" if self.names == (self.field,) else f"{{{', '.join(self.names)}}} numbers"
        return f"{kind} in [{self.low:g}, {self.high:g}]"


# data.task -> its targets (the emotion task reads ``label`` against CLASSES)
REGRESSION_TARGETS = {
    "sentiment": RegressionTarget("sentiment", ("sentiment",), -3.0, 3.0),  # MOSEI, one float per row
    "vad": RegressionTarget("vad", VAD_DIMENSIONS, 1.0, 5.0),  # IEMOCAP, {"valence": v, ...} or null
}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Item:
    id: str
    text: str
    label: torch.Tensor
    cache: Path
    audio: str  # the clip's audio file (raw waveform for a Hugging Face audio encoder)


class EmotionDataset(Dataset):
    """Utterances of one split. An item is a dict: ``id``, ``text``, ``label`` (C,) float,
    ``faces`` (T, 3, 48, 48) float normalised, ``audio`` (A, 1, 128, 32) float."""

    def __init__(self, data_dir: Path | str, split: str, config: ExperimentConfig, tokenizer):
        data = config.data
        if data.dataset not in CLASSES:
            raise UsageError(f"data.dataset must be one of {', '.join(CLASSES)}, got {data.dataset!r}")
        if data.audio_features not in AUDIO_FEATURES:
            raise UsageError(
                f"data.audio_features must be one of {', '.join(AUDIO_FEATURES)}, got {data.audio_features!r}"
            )
        self.data_dir, self.split = Path(data_dir), split
        self.dataset, self.max_frames, self.max_chunks = data.dataset, data.max_frames, data.max_chunks
        self.target = REGRESSION_TARGETS.get(data.task)  # None: the emotion classes
        self.label_space = data.label_space
        self.log_mel = data.audio_features == "log_mel"
        self.tokenizer, self.text_max_length = tokenizer, config.model.text_max_length
        self.items: list[_Item] = []
        self.skipped: dict[str, list[str]] = {}
        self.img_interval_ms, self.face_size = data.img_interval_ms, data.face_size
        self.raw_faces = getattr(config.model, "visual_encoder", VGG) != VGG
        raw_audio = getattr(config.model, "audio_encoder", VGG) != VGG
        self.waveform_chunk = SAMPLE_RATE * config.model.audio_chunk_ms // 1000 if raw_audio else 0
        self._check_face_size(config)
        rows = split_rows(self.data_dir, split, data)
        self._check_target_field(rows)
        for row in rows:
            self._admit(row)
        self._report(len(rows))

    def _check_face_size(self, config: ExperimentConfig) -> None:
        """UsageError for a face size the model's face encoder does not take."""
        if self.face_size != FACE_SIZE and not self.raw_faces:
            raise UsageError(
                f"data.face_size={self.face_size}: the VGG face CNN takes the paper's {FACE_SIZE} px crops; "
                f"other sizes are for a model.visual_encoder"
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        """The emotion classes, or the regression targets' names (``("sentiment",)``, the VAD dimensions)."""
        return class_names(self.dataset, self.label_space) if self.target is None else self.target.names

    @property
    def labels(self) -> torch.Tensor:
        """(N, C) labels of the kept items, without touching the cache."""
        return torch.stack([item.label for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        with np.load(item.cache) as archive:
            faces, mel = archive["faces"], archive["mel"]
        faces = faces[even_subsample(len(faces), self.max_frames)]
        faces = pixel_faces(faces) if self.raw_faces else normalise_faces(faces)
        if self.waveform_chunk:
            chunks = waveform_chunks(torch.from_numpy(read_clip_audio(item.audio)), self.waveform_chunk)
        else:
            chunks = mel_chunks(torch.from_numpy(mel), log=self.log_mel)
        chunks = chunks[even_subsample(len(chunks), self.max_chunks)]
        return {"id": item.id, "text": item.text, "label": item.label, "faces": faces, "audio": chunks}

    def collator(self) -> Collator:
        return Collator(self.tokenizer, self.text_max_length)

    def _check_target_field(self, rows: list[dict]) -> None:
        """A UsageError when the regression task's field is in none of ``rows``: a manifest written before
        data-reorg recorded it."""
        if self.target is None or not rows or any(self.target.field in row for row in rows):
            return
        raise UsageError(
            f"{self.data_dir / 'manifest.jsonl'}: no {self.split} row has the {self.target.field!r} field that "
            f"data.task={self.target.field} needs (a manifest from before data-reorg recorded it); rerun "
            f"`data-reorg {self.dataset} <raw corpus> {self.data_dir}` to add it (finished clips are reused)"
        )

    def _admit(self, row: dict) -> None:
        label, problem = self._label(row) if self.target is None else self._regression_label(row)
        if not str(row.get("text") or "").strip():
            problem = ("empty_text", "empty transcript")
        elif problem is None:
            problem = self._check_inputs(row)
        if problem is None:
            self.items.append(_Item(row["id"], row["text"], label, self._input_file(row), str(row.get("audio", ""))))
            return
        reason, message = problem
        self.skipped.setdefault(reason, []).append(row["id"])
        logger.warning("%s: skipping %s (%s): %s", self.split, row["id"], reason, message)

    def _input_file(self, row: dict) -> Path:
        """The file ``__getitem__`` reads for ``row`` (subclasses read other caches)."""
        return self._face_cache_file(row)

    def _face_cache_file(self, row: dict) -> Path:
        return cache_path(self.data_dir, self.img_interval_ms, row["id"], self.face_size)

    def _check_inputs(self, row: dict) -> tuple[str, str] | None:
        """(reason, message) when ``row``'s face/mel cache is unusable, else None; every model checks it, so
        all models train on the same items."""
        return check_cache(self._face_cache_file(row), source_key(row))

    def _label(self, row: dict) -> tuple[torch.Tensor | None, tuple[str, str] | None]:
        """(one-hot / multi-hot label, None), or (None, (reason, message)) for a label of no class."""
        if self.label_space == "shared":
            return shared_label(self.dataset, row["label"])
        raw, classes = row["label"], self.class_names
        if self.dataset == "iemocap" and raw in classes:
            return torch.eye(len(classes))[classes.index(raw)], None
        if (
            self.dataset == "mosei"
            and isinstance(raw, list)
            and len(raw) == len(classes)
            and all(value in (0, 1) for value in raw)
        ):
            return torch.tensor(raw, dtype=torch.float32), None
        return None, ("bad_label", f"label {raw!r} is not a {self.dataset} label")

    def _regression_label(self, row: dict) -> tuple[torch.Tensor | None, tuple[str, str] | None]:
        """(targets, None), or (None, (reason, message)) for a null/absent or unusable value (never coerced)."""
        target = self.target
        raw = row.get(target.field)
        if raw is None:
            return None, ("no_label", f"{target.field} is null or absent")
        values = target.values(raw)
        if values is None or not all(_is_number(value) and target.low <= value <= target.high for value in values):
            return None, ("bad_label", f"{target.field} {raw!r} is not {target.expected()}")
        return torch.tensor(values, dtype=torch.float32), None

    def _report(self, num_rows: int) -> None:
        counts = ", ".join(f"{reason} {len(ids)}" for reason, ids in sorted(self.skipped.items()))
        if not self.items:
            raise UsageError(
                f"{self.data_dir}: no usable utterances in split {self.split!r} "
                f"({num_rows} manifest rows; skipped: {counts or 'none'}); "
                f"run `e2e preprocess {self.data_dir}` first?"
            )
        if self.skipped:
            logger.warning("%s: kept %d of %d utterances; skipped %s", self.split, len(self.items), num_rows, counts)


def _is_number(value) -> bool:
    """A finite int or float (a JSON NaN or Infinity is not; nor is a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_cache(path: Path, source: str) -> tuple[str, str] | None:
    """(reason, message) if the cache file at ``path`` is unusable or was not built from ``source``
    (see :func:`e2e.data.preprocess.source_key`), else None. Reads only small arrays."""
    if not path.is_file():
        return "missing_cache", f"{path} does not exist (not preprocessed, or listed in problems.jsonl)"
    try:
        with np.load(path) as archive:
            num_frames = archive["face_found"].shape[0]
            num_samples, rms = int(archive["num_samples"]), float(archive["rms"])
            built_from = str(archive["source"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        return "bad_cache", f"{path} is unreadable ({error}); delete it and rerun preprocess"
    if built_from != source:
        return "stale_cache", f"{path} was built from other clip files; rerun preprocess"
    if num_frames == 0:
        return "no_frames", f"{path} holds no face frames"
    if num_samples < N_FFT:
        return "short_audio", f"audio has {num_samples} samples, fewer than {N_FFT} (25 ms)"
    if rms < SILENCE_RMS:
        return "silent_audio", f"audio RMS {rms:.2e} is below {SILENCE_RMS:.0e} (silence)"
    return None


def normalise_faces(crops: np.ndarray) -> torch.Tensor:
    """uint8 (T, 48, 48, 3) RGB crops -> float (T, 3, 48, 48), per-channel normalised on the 0-255 scale."""
    faces = torch.from_numpy(np.asarray(crops)).float()
    return ((faces - FACE_MEAN) / FACE_STD).permute(0, 3, 1, 2).contiguous()


def pixel_faces(crops: np.ndarray) -> torch.Tensor:
    """uint8 (T, S, S, 3) RGB crops -> float (T, 3, S, S) in [0, 1], for a Hugging Face vision encoder."""
    return (torch.from_numpy(np.asarray(crops)).float() / 255.0).permute(0, 3, 1, 2).contiguous()


def waveform_chunks(samples: torch.Tensor, chunk: int) -> torch.Tensor:
    """(N,) samples -> (ceil(N / chunk), chunk): consecutive chunks, the last one ending at the clip's end
    (overlapping the one before); a clip shorter than ``chunk`` is zero-padded on the right."""
    samples = samples.float()
    if len(samples) <= chunk:
        return torch.nn.functional.pad(samples, (0, chunk - len(samples)))[None]
    count = math.ceil(len(samples) / chunk)
    starts = [min(index * chunk, len(samples) - chunk) for index in range(count)]
    return torch.stack([samples[start : start + chunk] for start in starts])


def even_subsample(length: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced elements of ``range(length)``, first and last included;
    all of them when ``limit`` is 0 or not exceeded."""
    if limit <= 0 or length <= limit:
        return np.arange(length)
    return np.linspace(0, length - 1, limit).round().astype(np.int64)


@dataclass
class Collator:
    """Picklable ``collate_fn`` for DataLoader workers."""

    tokenizer: object
    max_length: int

    def __call__(self, items: list[dict]) -> Batch:
        return collate(items, self.tokenizer, self.max_length)


def collate(items: list[dict], tokenizer, max_length: int) -> Batch:
    """Pad texts to the longest in the batch (truncated to ``max_length`` tokens); pack faces and audio
    chunks along dim 0 with per-utterance lengths (see :mod:`e2e.data.batch`)."""
    text = tokenizer(
        [item["text"] for item in items], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return Batch(
        ids=[item["id"] for item in items],
        labels=torch.stack([item["label"] for item in items]),
        text_input_ids=text["input_ids"],
        text_attention_mask=text["attention_mask"],
        faces=torch.cat([item["faces"] for item in items]),
        face_lengths=torch.tensor([len(item["faces"]) for item in items], dtype=torch.long),
        audio=torch.cat([item["audio"] for item in items]),
        audio_lengths=torch.tensor([len(item["audio"]) for item in items], dtype=torch.long),
    )


def label_counts(dataset: EmotionDataset) -> torch.Tensor | None:
    """(C,) number of positive labels per class among the kept items; None for a regression task."""
    return None if dataset.target is not None else dataset.labels.sum(0).long()
