"""Test-time missing-input transforms on raw and feature batches: what is dropped depends on the utterance
(id, modality, length), the rate and the seed only, never on the batching or the input kind."""

from __future__ import annotations

import pytest
import torch

from e2e.analysis.missing import MODALITIES, drop_elements, drop_modalities, kept_positions, removed_modalities
from e2e.config import UsageError
from e2e.data.batch import FEATURE_FIELDS, Batch
from e2e.reporting.plots import plot_missing
from tests.helpers.features import feature_batch

CLS, SEP = 101, 102
IDS = [f"Ses01F_impro0{i}_F00{i}" for i in range(8)]
FACES = [4, 1, 6, 9, 2, 5, 3, 7]  # per utterance in IDS
CHUNKS = [2, 8, 3, 1, 5, 4, 6, 2]
TOKENS = [4, 1, 0, 6, 3, 2, 5, 9]  # ordinary tokens between CLS and SEP
AUDIO_STEPS = [20, 11, 9, 3, 14, 8, 1, 6]  # 100 ms descriptors: other counts than the mel chunks


def _numbered(n: int, *shape: int) -> torch.Tensor:
    """n elements whose every entry is their position plus one (so no element looks like the all-zero
    empty form, and the position survives any selection)."""
    return torch.arange(1.0, n + 1).view(n, *([1] * len(shape))).expand(n, *shape).clone()


def raw_batch(order: list[int] | None = None) -> Batch:
    """The utterances of IDS (in ``order``) as raw inputs; token j of a row is 1000 + j (CLS, SEP at the ends)."""
    order = list(range(len(IDS))) if order is None else order
    rows = [torch.tensor([CLS, *range(1001, 1001 + TOKENS[i]), SEP]) for i in order]
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return Batch(
        ids=[IDS[i] for i in order],
        labels=torch.eye(len(IDS))[order],
        text_input_ids=ids,
        text_attention_mask=(ids > 0).long(),
        faces=torch.cat([_numbered(FACES[i], 3, 48, 48) for i in order]),
        face_lengths=torch.tensor([FACES[i] for i in order]),
        audio=torch.cat([_numbered(CHUNKS[i], 1, 128, 32) for i in order]),
        audio_lengths=torch.tensor([CHUNKS[i] for i in order]),
    )


def features_of(order: list[int] | None = None) -> Batch:
    """The same utterances as feature sequences: text steps = CLS + tokens + SEP, visual steps = the faces,
    audio steps of other counts; every entry of a step is its position."""
    order = list(range(len(IDS))) if order is None else order
    lengths = {"text": [TOKENS[i] + 2 for i in order], "audio": [AUDIO_STEPS[i] for i in order]}
    lengths["visual"] = [FACES[i] for i in order]
    fields = {}
    for name, counts in lengths.items():
        fields[f"{name}_features"] = torch.cat([_numbered(n, 5) for n in counts])
        fields[f"{name}_feature_lengths"] = torch.tensor(counts)
    return Batch(ids=[IDS[i] for i in order], labels=torch.eye(len(IDS))[order], **fields)


def _sequences(batch: Batch) -> dict[str, dict[str, list[float]]]:
    """modality name -> utterance id -> the positions (or raw token ids) of what the batch holds; an
    empty form (all-zero element) shows as position -1."""
    packed = {
        "faces": (batch.faces, batch.face_lengths),
        "audio": (batch.audio, batch.audio_lengths),
        **{FEATURE_FIELDS[m]: batch.features(m) for m in MODALITIES if batch.text_features is not None},
    }
    result = {}
    for name, (values, lengths) in packed.items():
        if values is not None:
            pieces = values.split(lengths.tolist())
            result[name] = {uid: (piece.flatten(1)[:, 0] - 1).tolist() for uid, piece in zip(batch.ids, pieces)}
    if batch.text_input_ids is not None:
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch.text_input_ids, batch.text_attention_mask)]
        result["tokens"] = dict(zip(batch.ids, rows))
    return result


def _in_batches(make, transform, size: int) -> dict[str, dict[str, list[float]]]:
    """What ``transform`` leaves of every utterance when IDS come in batches of ``size``, in reverse order."""
    merged: dict[str, dict[str, list[float]]] = {}
    order = list(reversed(range(len(IDS))))
    for start in range(0, len(order), size):
        for name, per_id in _sequences(transform(make(order[start : start + size]))).items():
            merged.setdefault(name, {}).update(per_id)
    return merged


def _emptied(batch: Batch) -> dict[str, tuple[bool, bool, bool]]:
    """utterance id -> whether its text, audio and visual input is in its empty form."""
    if batch.text_features is not None:
        pieces = [batch.features(m)[0].split(batch.features(m)[1].tolist()) for m in MODALITIES]
        gone = [[len(p) == 1 and not p.any() for p in modality] for modality in pieces]
    else:
        text = (batch.text_attention_mask.sum(1) == 2).tolist()
        media = [batch.audio.split(batch.audio_lengths.tolist()), batch.faces.split(batch.face_lengths.tolist())]
        gone = [text, *([len(p) == 1 and not p.any() for p in modality] for modality in media)]
    return {uid: tuple(flags) for uid, *flags in zip(batch.ids, *gone)}


@pytest.mark.parametrize("make", [raw_batch, features_of])
def test_rate_zero_is_the_identity(make):
    batch = make()
    for transform in (drop_elements, drop_modalities):
        assert _sequences(transform(batch, 0.0, seed=0)) == _sequences(batch)


def test_drop_elements_drops_round_rate_n_keeps_order_and_one_element():
    batch = raw_batch()
    out = drop_elements(batch, 0.5, seed=0)
    # dropped: round(0.5 * n), half to even (round(1.5) = 2, round(2.5) = 2), at least one kept
    assert out.face_lengths.tolist() == [2, 1, 3, 5, 1, 3, 1, 3]
    assert out.audio_lengths.tolist() == [1, 4, 1, 1, 3, 2, 3, 1]
    for kept in _sequences(out)["faces"].values():
        assert kept == sorted(set(kept))
    for rate in (0.9, 1.0):
        heavy = drop_elements(batch, rate, seed=0)
        assert heavy.face_lengths.tolist() == [1] * len(IDS) and heavy.audio_lengths.tolist() == [1] * len(IDS)
    assert _sequences(batch) == _sequences(raw_batch())  # input untouched


def test_special_tokens_stay_in_raw_text_and_in_text_features():
    raw, features = drop_elements(raw_batch(), 0.5, seed=0), drop_elements(features_of(), 0.5, seed=0)
    rows = _sequences(raw)["tokens"]
    # ordinary tokens 4 -> 2, 1 -> 1 (at least one), 0 -> 0, 6 -> 3, 3 -> 1, 2 -> 1, 5 -> 3, 9 -> 5
    assert [len(rows[uid]) - 2 for uid in IDS] == [2, 1, 0, 3, 1, 1, 3, 5]
    assert all(row[0] == CLS and row[-1] == SEP for row in rows.values())
    assert raw.text_attention_mask[:, 0].all()  # left-aligned
    for uid, steps in _sequences(features)["text_features"].items():
        n = TOKENS[IDS.index(uid)] + 2
        assert steps[0] == 0 and steps[-1] == n - 1  # the CLS and SEP states
        # the same ordinary tokens as the raw row (token 1000 + j sits at step j)
        assert [int(step) for step in steps[1:-1]] == [token - 1000 for token in rows[uid][1:-1]]


def test_short_text_features_are_kept_whole():
    batch = feature_batch(batch_size=30)
    out = drop_elements(batch, 1.0, seed=0)
    before, after = batch.features("t")[1], out.features("t")[1]
    assert torch.equal(after[before <= 2], before[before <= 2])
    assert (after[before > 2] == 3).all()  # CLS, one token, SEP


@pytest.mark.parametrize("make", [raw_batch, features_of])
@pytest.mark.parametrize("transform", [drop_elements, drop_modalities])
def test_drops_do_not_depend_on_the_batching(make, transform):
    results = [_in_batches(make, lambda b: transform(b, 0.6, seed=0), size) for size in (1, 3, 8)]
    assert results[0] == results[1] == results[2]
    assert results[0] != _in_batches(make, lambda b: b, 8)  # something was dropped


def test_raw_and_feature_models_lose_the_same_modalities():
    worded = [uid for uid, tokens in zip(IDS, TOKENS) if tokens]  # raw text without words is always "empty"
    for rate in (0.3, 0.6, 1.0):
        raw, features = (
            _emptied(drop_modalities(raw_batch(), rate, 0)),
            _emptied(drop_modalities(features_of(), rate, 0)),
        )
        assert {uid: raw[uid] for uid in worded} == {uid: features[uid] for uid in worded}
        assert all(sum(flags) <= 2 for flags in features.values())
        assert any(any(flags) for flags in features.values())


def test_raw_and_feature_models_lose_the_same_elements_where_the_counts_match():
    raw, features = _sequences(drop_elements(raw_batch(), 0.5, 0)), _sequences(drop_elements(features_of(), 0.5, 0))
    assert raw["faces"] == features["visual_features"]  # same frame counts: the same frames
    assert raw["faces"] != _sequences(raw_batch())["faces"]


def test_every_utterance_keeps_one_element_and_one_modality():
    batch = feature_batch(batch_size=40)
    for rate in (0.5, 0.9, 1.0):
        out = drop_elements(batch, rate, seed=0)
        assert all((out.features(m)[1] >= 1).all() for m in MODALITIES)
        kept = [sum(not gone for gone in flags) for flags in _emptied(drop_modalities(batch, rate, seed=0)).values()]
        assert min(kept) >= 1
    assert kept == [1] * len(batch)  # rate 1: exactly one


def test_a_higher_rate_drops_a_superset():
    for uid in IDS:
        kept = [set(kept_positions(0, uid, "a", 50, rate).tolist()) for rate in (0.2, 0.5, 0.8)]
        assert kept[0] > kept[1] > kept[2]
        removed = [removed_modalities(0, uid, rate) for rate in (0.2, 0.5, 0.8)]
        assert all(low <= high for a, b in zip(removed, removed[1:]) for low, high in zip(a, b))


def test_modalities_are_removed_at_the_rate():
    removed = torch.tensor([removed_modalities(0, f"u{i}", 0.3) for i in range(3000)])
    assert 0.27 < removed.float().mean() < 0.33


def test_the_seed_changes_the_drops():
    first, second = (_sequences(drop_elements(raw_batch(), 0.5, seed=seed)) for seed in (0, 1))
    assert first != second
    assert _sequences(drop_elements(raw_batch(), 0.5, seed=1)) == second


def test_the_draws_are_pinned():
    """The rule is a stable hash: the same drops on every machine and torch/numpy version (a changed value
    here makes new sweeps incomparable with old ones)."""
    assert kept_positions(0, "Ses01F_impro01_F000", "v", 10, 0.5).tolist() == PINNED_KEPT
    assert removed_modalities(0, "Ses01F_impro01_F000", 0.5) == PINNED_REMOVED


PINNED_KEPT = [1, 5, 6, 7, 9]
PINNED_REMOVED = [False, True, False]


@pytest.mark.parametrize("make", [raw_batch, features_of])
def test_a_removed_modality_takes_its_empty_form_and_the_others_stay(make):
    before, out = _sequences(make()), drop_modalities(make(), 1.0, seed=0)
    after = _sequences(out)
    names = (
        ("tokens", "audio", "faces")
        if out.text_features is None
        else ("text_features", "audio_features", "visual_features")
    )
    for uid in IDS:
        for name, removed in zip(names, removed_modalities(0, uid, 1.0)):
            empty = [CLS, SEP] if name == "tokens" else [-1.0]
            assert after[name][uid] == (empty if removed else before[name][uid])


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rates_outside_zero_one_are_refused(rate):
    for transform in (drop_elements, drop_modalities):
        with pytest.raises(UsageError, match="rate must be in"):
            transform(raw_batch(), rate, seed=0)


def test_plot_missing(tmp_path):
    rows = [
        {"model": m, "mode": mode, "rate": r, "seed": s, "acc": 0.5 - 0.2 * r}
        for m in ("a", "b")
        for mode in ("elements", "modalities")
        for r in (0.0, 0.5)
        for s in (0, 1)
    ]
    plot_missing(rows, "acc", tmp_path / "missing.png")
    assert (tmp_path / "missing.png").stat().st_size > 5000
