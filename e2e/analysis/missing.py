"""Test-time missing inputs for the robustness sweep (:mod:`e2e.experiments.missing`), for every model kind.

Both transforms are pure (the input batch is never changed) and deterministic given the generator.

* :func:`drop_elements` removes ``round(rate * n)`` of each utterance's n face frames, mel chunks,
  feature steps or text tokens, chosen at random, keeping order and at least one element. For raw text
  only ordinary tokens are dropped: the first (CLS) and last valid (SEP) token of every row stay, and
  the rows are re-packed left-aligned.
* :func:`drop_modalities` removes each modality of each utterance with probability ``rate``, always
  keeping one (chosen at random among the utterance's modalities). A removed modality takes its
  empty form: a single all-zero frame / chunk / feature step (zero is the dataset mean after
  normalisation), or CLS + SEP only for raw text.
"""

from __future__ import annotations

import dataclasses

import torch

from e2e.data.batch import FEATURE_FIELDS, Batch

MODALITIES = ("t", "a", "v")


def _packed_fields(batch: Batch) -> dict[str, tuple[str, str]]:
    """modality -> (packed field, lengths field) of the non-text packed inputs this batch holds."""
    if batch.text_features is not None:
        return {m: (name, name.replace("_features", "_feature_lengths")) for m, name in FEATURE_FIELDS.items()}
    return {"a": ("audio", "audio_lengths"), "v": ("faces", "face_lengths")}


def _keep_counts(lengths: torch.Tensor, rate: float) -> torch.Tensor:
    """``n - round(rate * n)`` per length (half to even), at least 1."""
    return torch.clamp(lengths - torch.round(rate * lengths.float()).long(), min=1)


def _choose(length: int, keep: int, generator: torch.Generator) -> torch.Tensor:
    """``keep`` sorted random indices of ``range(length)``."""
    return torch.randperm(length, generator=generator)[:keep].sort().values


def _select_packed(packed: torch.Tensor, lengths: torch.Tensor, chosen: list[torch.Tensor]) -> torch.Tensor:
    starts = (lengths.cumsum(0) - lengths).tolist()
    index = torch.cat([start + picks for start, picks in zip(starts, chosen)])
    return packed[index.to(packed.device)]


def drop_elements(batch: Batch, rate: float, generator: torch.Generator) -> Batch:
    """See the module docstring."""
    changes = {}
    for packed_name, lengths_name in _packed_fields(batch).values():
        lengths = getattr(batch, lengths_name)
        keep = _keep_counts(lengths, rate)
        chosen = [_choose(int(n), int(k), generator) for n, k in zip(lengths.tolist(), keep.tolist())]
        changes[packed_name] = _select_packed(getattr(batch, packed_name), lengths, chosen)
        changes[lengths_name] = keep.to(lengths.device)
    if batch.text_input_ids is not None:
        rows = []
        for ids, mask in zip(batch.text_input_ids, batch.text_attention_mask):
            valid = ids[mask.bool()]
            inner = valid[1:-1]
            keep = int(_keep_counts(torch.tensor([len(inner)]), rate)) if len(inner) else 0
            rows.append(torch.cat([valid[:1], inner[_choose(len(inner), keep, generator).to(ids.device)], valid[-1:]]))
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


def drop_modalities(batch: Batch, rate: float, generator: torch.Generator) -> Batch:
    """See the module docstring."""
    removed = torch.rand(len(batch), len(MODALITIES), generator=generator) < rate
    rescued = torch.randint(len(MODALITIES), (len(batch),), generator=generator)
    everything = removed.all(1)
    removed[everything, rescued[everything]] = False
    changes = {}
    for modality, (packed_name, lengths_name) in _packed_fields(batch).items():
        gone = removed[:, MODALITIES.index(modality)]
        if gone.any():
            changes.update(
                _empty_where(getattr(batch, packed_name), getattr(batch, lengths_name), gone, packed_name, lengths_name)
            )
    gone_text = removed[:, 0]
    if batch.text_input_ids is not None and gone_text.any():
        rows = [ids[mask.bool()] for ids, mask in zip(batch.text_input_ids, batch.text_attention_mask)]
        rows = [torch.cat([row[:1], row[-1:]]) if gone else row for row, gone in zip(rows, gone_text.tolist())]
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
