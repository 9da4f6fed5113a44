"""The manifest format: optional label fields, their place in the resume fingerprint, old manifests."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from data_reorg.manifest import EXTRA_LABEL_FIELDS, MANIFEST_FIELDS, AudioSource, ClipRequest, load_manifest

VAD = {"valence": 2.5, "activation": 3.0, "dominance": 3.5}


def iemocap_request(**extra) -> ClipRequest:
    return ClipRequest(
        id="Ses01F_impro01_F000",
        dataset="iemocap",
        label="neu",
        start=6.2901,
        end=8.2357,
        text="Excuse me.",
        video=Path("Session1/dialog/avi/DivX/Ses01F_impro01.avi"),
        audio=AudioSource(Path("a.wav"), "sentence_wav"),
        group="1",
        crop=(0.0, 0.0, 0.5, 1.0),
        side="L",
        fallback_audio=AudioSource(Path("d.wav"), "dialog_wav_channel_0", 0, 6.2901, 8.2357),
        **extra,
    )


def mosei_request(**extra) -> ClipRequest:
    return ClipRequest(
        id="81406_0",
        dataset="mosei",
        label=[0, 0, 0, 1, 0, 0],
        start=0.0,
        end=1.5,
        text="hi",
        video=Path("v/81406.mp4"),
        audio=AudioSource(Path("w/81406.wav"), "full_wav_channel_0", 0, 0.0, 1.5),
        group="81406",
        **extra,
    )


# Computed with the code before the label fields existed: outputs written then are reused as they are.
IEMOCAP_FINGERPRINT = "b1e5d5d5437734d71ca25ee4bcb9f0f58f63fdaa3e31399280c8bfa245314df9"
MOSEI_FINGERPRINT = "9a7264a2b0d493d0cc94bfa9189dcff8bd8a8f42506a6f80ecf79f890f934a6a"


def test_label_fields_leave_the_clip_fingerprint_as_it_was():
    assert iemocap_request().fingerprint() == IEMOCAP_FINGERPRINT
    assert iemocap_request(extra_labels={"vad": VAD}).fingerprint() == IEMOCAP_FINGERPRINT
    assert iemocap_request(extra_labels={"vad": None}).fingerprint() == IEMOCAP_FINGERPRINT
    intensity = {"anger": 0.0, "disgust": 0.0, "fear": 0.0, "happy": 1.0, "sad": 0.0, "surprise": 0.0}
    labelled = mosei_request(extra_labels={"sentiment": 1.0, "emotion_intensity": intensity})
    assert mosei_request().fingerprint() == labelled.fingerprint() == MOSEI_FINGERPRINT


def test_the_fingerprint_still_follows_the_class_label():
    changed = dataclasses.replace(iemocap_request(), label="sad")
    assert changed.fingerprint() != IEMOCAP_FINGERPRINT


def test_an_unknown_extra_label_field_is_an_error_naming_it():
    assert EXTRA_LABEL_FIELDS == ("sentiment", "emotion_intensity", "vad")
    with pytest.raises(ValueError, match=r"Ses01F_impro01_F000: unknown extra label fields \['arousal'\]"):
        iemocap_request(extra_labels={"arousal": 3.0})


def _row(item: str, split: str, **fields) -> dict:
    row = {name: None for name in MANIFEST_FIELDS}
    row.update(id=item, split=split, video=f"video/{item}.mp4", audio=f"audio/{item}.wav", **fields)
    return row


def test_load_manifest_reads_rows_with_and_without_the_label_fields(tmp_path):
    """Rows come back with the fields they were written with: none is invented for an old manifest, and a
    ``vad`` of null stays None."""
    old = {k: v for k, v in _row("Ses01F_impro01_M000", "train").items() if k != "audio_source"}
    rows = [
        old,
        _row("Ses01F_impro01_F000", "train", vad=VAD),
        _row("Ses01F_impro01_F001", "test", vad=None),
        _row("81406_0", "train", sentiment=-0.5, emotion_intensity={"anger": 1.0}),
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    loaded = {row["id"]: row for row in load_manifest(tmp_path)}
    assert set(loaded["Ses01F_impro01_M000"]) == set(MANIFEST_FIELDS) - {"audio_source"}
    assert loaded["Ses01F_impro01_M000"]["video"] == str(tmp_path / "video/Ses01F_impro01_M000.mp4")
    assert loaded["Ses01F_impro01_F000"]["vad"] == VAD
    assert "vad" in loaded["Ses01F_impro01_F001"] and loaded["Ses01F_impro01_F001"]["vad"] is None
    assert (loaded["81406_0"]["sentiment"], loaded["81406_0"]["emotion_intensity"]) == (-0.5, {"anger": 1.0})
    assert [row["id"] for row in load_manifest(tmp_path, "test")] == ["Ses01F_impro01_F001"]
