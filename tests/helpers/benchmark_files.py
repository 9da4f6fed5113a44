"""Miniature MMSA and MulT feature pickles in their published formats (see :mod:`e2e.data.benchmark_files`).

A few utterances per split, small feature sizes; each utterance's label is written into a few
dimensions of every modality (plus noise), so the files are learnable. Tests edit the returned dicts
to build malformed variants before :func:`write_pickle`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

SIZES = {"train": 16, "valid": 8, "test": 8}
DIMS = {"text": 12, "audio": 5, "vision": 7}  # MMSA's MOSI sizes are 768 / 5 / 20; smaller here
STEPS = {"text": 9, "audio": 11, "vision": 10}  # padded length per modality (50 in MMSA's files)


def mmsa_content(aligned: bool = False, seed: int = 0, sentiment_range: float = 3.0) -> dict:
    """An MMSA ``unaligned_50.pkl`` (or, ``aligned``, ``aligned_50.pkl``: one length for all modalities and
    no ``*_lengths`` keys), sentiment scores in [-sentiment_range, sentiment_range]."""
    rng = np.random.default_rng(seed)
    content = {}
    for split, n in SIZES.items():
        scores = np.round(rng.uniform(-sentiment_range, sentiment_range, n) * 3) / 3
        scores[0] = 0.0  # a neutral utterance, as the corpora have
        steps = {m: STEPS["text"] for m in STEPS} if aligned else STEPS
        lengths = {m: rng.integers(2, steps[m] + 1, n) for m in STEPS}
        data = {m: _sequences(rng, scores, steps[m], DIMS[m], lengths[m]) for m in STEPS}
        mask = (np.arange(steps["text"])[None] < lengths["text"][:, None]).astype(np.float32)
        ids = rng.integers(100, 30000, (n, steps["text"])) * mask
        data["text_bert"] = np.stack([ids, mask, np.zeros_like(mask)], axis=1).astype(np.float32)
        data.update(
            regression_labels=scores.astype(np.float32),
            classification_labels=np.sign(scores).astype(np.float32) + 1,
            id=np.array([f"video{split}{i // 3}$_${i % 3}" for i in range(n)], dtype=object),
            raw_text=np.array([f"utterance {i} of {split}" for i in range(n)], dtype=object),
        )
        if not aligned:
            data["audio_lengths"] = [int(length) for length in lengths["audio"]]  # MMSA stores lists
            data["vision_lengths"] = [int(length) for length in lengths["vision"]]
        content[split] = data
    return content


def mult_content(iemocap: bool = True, seed: int = 0) -> dict:
    """A MulT ``iemocap_data.pkl`` (labels (N, 4, 2), one emotion per utterance) or, without ``iemocap``,
    ``mosei_senti_data.pkl`` (labels (N, 1, 1)); zero-padded to fixed lengths, ids (N, 3) of bytes."""
    rng = np.random.default_rng(seed)
    content = {}
    for split, n in SIZES.items():
        if iemocap:
            emotion = np.arange(n) % 4
            positive = np.eye(4)[emotion]
            labels = np.stack([1 - positive, positive], axis=-1)
            signal = emotion - 1.5
        else:
            signal = np.round(rng.uniform(-3, 3, n) * 3) / 3
            labels = signal.reshape(n, 1, 1)
        lengths = {m: rng.integers(2, STEPS[m] + 1, n) for m in STEPS}
        data = {m: _sequences(rng, signal, STEPS[m], DIMS[m], lengths[m]) for m in STEPS}
        data["labels"] = labels.astype(np.float32)
        data["id"] = np.array([[f"Ses0{i}".encode(), str(i).encode(), b"0"] for i in range(n)], dtype=object)
        content[split] = data
    return content


def _sequences(rng, signal: np.ndarray, steps: int, dim: int, lengths: np.ndarray) -> np.ndarray:
    """(N, steps, dim) float32: ``signal`` on the first two dimensions plus noise, zero beyond each length."""
    values = rng.normal(0.0, 0.3, (len(signal), steps, dim))
    values[:, :, :2] += signal[:, None, None]
    values[np.arange(steps)[None] >= lengths[:, None]] = 0.0
    return values.astype(np.float32)


def write_pickle(path: Path, content: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        pickle.dump(content, file, protocol=4)
    return path
