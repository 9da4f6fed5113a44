"""Test-time missing inputs for the robustness sweep (:mod:`e2e.experiments.missing`), for every model kind.

Both transforms are pure (the input batch is never changed). What they drop is a function of
(``seed``, utterance id, modality, sequence length, rate) only: it does not depend on the batch size,
on the other utterances of the batch, on the order of the batch's fields, on the input kind (raw clips
or feature sequences) or on the device, so every model of a sweep loses the same inputs wherever they
can be the same. Every draw comes from a stable hash (:func:`hashlib.blake2b` of the key, then
SplitMix64 per position), not from a generator consumed batch by batch or from Python's salted
``hash()``: the same on every machine and in every run.

* :func:`drop_elements` removes ``round(rate * n)`` (half to even) of each utterance's n face frames,
  mel chunks, feature steps or ordinary text tokens, keeping order and at least one. Every position
  of a sequence gets a key from (seed, id, modality, position); the positions with the lowest keys go.
  Hence two models whose sequences of that modality have the same n drop exactly the same positions
  (raw faces and visual feature steps are both the face cache's frames after the same ``max_frames``
  subsampling; raw tokens and text feature steps are the same tokenisation when the text model and
  ``text_max_length`` match), and a higher rate drops a superset of what a lower one drops. Where
  the counts differ (mel chunks vs 100 ms acoustic descriptors) the drops cannot coincide: both lose
  the same fraction, at positions drawn from the same keys.
* Special tokens are kept the same way for both text forms: the first (CLS) and last (SEP) valid token
  of raw text, and the first and last step of a text feature sequence (the cache keeps the encoder's
  states of CLS and SEP, :class:`e2e.data.sequences.TokenEmbedder`); only the n - 2 steps between
  them are dropped from, and a sequence of two or fewer is kept whole. Raw rows are re-packed
  left-aligned. Cached text states are contextual (each carries the whole utterance), so dropping
  them removes less than dropping tokens before the encoder does; that is a property of two-stage
  features, not something this module can equalise.
* :func:`drop_modalities` gives each modality of an utterance a uniform draw u from (seed, id,
  modality) and removes it when u < rate; when all three would go, the one with the highest u stays.
  The three draws do not depend on the input kind or on which modalities a model reads, so every
  model loses the same modalities of the same utterances (and a higher rate removes a superset).
  A removed modality takes its empty form: a single all-zero frame / chunk / feature step (zero is
  the dataset mean after normalisation), or CLS + SEP only for raw text. Removed text features are a
  zero step too, not the utterance's own CLS/SEP states, which would still carry the removed text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import torch

from e2e.config import UsageError
from e2e.data.batch import FEATURE_FIELDS, Batch

MODALITIES = ("t", "a", "v")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64 constants
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def check_rate(rate: float) -> None:
    """Raise :class:`UsageError` unless ``0 <= rate <= 1``."""
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"a missing-input rate must be in [0, 1], got {rate}")


def _key(seed: int, mode: str, utterance_id: str, modality: str) -> int:
    """A 64-bit integer from a stable hash of the draw's key."""
    text = json.dumps([seed, mode, utterance_id, modality])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _position_keys(key: int, n: int) -> np.ndarray:
    """SplitMix64 outputs for positions 0..n-1 of the stream ``key`` (uint64 arithmetic wraps)."""
    z = np.uint64(key) + _GOLDEN * np.arange(1, n + 1, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _kept(key: int, n: int, rate: float) -> torch.Tensor:
    """Sorted kept positions of ``range(n)``: all but the ``round(rate * n)`` lowest-keyed, at least one."""
    dropped = min(round(rate * n), n - 1)
    order = np.argsort(_position_keys(key, n), kind="stable")
    return torch.from_numpy(np.sort(order[dropped:]))


def kept_positions(seed: int, utterance_id: str, modality: str, n: int, rate: float) -> torch.Tensor:
    """The positions of an n-long sequence of ``modality`` that :func:`drop_elements` keeps (sorted);
    for text (``"t"``) the first and last position are the special tokens and always stay."""
    key = _key(seed, "elements", utterance_id, modality)
    if modality != "t":
        return _kept(key, n, rate)
    if n <= 2:
        return torch.arange(n)
    return torch.cat([torch.tensor([0]), 1 + _kept(key, n - 2, rate), torch.tensor([n - 1])])


def removed_modalities(seed: int, utterance_id: str, rate: float) -> list[bool]:
    """Whether :func:`drop_modalities` removes each of :data:`MODALITIES` for this utterance."""
    draws = [(_key(seed, "modalities", utterance_id, m) >> 11) / 2.0**53 for m in MODALITIES]
    removed = [u < rate for u in draws]
    if all(removed):
        removed[draws.index(max(draws))] = False
    return removed


def _packed_fields(batch: Batch) -> dict[str, tuple[str, str]]:
    """modality -> (packed field, lengths field) of the packed inputs this batch holds (raw text is not packed)."""
    if batch.text_features is not None:
        return {m: (name, name.replace("_features", "_feature_lengths")) for m, name in FEATURE_FIELDS.items()}
    return {"a": ("audio", "audio_lengths"), "v": ("faces", "face_lengths")}


def _select_packed(packed: torch.Tensor, lengths: list[int], kept: list[torch.Tensor]) -> torch.Tensor:
    starts = np.cumsum([0, *lengths[:-1]]).tolist()
    index = torch.cat([start + positions for start, positions in zip(starts, kept)])
    return packed[index.to(packed.device)]


def _token_rows(batch: Batch) -> list[torch.Tensor]:
    """Each row's valid token ids."""
    return [ids[mask.bool()] for ids, mask in zip(batch.text_input_ids, batch.text_attention_mask)]


def _special_tokens(row: torch.Tensor) -> torch.Tensor:
    """The CLS and SEP tokens of a row of valid token ids (the whole row when it has two or fewer)."""
    return row if len(row) <= 2 else row[[0, -1]]


def drop_elements(batch: Batch, rate: float, seed: int) -> Batch:
    """See the module docstring."""
    check_rate(rate)
    changes = {}
    for modality, (packed_name, lengths_name) in _packed_fields(batch).items():
        lengths = getattr(batch, lengths_name)
        kept = [kept_positions(seed, uid, modality, n, rate) for uid, n in zip(batch.ids, lengths.tolist())]
        changes[packed_name] = _select_packed(getattr(batch, packed_name), lengths.tolist(), kept)
        changes[lengths_name] = torch.tensor([len(k) for k in kept], dtype=lengths.dtype, device=lengths.device)
    if batch.text_input_ids is not None:
        rows = [
            row[kept_positions(seed, uid, "t", len(row), rate).to(row.device)]
            for uid, row in zip(batch.ids, _token_rows(batch))
        ]
        changes.update(_pack_tokens(rows, batch.text_input_ids))
    return dataclasses.replace(batch, **changes)


def _pack_tokens(rows: list[torch.Tensor], like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Left-aligned (B, max len) input ids (padded with 0) and their attention mask."""
    width = max(len(row) for row in rows)
    ids = like.new_zeros(len(rows), width)
    mask = like.new_zeros(len(rows), width)
    for b, row in enumerate(rows):
        ids[b, : len(row)], mask[b, : len(row)] = row, 1
    return {"text_input_ids": ids, "text_attention_mask": mask}


def drop_modalities(batch: Batch, rate: float, seed: int) -> Batch:
    """See the module docstring."""
    check_rate(rate)
    removed = torch.tensor([removed_modalities(seed, uid, rate) for uid in batch.ids], dtype=torch.bool)
    changes = {}
    for modality, (packed_name, lengths_name) in _packed_fields(batch).items():
        gone = removed[:, MODALITIES.index(modality)]
        if gone.any():
            changes.update(
                _empty_where(getattr(batch, packed_name), getattr(batch, lengths_name), gone, packed_name, lengths_name)
            )
    gone_text = removed[:, MODALITIES.index("t")]
    if batch.text_input_ids is not None and gone_text.any():
        rows = [_special_tokens(row) if gone else row for row, gone in zip(_token_rows(batch), gone_text.tolist())]
        changes.update(_pack_tokens(rows, batch.text_input_ids))
    return dataclasses.replace(batch, **changes)


def _empty_where(
    packed: torch.Tensor, lengths: torch.Tensor, gone: torch.Tensor, packed_name: str, lengths_name: str
) -> dict[str, torch.Tensor]:
    """Replace the sequences of the ``gone`` utterances by one all-zero element each."""
    pieces = packed.split(lengths.tolist())
    empty = packed.new_zeros(1, *packed.shape[1:])
    rebuilt = [empty if g else piece for piece, g in zip(pieces, gone.tolist())]
    new_lengths = torch.where(gone.to(lengths.device), torch.ones_like(lengths), lengths)
    return {packed_name: torch.cat(rebuilt), lengths_name: new_lengths}
