"""Feature cache (preprocess) on a tiny generated corpus, the dataset's checks and the batch collator."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import e2e  # noqa: F401  (torchvision shim before facenet_pytorch / transformers)
from e2e.config import ExperimentConfig
from e2e.data.batch import Batch
from e2e.data.dataset import EmotionDataset, collate, even_subsample, label_counts
from e2e.data.mel import mel_spectrogram
from e2e.data.preprocess import cache_path, is_valid_cache, preprocess
from e2e.data.text import load_tokenizer

BACKGROUND = (70, 90, 110)
FPS = 10.0


def face_frame(shift: int) -> np.ndarray:
    """360x480 frame with the astronaut's face (about 120 px tall) near the centre, moved by ``shift`` px."""
    from skimage import data

    patch = cv2.resize(data.astronaut()[20:230, 130:320], None, fx=1.1, fy=1.1, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 360, 3), BACKGROUND, np.uint8)
    top, left = (480 - patch.shape[0]) // 2 + shift, (360 - patch.shape[1]) // 2 + shift
    frame[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return frame


def write_clip(data_dir: Path, name: str, seconds: float, blank_frames: tuple[int, ...] = ()) -> dict:
    """An mp4v clip (10 fps) with a face in every frame except ``blank_frames``; returns manifest fields."""
    num_frames = round(seconds * FPS)
    path = data_dir / "video" / f"{name}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (360, 480))
    for index in range(num_frames):
        frame = np.full((480, 360, 3), BACKGROUND, np.uint8) if index in blank_frames else face_frame(index % 4)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return {"video": f"video/{name}.mp4", "fps": FPS, "num_frames": num_frames}


def write_wav(data_dir: Path, name: str, seconds: float, silent: bool = False) -> dict:
    time = np.arange(round(seconds * 16000)) / 16000
    samples = 0.1 * np.sin(2 * np.pi * 220 * time) + 0.02 * np.random.default_rng(0).standard_normal(len(time))
    path = data_dir / "audio" / f"{name}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples * (not silent), 16000, subtype="PCM_16")
    return {"audio": f"audio/{name}.wav", "num_samples": len(time)}


def manifest_row(item_id: str, label, text: str = "some words", split: str = "train", **fields) -> dict:
    row = {
        "id": item_id,
        "dataset": "iemocap",
        "split": split,
        "label": label,
        "start": 0.0,
        "end": 1.0,
        "text": text,
        "video": f"video/{item_id}.mp4",
        "audio": f"audio/{item_id}.wav",
        "side": None,
        "fps": FPS,
        "num_frames": 10,
        "num_samples": 16000,
        "sha256": None,
    }
    row.update(fields)
    return row


def write_manifest(data_dir: Path, rows: list[dict]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Seven utterances from generated media, preprocessed once: three good ones with 2, 4 and 5 frames,
    a silent one, a corrupt video, an empty transcript and an unknown label."""
    root = tmp_path_factory.mktemp("corpus")
    short = {**write_clip(root, "short", 0.6), **write_wav(root, "short", 0.6)}
    rows = [
        manifest_row("Ses01F_u1", "ang", "I am so angry", **short, sha256={"video": "v1", "audio": "a1"}),
        manifest_row(
            "odd id/2",
            "sad",
            "this is a rather sad and long sentence",
            **write_clip(root, "u2", 1.6),
            **write_wav(root, "u2", 1.6),
        ),
        manifest_row(
            "Ses01F_u3", "hap", "yes", **write_clip(root, "u3", 2.2, blank_frames=(10,)), **write_wav(root, "u3", 2.2)
        ),
        manifest_row("silent", "neu", **{**short, **write_wav(root, "silent", 0.6, silent=True)}),
        manifest_row("corrupt", "fru", **{**short, "video": "video/corrupt.mp4"}),
        manifest_row("notext", "exc", " ", **short),
        manifest_row("badlabel", "xxx", **short),
    ]
    (root / "video" / "corrupt.mp4").write_bytes(b"\x00garbage" * 500)
    write_manifest(root, rows)
    summary = preprocess(root, progress=False)
    return root, rows, summary


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-bert")


def make_config(**data) -> ExperimentConfig:
    config = ExperimentConfig()
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def write_cache(data_dir: Path, item_id: str, faces=None, mel=None, num_samples=16000, rms=0.1) -> Path:
    faces = np.full((3, 48, 48, 3), 128, np.uint8) if faces is None else faces
    mel = np.ones((128, 81), np.float32) if mel is None else mel
    path = cache_path(data_dir, 500, item_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        faces=faces,
        face_found=np.ones(len(faces), bool),
        mel=mel,
        rms=np.float32(rms),
        num_samples=np.int64(num_samples),
        source=np.array("null"),
    )
    return path


# --- preprocess ----------------------------------------------------------------------------------


def test_preprocess_builds_cache_and_records_problems(corpus):
    root, rows, summary = corpus
    assert (summary.total, summary.built, summary.reused) == (7, 6, 0)
    assert [problem["id"] for problem in summary.problems] == ["corrupt"]
    assert summary.problems[0]["file"].endswith("corrupt.mp4") and "corrupt.mp4" in summary.problems[0]["error"]
    recorded = [json.loads(line) for line in (summary.cache_dir / "problems.jsonl").read_text().splitlines()]
    assert recorded == summary.problems
    with np.load(cache_path(root, 500, "Ses01F_u3")) as cache:
        assert cache["faces"].shape == (5, 48, 48, 3) and cache["faces"].dtype == np.uint8
        assert cache["face_found"].tolist() == [True, True, False, True, True]
        assert cache["mel"].shape == (128, 1 + 35200 // 200) and cache["mel"].dtype == np.float32
        samples, _ = sf.read(root / "audio" / "u3.wav", dtype="float32")
        np.testing.assert_allclose(cache["mel"], mel_spectrogram(torch.from_numpy(samples)).numpy())
        assert int(cache["num_samples"]) == 35200 and 0.05 < float(cache["rms"]) < 0.1
    assert cache_path(root, 500, "odd id/2").is_file()
    assert not cache_path(root, 500, "corrupt").exists()


def test_preprocess_resumes_and_rebuilds_deleted_files(corpus):
    root, _, _ = corpus
    again = preprocess(root, progress=False)
    assert (again.built, again.reused, len(again.problems)) == (0, 6, 1)
    path = cache_path(root, 500, "Ses01F_u1")
    before = dict(np.load(path))
    path.unlink()
    rebuilt = preprocess(root, progress=False)
    assert (rebuilt.built, rebuilt.reused) == (1, 5)
    with np.load(path) as after:
        for key, value in before.items():
            np.testing.assert_array_equal(after[key], value)
    assert is_valid_cache(path, json.dumps({"audio": "a1", "video": "v1"}))
    assert not is_valid_cache(path, json.dumps({"audio": "recut", "video": "v1"}))


def test_preprocess_with_worker_processes(corpus):
    root, _, _ = corpus
    for item_id in ("Ses01F_u1", "notext"):
        cache_path(root, 500, item_id).unlink()
    summary = preprocess(root, jobs=2, progress=False)
    assert (summary.built, summary.reused, len(summary.problems)) == (2, 4, 1)


# --- dataset -------------------------------------------------------------------------------------


def test_dataset_over_preprocessed_corpus(corpus, tokenizer):
    root, _, _ = corpus
    dataset = EmotionDataset(root, "train", make_config(), tokenizer)
    assert [item.id for item in dataset.items] == ["Ses01F_u1", "odd id/2", "Ses01F_u3"]
    assert dataset.skipped == {
        "silent_audio": ["silent"],
        "missing_cache": ["corrupt"],
        "empty_text": ["notext"],
        "bad_label": ["badlabel"],
    }
    assert dataset.class_names == ("ang", "exc", "fru", "hap", "neu", "sad")
    item = dataset[2]
    assert item["faces"].shape == (5, 3, 48, 48) and item["faces"].dtype == torch.float32
    assert item["audio"].shape == (6, 1, 128, 32)
    assert item["label"].tolist() == [0, 0, 0, 1, 0, 0]
    assert label_counts(dataset).tolist() == [1, 0, 0, 1, 0, 1]


def test_collate_three_utterances_of_different_lengths(corpus, tokenizer):
    root, _, _ = corpus
    dataset = EmotionDataset(root, "train", make_config(), tokenizer)
    items = [dataset[index] for index in range(3)]
    batch = collate(items, tokenizer, max_length=100)
    assert isinstance(batch, Batch) and batch.ids == ["Ses01F_u1", "odd id/2", "Ses01F_u3"]
    assert batch.face_lengths.tolist() == [2, 4, 5] and batch.faces.shape == (11, 3, 48, 48)
    assert batch.audio_lengths.tolist() == [2, 5, 6] and batch.audio.shape == (13, 1, 128, 32)
    torch.testing.assert_close(batch.faces[2:6], items[1]["faces"])
    torch.testing.assert_close(batch.audio[7:], items[2]["audio"])
    assert batch.labels.shape == (3, 6) and batch.labels.sum(1).tolist() == [1, 1, 1]
    lengths = [len(tokenizer(item["text"])["input_ids"]) for item in items]
    assert batch.text_input_ids.shape == (3, max(lengths)) and batch.text_input_ids.dtype == torch.long
    assert batch.text_attention_mask.sum(1).tolist() == lengths
    truncated = collate(items, tokenizer, max_length=4)
    assert truncated.text_input_ids.shape == (3, 4) and truncated.text_attention_mask.sum(1).tolist() == [4, 4, 3]


def test_every_bad_input_kind_is_skipped_and_counted(tmp_path, tokenizer, caplog):
    rows = [
        manifest_row(name, "neu")
        for name in ("good1", "good2", "missing", "garbage", "noframes", "short", "silent", "quiet")
    ]
    rows += [
        manifest_row("blank", "neu", text=""),
        manifest_row("wrong", "happy"),
        manifest_row("recut", "neu", sha256={"video": "new", "audio": "new"}),
    ]
    write_manifest(tmp_path, rows)
    for name in ("good1", "good2", "blank", "wrong", "recut"):
        write_cache(tmp_path, name)
    cache_path(tmp_path, 500, "garbage").write_bytes(b"PK\x03\x04 truncated")
    write_cache(tmp_path, "noframes", faces=np.zeros((0, 48, 48, 3), np.uint8))
    write_cache(tmp_path, "short", mel=np.ones((128, 2), np.float32), num_samples=399)
    write_cache(tmp_path, "silent", rms=0.0)
    write_cache(tmp_path, "quiet", rms=5e-5)
    with caplog.at_level(logging.WARNING, logger="e2e.data.dataset"):
        dataset = EmotionDataset(tmp_path, "train", make_config(), tokenizer)
    assert len(dataset) == 2
    assert dataset.skipped == {
        "missing_cache": ["missing"],
        "bad_cache": ["garbage"],
        "no_frames": ["noframes"],
        "short_audio": ["short"],
        "silent_audio": ["silent", "quiet"],
        "empty_text": ["blank"],
        "bad_label": ["wrong"],
        "stale_cache": ["recut"],
    }
    for name in ("missing", "garbage", "noframes", "short", "silent", "quiet", "blank", "wrong", "recut"):
        assert name in caplog.text
    assert [dataset[index]["id"] for index in range(len(dataset))] == ["good1", "good2"]


def test_split_without_usable_items_raises(tmp_path, tokenizer):
    write_manifest(tmp_path, [manifest_row("a", "ang"), manifest_row("b", "sad", split="valid")])
    with pytest.raises(ValueError, match="no usable utterances in split 'train'.*missing_cache 1"):
        EmotionDataset(tmp_path, "train", make_config(), tokenizer)


def test_face_normalisation_and_frame_subsampling(tmp_path, tokenizer):
    faces = np.zeros((10, 48, 48, 3), np.uint8)
    faces[:] = (159, 111, 102)
    faces[:, :, :, 0] += np.arange(10, dtype=np.uint8)[:, None, None]
    faces[9] = (196, 144, 134)  # mean + std
    write_manifest(tmp_path, [manifest_row("a", "ang")])
    write_cache(tmp_path, "a", faces=faces)
    full = EmotionDataset(tmp_path, "train", make_config(), tokenizer)[0]["faces"]
    assert full.shape == (10, 3, 48, 48) and full.is_contiguous()
    torch.testing.assert_close(full[0], torch.zeros(3, 48, 48))
    torch.testing.assert_close(full[9], torch.ones(3, 48, 48))
    torch.testing.assert_close(full[4, 0], torch.full((48, 48), 4 / 37))
    picked = EmotionDataset(tmp_path, "train", make_config(max_frames=4), tokenizer)[0]["faces"]
    torch.testing.assert_close(picked, full[[0, 3, 6, 9]])


def test_audio_features_and_chunk_subsampling(tmp_path, tokenizer):
    mel = np.random.default_rng(0).random((128, 200)).astype(np.float32) + 0.1
    write_manifest(tmp_path, [manifest_row("a", "ang")])
    write_cache(tmp_path, "a", mel=mel)
    power = EmotionDataset(tmp_path, "train", make_config(audio_features="power"), tokenizer)[0]["audio"]
    assert power.shape == (7, 1, 128, 32)
    torch.testing.assert_close(power[1, 0], torch.from_numpy(mel[:, 32:64]))
    log = EmotionDataset(tmp_path, "train", make_config(), tokenizer)[0]["audio"]
    assert log.shape == (7, 1, 128, 32) and abs(log[:6].mean().item()) < 0.1
    picked = EmotionDataset(tmp_path, "train", make_config(max_chunks=3), tokenizer)[0]["audio"]
    torch.testing.assert_close(picked, log[[0, 3, 6]])
    with pytest.raises(ValueError, match="audio_features"):
        EmotionDataset(tmp_path, "train", make_config(audio_features="mfcc"), tokenizer)


def test_mosei_labels_and_dataloader(tmp_path, tokenizer):
    labels = {"m1": [1, 0, 0, 1, 0, 0], "m2": [0, 0, 0, 1, 1, 0], "m3": [0, 2, 0, 0, 0, 0], "m4": [1, 0]}
    write_manifest(tmp_path, [manifest_row(name, label) for name, label in labels.items()])
    for name in labels:
        write_cache(tmp_path, name)
    dataset = EmotionDataset(tmp_path, "train", make_config(dataset="mosei"), tokenizer)
    assert dataset.class_names == ("anger", "disgust", "fear", "happy", "sad", "surprise")
    assert dataset.skipped == {"bad_label": ["m3", "m4"]}
    assert label_counts(dataset).tolist() == [1, 0, 0, 2, 1, 0]
    (batch,) = list(DataLoader(dataset, batch_size=2, collate_fn=dataset.collator()))
    assert batch.labels.tolist() == [[1, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0]]
    assert batch.face_lengths.tolist() == [3, 3] and batch.audio_lengths.tolist() == [3, 3]


def test_even_subsample():
    assert even_subsample(5, 0).tolist() == [0, 1, 2, 3, 4]
    assert even_subsample(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert even_subsample(10, 4).tolist() == [0, 3, 6, 9]
    assert even_subsample(10, 1).tolist() == [0]
