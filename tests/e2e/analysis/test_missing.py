"""Test-time missing-input transforms on raw and feature batches."""

from __future__ import annotations

import torch

from e2e.analysis.missing import drop_elements, drop_modalities
from e2e.data.batch import Batch
from e2e.reporting.plots import plot_missing
from tests.helpers.features import feature_batch

CLS, SEP = 101, 102


def raw_batch() -> Batch:
    """Faces/chunks numbered by their packed position so order and identity can be checked."""
    face_lengths, audio_lengths = torch.tensor([4, 1, 6]), torch.tensor([2, 8, 3])
    ids = torch.tensor([[CLS, 5, 6, 7, 8, SEP], [CLS, 9, SEP, 0, 0, 0], [CLS, SEP, 0, 0, 0, 0]])
    return Batch(
        ids=["a", "b", "c"],
        labels=torch.eye(3),
        text_input_ids=ids,
        text_attention_mask=(ids > 0).long(),
        faces=torch.arange(11.0).view(11, 1, 1, 1).expand(11, 3, 48, 48).clone(),
        face_lengths=face_lengths,
        audio=torch.arange(13.0).view(13, 1, 1, 1).expand(13, 1, 128, 32).clone(),
        audio_lengths=audio_lengths,
    )


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _face_ids(batch: Batch) -> list[list[float]]:
    return [piece[:, 0, 0, 0].tolist() for piece in batch.faces.split(batch.face_lengths.tolist())]


def test_rate_zero_is_the_identity():
    batch = raw_batch()
    for transform in (drop_elements, drop_modalities):
        out = transform(batch, 0.0, _generator())
        assert torch.equal(out.faces, batch.faces) and torch.equal(out.text_input_ids, batch.text_input_ids)
        assert torch.equal(out.audio_lengths, batch.audio_lengths)


def test_drop_elements_halves_lengths_keeps_order_and_one_element():
    batch = raw_batch()
    out = drop_elements(batch, 0.5, _generator())
    # dropped: round(rate * n), half to even (round(1.5) = 2): 3 chunks keep 1
    assert out.face_lengths.tolist() == [2, 1, 3] and out.audio_lengths.tolist() == [1, 4, 1]
    for kept, original in zip(_face_ids(out), _face_ids(batch)):
        assert kept == sorted(kept) and set(kept) <= set(original)
    for rate in (0.9, 1.0):
        heavy = drop_elements(batch, rate, _generator())
        assert (heavy.face_lengths >= 1).all() and (heavy.audio_lengths >= 1).all()
    assert torch.equal(batch.faces, raw_batch().faces)  # input untouched


def test_drop_elements_keeps_special_tokens():
    out = drop_elements(raw_batch(), 0.5, _generator())
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(out.text_input_ids, out.text_attention_mask)]
    assert [len(row) for row in rows] == [4, 3, 2]  # 4 inner tokens -> 2, 1 -> 1 (at least one), 0 -> 0
    assert all(row[0] == CLS and row[-1] == SEP for row in rows)
    assert out.text_attention_mask[:, 0].all()  # left-aligned


def test_same_generator_seed_same_result():
    first, second = (drop_elements(raw_batch(), 0.5, _generator(3)) for _ in range(2))
    assert torch.equal(first.faces, second.faces) and torch.equal(first.text_input_ids, second.text_input_ids)


def test_drop_modalities_at_rate_one_keeps_exactly_one_modality():
    batch = feature_batch(batch_size=20)
    out = drop_modalities(batch, 1.0, _generator())
    emptied = []
    for modality in "tav":
        packed, lengths = out.features(modality)
        pieces = packed.split(lengths.tolist())
        emptied.append(torch.tensor([len(p) == 1 and not p.any() for p in pieces]))
    assert (torch.stack(emptied, 1).sum(1) == 2).all()


def test_drop_modalities_on_raw_text_leaves_cls_sep():
    out = drop_modalities(raw_batch(), 1.0, _generator(1))
    text_gone = out.text_attention_mask.sum(1) == 2
    faces_gone = torch.tensor([len(p) == 1 and not p.any() for p in out.faces.split(out.face_lengths.tolist())])
    audio_gone = torch.tensor([len(p) == 1 and not p.any() for p in out.audio.split(out.audio_lengths.tolist())])
    assert ((text_gone.long() + faces_gone.long() + audio_gone.long()) >= 2).all()


def test_feature_batch_elements(tmp_path):
    batch = feature_batch()
    out = drop_elements(batch, 0.5, _generator())
    for modality in "tav":
        _, lengths = batch.features(modality)
        assert torch.equal(out.features(modality)[1], torch.clamp(lengths - torch.round(0.5 * lengths).long(), min=1))
    rows = [
        {"model": m, "mode": mode, "rate": r, "seed": s, "acc": 0.5 - 0.2 * r}
        for m in ("a", "b")
        for mode in ("elements", "modalities")
        for r in (0.0, 0.5)
        for s in (0, 1)
    ]
    plot_missing(rows, "acc", tmp_path / "missing.png")
    assert (tmp_path / "missing.png").stat().st_size > 5000
