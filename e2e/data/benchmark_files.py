"""Standard feature files: the pickles MMSA and MulT publish (``data.source``), as the three splits of a run.

Users of those papers hold the exact feature sequences the published numbers were measured on; with
``data.source=mmsa:PATH`` or ``mult:PATH`` every feature model (``inputs="features"``) trains on them
with our trainer, metrics and tables. Two formats, both a pickled dict ``{"train", "valid", "test"}``
of per-split dicts of arrays (checked on load: a missing split or key, a non-numeric array or a shape
that does not fit is a UsageError naming the file, split, key, expected and found shape):

* **MMSA** (thuiar/MMSA, ``src/MMSA/data_loader.py``; ``aligned_50.pkl`` / ``unaligned_50.pkl`` of
  MOSI, MOSEI and CH-SIMS): ``text`` (N, L, 768 BERT or 300 GloVe), ``audio`` (N, La, Da), ``vision``
  (N, Lv, Dv), ``regression_labels`` (N,), ``id`` (N,); optional ``text_bert`` (N, 3, L: token ids,
  attention mask, segment ids), ``raw_text`` (N,), and, in the unaligned files, ``audio_lengths`` /
  ``vision_lengths`` (N,). Sentiment only (``data.task=sentiment``): MOSI and MOSEI in [-3, 3],
  CH-SIMS in [-1, 1].
* **MulT** (yaohungt/Multimodal-Transformer, ``src/dataset.py``; ``mosei_senti_data.pkl``,
  ``mosi_data.pkl``, ``iemocap_data.pkl`` and their ``_noalign`` variants): ``text``, ``audio``,
  ``vision`` (N, L, D), ``labels``, optional ``id`` (N, ...). MOSEI / MOSI: labels (N, 1, 1), the
  sentiment score. IEMOCAP (our dataset ``iemocap4``): labels (N, 4, 2), per emotion of
  :data:`MULT_IEMOCAP_CLASSES` a one-hot (negative, positive) pair; MulT takes its argmax, we the
  positive entry of a one-hot pair, so the task is four one-vs-rest binary emotions (multi-label).

Lengths: ``audio_lengths`` / ``vision_lengths`` where the file has them (unaligned MMSA), the attention
mask of ``text_bert`` for the text (MMSA's BERT features include the padding positions), else every
step. MulT's files are zero-padded to a fixed length and hold no lengths, so its padding steps are
read as steps, as MulT itself reads them.

Values: MMSA's and MulT's loaders both set ``-inf`` audio values (COVAREP's log of a zero) to 0
before training, and the published numbers were measured that way; we do the same, count them and log
the count per split, so the utterance set stays the published one. Every other non-finite feature value
(NaN, +inf, -inf in text or vision) in an utterance's steps drops the utterance as
``nonfinite_features``; a label that is not finite, out of the dataset's range or (MulT IEMOCAP) not
one-hot pairs drops it as ``bad_label``; a sequence of length 0 as ``empty_sequence``, a length
beyond the padded steps (or a text mask that is not a prefix) as ``bad_length``. Drops are counted
in ``skipped`` like those of the clip datasets.

Every modality is then standardised per dimension with the mean and std of the kept *train* steps,
exactly as :class:`e2e.data.feature_dataset.FeatureDataset` does, and items are packed by its
:func:`~e2e.data.feature_dataset.collate_features`, so every feature model reads them unchanged. The
official loaders feed the raw values (MMSA's ``need_normalized`` only averages audio and vision over
time for a few models): that difference is ours, made for all feature models alike.

The feature sizes of a file differ from those of our cached features, so the model is built for them:
:func:`with_file_dims` (called when a config is loaded) records them as ``model.input_dims``.
Pickles can run code when loaded: read only files you trust.
"""

from __future__ import annotations

import functools
import logging
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from e2e.config import REGRESSION_TASKS, ConfigError, ExperimentConfig, UsageError, format_input_dims, parse_source
from e2e.data.bundle import SPLITS, DataBundle
from e2e.data.dataset import even_subsample
from e2e.data.feature_dataset import STD_FLOOR, FeatureStatistics, collate_features

MULT_IEMOCAP_CLASSES = ("neutral", "happy", "sad", "angry")  # MulT's eval_iemocap order
SENTIMENT_RANGES = {"mosi": (-3.0, 3.0), "mosei": (-3.0, 3.0), "sims": (-1.0, 1.0)}
MODALITY_KEYS = {"t": "text", "a": "audio", "v": "vision"}  # modality -> array in both formats
LENGTH_KEYS = {"a": "audio_lengths", "v": "vision_lengths"}  # MMSA's unaligned files
STATISTICS_BLOCK = 1024  # rows per block when computing the train statistics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitArrays:
    """One split of a checked file: float32 (N, L, D) features and (N,) lengths per modality, (N, C) raw
    labels (MulT IEMOCAP: (N, 4, 2)), ids and transcripts."""

    features: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    labels: np.ndarray
    ids: list[str]
    texts: list[str]
    neg_inf_audio: int  # -inf audio values set to 0 (module docstring)


def read_feature_file(kind: str, path: Path | str) -> dict[str, SplitArrays]:
    """The checked splits of an ``mmsa`` or ``mult`` file; the last file read is kept in memory, so the
    config check and the datasets of one run load it once."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as error:
        raise UsageError(f"{path}: cannot read the {kind} feature file ({error.strerror})") from None
    return _read_cached(kind, path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def _read_cached(kind: str, path: Path, mtime_ns: int, size: int) -> dict[str, SplitArrays]:
    del mtime_ns, size  # part of the cache key only: a rewritten file is read again
    try:
        with path.open("rb") as file:
            content = pickle.load(file, encoding="latin1")  # latin1: numpy arrays pickled by Python 2
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as error:
        raise UsageError(f"{path}: not a readable {kind} pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise UsageError(f"{path}: a {kind} file holds a dict with keys train/valid/test, got {type(content).__name__}")
    splits = {split: _read_split(kind, path, split, content) for split in SPLITS}
    _check_same_dims(path, splits)
    return splits


def _read_split(kind: str, path: Path, split: str, content: dict) -> SplitArrays:
    if split not in content:
        raise UsageError(f"{path}: no split {split!r} (found keys {', '.join(map(repr, content)) or 'none'})")
    data = content[split]
    if not isinstance(data, dict):
        raise UsageError(f"{path}: split {split!r} must be a dict of arrays, got {type(data).__name__}")
    where = f"{path}: {split}"
    features = {m: _numeric(data, key, where, 3) for m, key in MODALITY_KEYS.items()}
    n = len(features["t"])
    for m, key in MODALITY_KEYS.items():
        _check_shape(features[m], (n, None, None), where, key)
    lengths = _lengths(kind, data, features, where)
    labels = _labels(kind, data, n, where)
    neg_inf = int(np.isneginf(features["a"]).sum())
    if neg_inf:
        features["a"] = np.where(np.isneginf(features["a"]), np.float32(0), features["a"])
    ids = _ids(data, n, split, where)
    texts = [str(text) for text in _optional(data, "raw_text", n, where, [""] * n)]
    return SplitArrays(features, lengths, labels, ids, texts, neg_inf)


def _numeric(data: dict, key: str, where: str, ndim: int | None = None) -> np.ndarray:
    """``data[key]`` as a numeric array of ``ndim`` dimensions (any where None); 3-d features as float32."""
    if key not in data:
        raise UsageError(f"{where}: missing key {key!r} (found {', '.join(map(repr, data))})")
    try:
        array = np.asarray(data[key])
    except ValueError as error:  # ragged nested lists
        raise UsageError(f"{where}: {key!r} is not an array ({error})") from None
    if array.dtype.kind not in "fiub":
        raise UsageError(f"{where}: {key!r} must be numeric, found dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise UsageError(f"{where}: {key!r} must have {ndim} dimensions, found shape {array.shape}")
    return array.astype(np.float32, copy=False) if ndim == 3 else array


def _check_shape(array: np.ndarray, expected: tuple[int | None, ...], where: str, key: str) -> None:
    """``expected`` holds a size per dimension, None where any size goes."""
    fits = array.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, array.shape))
    if not fits:
        shown = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise UsageError(f"{where}: {key!r} must have shape {shown}, found {array.shape}")


def _lengths(kind: str, data: dict, features: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Per modality (N,) lengths: the file's where it has them (see the module docstring), else all steps.
    Values are checked per utterance by :class:`FileFeatureDataset`, not here."""
    n = len(features["t"])
    lengths = {m: np.full(n, array.shape[1], dtype=np.int64) for m, array in features.items()}
    if kind != "mmsa":
        return lengths
    present = [key for key in LENGTH_KEYS.values() if key in data]
    if len(present) == 1:
        missing = next(key for key in LENGTH_KEYS.values() if key not in data)
        raise UsageError(f"{where}: has {present[0]!r} but not {missing!r} (an unaligned file has both)")
    for m, key in LENGTH_KEYS.items():
        if key in data:
            values = _numeric(data, key, where, 1)
            _check_shape(values, (n,), where, key)
            if not np.array_equal(values, np.round(values)):
                raise UsageError(f"{where}: {key!r} must hold whole numbers of steps, found {values[:5].tolist()}...")
            lengths[m] = values.astype(np.int64)
    if "text_bert" in data:
        tokens = _numeric(data, "text_bert", where, 3)
        _check_shape(tokens, (n, 3, features["t"].shape[1]), where, "text_bert")
        lengths["t"] = _mask_lengths(tokens[:, 1])
    return lengths


def _mask_lengths(mask: np.ndarray) -> np.ndarray:
    """Number of leading ones of each (L,) attention mask; -1 where the ones are not a prefix (a mask
    we cannot read as a length)."""
    ones = (mask == 1).sum(1)
    prefix = np.arange(mask.shape[1])[None] < ones[:, None]
    valid = ((mask == 1) == prefix).all(1) & ((mask == 0) | (mask == 1)).all(1)
    return np.where(valid, ones, -1).astype(np.int64)


def _labels(kind: str, data: dict, n: int, where: str) -> np.ndarray:
    """MMSA: (N, 1) sentiment; MulT: (N, 1) sentiment from (N, 1, 1) or the raw (N, 4, 2) IEMOCAP pairs."""
    if kind == "mmsa":
        key = "regression_labels"
        labels = _numeric(data, key, where)
        if labels.shape not in ((n,), (n, 1)):
            raise UsageError(f"{where}: {key!r} must have shape ({n},), found {labels.shape}")
        return labels.reshape(n, 1).astype(np.float64)
    labels = _numeric(data, "labels", where, 3)
    if labels.shape[1:] not in ((1, 1), (len(MULT_IEMOCAP_CLASSES), 2)):
        raise UsageError(
            f"{where}: 'labels' must have shape ({n}, 1, 1) (sentiment) or ({n}, 4, 2) (IEMOCAP), found {labels.shape}"
        )
    _check_shape(labels, (n, None, None), where, "labels")
    return labels.reshape(n, 1).astype(np.float64) if labels.shape[1:] == (1, 1) else labels.astype(np.float64)


def _ids(data: dict, n: int, split: str, where: str) -> list[str]:
    """The ``id`` entries as strings (MulT's rows of fields joined by ``_``, bytes decoded); made unique
    with ``#index`` where the file repeats one; ``split/index`` where the file has no ids (MulT allows it)."""
    raw = _optional(data, "id", n, where, None)
    if raw is None:
        return [f"{split}/{index}" for index in range(n)]
    names = [_id_text(value) for value in raw]
    if len(set(names)) == n:
        return names
    return [f"{name}#{index}" for index, name in enumerate(names)]


def _id_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray | list | tuple):
        return "_".join(_id_text(part) for part in value)
    return str(value)


def _optional(data: dict, key: str, n: int, where: str, default):
    if key not in data:
        return default
    values = np.asarray(data[key], dtype=object)
    if values.ndim == 0 or len(values) != n:
        raise UsageError(f"{where}: {key!r} must have {n} entries (one per utterance), found shape {values.shape}")
    return values


def _check_same_dims(path: Path, splits: dict[str, SplitArrays]) -> None:
    reference = file_dims(splits)
    for split, arrays in splits.items():
        dims = {m: array.shape[2] for m, array in arrays.features.items()}
        if dims != reference:
            raise UsageError(
                f"{path}: {split} has feature sizes {format_input_dims(dims)}, train has {format_input_dims(reference)}"
            )
    shapes = {split: arrays.labels.shape[1:] for split, arrays in splits.items()}
    if len(set(shapes.values())) > 1:
        raise UsageError(f"{path}: the splits' labels differ in shape: {shapes}")


def file_dims(splits: dict[str, SplitArrays]) -> dict[str, int]:
    """Feature size per modality (t, a, v) of a checked file (its train split)."""
    return {m: array.shape[2] for m, array in splits["train"].features.items()}


def class_names(dataset: str, task: str) -> tuple[str, ...]:
    """The outputs a file dataset trains: MulT's four IEMOCAP emotions, or the sentiment score."""
    return MULT_IEMOCAP_CLASSES if dataset == "iemocap4" else (task,)


def with_file_dims(config: ExperimentConfig, source: str, inputs: str) -> ExperimentConfig:
    """``config`` (whose ``data.source`` is a file) with ``model.input_dims`` set to the file's feature
    sizes; a ConfigError naming ``source`` when the model reads raw clips (``inputs``), the file's labels
    do not fit ``data.dataset``, or ``model.input_dims`` was set to other sizes."""
    kind, path = parse_source(config.data.source)
    if inputs != "features":
        raise ConfigError(
            f"{source}: data.source={config.data.source!r} holds feature sequences, but model "
            f"{config.model.name!r} reads raw clips (inputs={inputs!r}); use a feature model"
        )
    splits = read_feature_file(kind, path)
    _check_labels_fit(config, splits, path)
    dims = format_input_dims(file_dims(splits))
    if config.model.input_dims not in ("", dims):
        raise ConfigError(
            f"{source}: model.input_dims={config.model.input_dims!r}, but {path} has feature sizes {dims}"
        )
    return replace(config, model=replace(config.model, input_dims=dims))


def _check_labels_fit(config: ExperimentConfig, splits: dict[str, SplitArrays], path: Path) -> None:
    shape = splits["train"].labels.shape[1:]
    expected = (len(MULT_IEMOCAP_CLASSES), 2) if config.data.dataset == "iemocap4" else (1,)
    if shape != expected:
        found = "IEMOCAP's (N, 4, 2) emotion pairs" if len(shape) == 2 else "one sentiment score per utterance"
        raise ConfigError(f"{path}: holds {found}, which data.dataset={config.data.dataset!r} does not label")


class FileFeatureDataset(Dataset):
    """Items of one split of a feature file, as :class:`e2e.data.feature_dataset.FeatureDataset` gives
    them: ``id``, ``text``, ``label`` (C,) and the standardised ``t``/``a``/``v`` sequences (L, D).

    ``statistics`` None standardises with this split's own statistics (only right for train)."""

    def __init__(
        self, arrays: SplitArrays, split: str, config: ExperimentConfig, statistics: FeatureStatistics | None = None
    ):
        self.arrays, self.split, self.dataset, self.source = arrays, split, config.data.dataset, config.data.source
        self.limits = {"a": config.data.max_chunks, "v": config.data.max_frames}
        self.class_names = class_names(config.data.dataset, config.data.task)
        self.skipped: dict[str, list[str]] = {}
        self.rows: list[int] = []
        self.targets: list[torch.Tensor] = []
        for row in range(len(arrays.ids)):
            self._admit(row)
        self._report()
        self.statistics = statistics if statistics is not None else self._compute_statistics()

    @property
    def labels(self) -> torch.Tensor:
        """(N, C) labels of the kept items."""
        return torch.stack(self.targets)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        result = {"id": self.arrays.ids[row], "text": self.arrays.texts[row], "label": self.targets[index]}
        for modality, sequence in self._raw_sequences(row).items():
            sequence = sequence[even_subsample(len(sequence), self.limits.get(modality, 0))]
            result[modality] = (sequence - self.statistics.mean[modality]) / self.statistics.std[modality]
        return result

    def collator(self):
        return collate_features

    def _raw_sequences(self, row: int) -> dict[str, torch.Tensor]:
        return {
            m: torch.from_numpy(np.array(array[row, : self.arrays.lengths[m][row]], dtype=np.float32))
            for m, array in self.arrays.features.items()
        }

    def _admit(self, row: int) -> None:
        label, problem = self._label(row)
        if problem is None:
            problem = self._check_sequences(row)
        if problem is None:
            self.rows.append(row)
            self.targets.append(label)
            return
        reason, message = problem
        item_id = self.arrays.ids[row]
        self.skipped.setdefault(reason, []).append(item_id)
        logger.warning("%s: skipping %s (%s): %s", self.split, item_id, reason, message)

    def _label(self, row: int) -> tuple[torch.Tensor | None, tuple[str, str] | None]:
        raw = self.arrays.labels[row]
        if not np.isfinite(raw).all():
            return None, ("bad_label", f"label {raw.tolist()} is not finite")
        if self.dataset == "iemocap4":
            if not (np.isin(raw, (0.0, 1.0)).all() and (raw.sum(1) == 1).all()):
                return None, ("bad_label", f"label {raw.tolist()} is not four one-hot (negative, positive) pairs")
            return torch.tensor(raw[:, 1], dtype=torch.float32), None
        low, high = SENTIMENT_RANGES[self.dataset]
        if not low <= raw[0] <= high:
            return None, ("bad_label", f"sentiment {raw[0]:g} is outside [{low:g}, {high:g}] of {self.dataset}")
        return torch.tensor(raw, dtype=torch.float32), None

    def _check_sequences(self, row: int) -> tuple[str, str] | None:
        for modality, array in self.arrays.features.items():
            name, length = MODALITY_KEYS[modality], int(self.arrays.lengths[modality][row])
            if length == 0:
                return "empty_sequence", f"{name} has length 0"
            if length < 0 and modality == "t":
                return "bad_length", "the attention mask of text_bert is not a run of ones from the start"
            if not 0 < length <= array.shape[1]:
                return "bad_length", f"{name} length {length} is outside 1..{array.shape[1]} (the padded steps)"
            bad = int((~np.isfinite(array[row, :length])).sum())
            if bad:
                return "nonfinite_features", f"{bad} NaN/inf values in {name}"
        return None

    def _report(self) -> None:
        counts = ", ".join(f"{reason} {len(ids)}" for reason, ids in sorted(self.skipped.items()))
        if not self.rows:
            raise UsageError(
                f"data.source={self.source}: no usable utterances in split {self.split!r} "
                f"({len(self.arrays.ids)} in the file; skipped: {counts or 'none'})"
            )
        if self.skipped:
            logger.warning(
                "%s: kept %d of %d utterances; skipped %s", self.split, len(self.rows), len(self.arrays.ids), counts
            )
        if self.arrays.neg_inf_audio:
            logger.warning(
                "%s: set %d -inf audio values to 0, as MMSA's and MulT's loaders do",
                self.split,
                self.arrays.neg_inf_audio,
            )

    def _compute_statistics(self) -> FeatureStatistics:
        """Per-dimension mean and std over the kept items' steps, as FeatureDataset computes them (float64
        sums of x and x², std floored at STD_FLOOR), in blocks of rows to bound the memory on MOSEI-sized files."""
        rows = np.asarray(self.rows)
        mean, std = {}, {}
        for modality, array in self.arrays.features.items():
            sums, squares, count = np.zeros(array.shape[2]), np.zeros(array.shape[2]), 0
            for start in range(0, len(rows), STATISTICS_BLOCK):
                block = rows[start : start + STATISTICS_BLOCK]
                kept = np.arange(array.shape[1])[None] < self.arrays.lengths[modality][block][:, None]
                steps = array[block][kept].astype(np.float64)
                sums, squares, count = sums + steps.sum(0), squares + np.square(steps).sum(0), count + len(steps)
            average = sums / count
            mean[modality] = torch.from_numpy(average).float()
            spread = np.sqrt(np.maximum(squares / count - np.square(average), 0.0))
            std[modality] = torch.from_numpy(np.maximum(spread, STD_FLOOR)).float()
        return FeatureStatistics(mean, std)


def build_file_datasets(config: ExperimentConfig) -> DataBundle:
    """The three splits of the ``data.source`` file, valid and test standardised with train's statistics."""
    kind, path = parse_source(config.data.source)
    splits = read_feature_file(kind, path)
    dims = format_input_dims(file_dims(splits))
    if config.model.input_dims != dims:
        raise UsageError(
            f"{path} has feature sizes {dims}, but the model was built for model.input_dims="
            f"{config.model.input_dims!r} (was the file replaced since the run started?)"
        )
    train = FileFeatureDataset(splits["train"], "train", config)
    datasets = {
        "train": train,
        **{split: FileFeatureDataset(splits[split], split, config, train.statistics) for split in ("valid", "test")},
    }
    regression = config.data.task in REGRESSION_TASKS
    return DataBundle(
        **datasets,
        class_names=list(train.class_names),
        collate_fn=collate_features,
        train_positives=None if regression else train.labels.sum(0),
        skipped={
            split: {reason: len(ids) for reason, ids in sorted(dataset.skipped.items())}
            for split, dataset in datasets.items()
        },
        fallbacks={
            split: {"neg_inf_audio_set_to_0": dataset.arrays.neg_inf_audio}
            for split, dataset in datasets.items()
            if dataset.arrays.neg_inf_audio
        },
    )
