"""Mel spectrogram and chunks, frame sampling and decoding, MTCNN face crops, text model loading."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import e2e  # noqa: F401  (torchvision shim before facenet_pytorch / transformers)
from e2e.data.faces import FaceCropper, VideoReadError, centre_crop, read_frames, sample_frame_indices
from e2e.data.mel import mel_chunks, mel_spectrogram
from e2e.data.text import load_text_encoder, load_tokenizer, resolve_text_model

BACKGROUND = (70, 90, 110)


def face_frame(name: str, height: int = 480, width: int = 360, face_px: int = 120):
    """A real face (scikit-image still) pasted at the centre of a plain frame; returns (frame, face box)."""
    from skimage import data

    if name == "astronaut":
        image, box, region = data.astronaut(), (181, 62, 268, 172), (130, 20, 320, 230)
    else:
        image, box, region = np.repeat(data.camera()[..., None], 3, 2), (199, 119, 254, 192), (160, 80, 300, 240)
    x1, y1, x2, y2 = region
    scale = face_px / (box[3] - box[1])
    patch = cv2.resize(image[y1:y2, x1:x2], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), BACKGROUND, np.uint8)
    top, left = (height - patch.shape[0]) // 2, (width - patch.shape[1]) // 2
    frame[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    face_box = [
        left + (box[0] - x1) * scale,
        top + (box[1] - y1) * scale,
        left + (box[2] - x1) * scale,
        top + (box[3] - y1) * scale,
    ]
    return frame, face_box


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def cropper():
    return FaceCropper("cpu")


# --- audio ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Empty filters")  # 128 HTK bands on 201 bins: the lowest are empty
def test_mel_matches_librosa():
    librosa = pytest.importorskip("librosa")
    samples = np.random.default_rng(0).standard_normal(16000 + 123).astype(np.float32) * 0.1
    ours = mel_spectrogram(torch.from_numpy(samples)).numpy()
    reference = librosa.feature.melspectrogram(
        y=samples,
        sr=16000,
        n_fft=400,
        hop_length=200,
        win_length=400,
        n_mels=128,
        htk=True,
        norm=None,
        center=True,
        pad_mode="reflect",
        power=2.0,
    )
    assert ours.shape == reference.shape == (128, 1 + len(samples) // 200)
    assert np.abs(ours - reference).max() / np.abs(reference).max() < 1e-4
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-4


def test_mel_batched_equals_single():
    samples = torch.randn(2, 4000)
    batched = mel_spectrogram(samples)
    assert batched.shape == (2, 128, 21)
    torch.testing.assert_close(batched[1], mel_spectrogram(samples[1]))


def test_mel_chunks_power_pads_last_chunk_with_zeros():
    mel = torch.rand(128, 70) + 0.5
    chunks = mel_chunks(mel, log=False)
    assert chunks.shape == (3, 1, 128, 32)
    torch.testing.assert_close(chunks[1, 0], mel[:, 32:64])
    torch.testing.assert_close(chunks[2, 0, :, :6], mel[:, 64:])
    assert torch.all(chunks[2, 0, :, 6:] == 0)
    assert mel_chunks(torch.rand(128, 64), log=False).shape == (2, 1, 128, 32)


def test_mel_chunks_log_is_normalised_per_utterance():
    mel = torch.rand(128, 40) * 1e3
    chunks = mel_chunks(mel, log=True)
    real = torch.cat([chunks[0, 0], chunks[1, 0, :, :8]], dim=1)
    assert abs(real.mean().item()) < 1e-4 and abs(real.std(unbiased=False).item() - 1) < 1e-4
    expected = torch.log(mel + 1e-6)
    torch.testing.assert_close(real, (expected - expected.mean()) / expected.std(unbiased=False))
    assert torch.all(chunks[1, 0, :, 8:] == 0)
    # a constant (silent) input stays finite
    assert torch.isfinite(mel_chunks(torch.zeros(128, 10), log=True)).all()


@pytest.mark.parametrize("frames", [0, 1, 31])
def test_mel_chunks_short_input_gives_one_chunk(frames):
    assert mel_chunks(torch.rand(128, frames), log=True).shape == (1, 1, 128, 32)


# --- frames --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num_frames, fps, interval, expected",
    [
        (75, 30.0, 500, [0, 15, 30, 45, 60]),
        (61, 29.97, 500, [0, 15, 30, 45, 60]),
        (45, 29.97, 500, [0, 15, 30]),
        (1, 30.0, 500, [0]),
        (10, 25.0, 500, [0]),
        (40, 25.0, 500, [0, 13, 25, 38]),  # ties round up, not to even
        (10, 10.0, 200, [0, 2, 4, 6, 8]),
        (0, 30.0, 500, []),
    ],
)
def test_sample_frame_indices(num_frames, fps, interval, expected):
    assert sample_frame_indices(num_frames, fps, interval) == expected


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_read_frames_picks_requested_frames(tmp_path):
    frames = [np.full((64, 48, 3), (20 * i, 100, 200 - 20 * i), np.uint8) for i in range(8)]
    write_video(tmp_path / "clip.mp4", frames)
    read = read_frames(tmp_path / "clip.mp4", [0, 3, 7])
    assert [frame.shape for frame in read] == [(64, 48, 3)] * 3
    for frame, index in zip(read, [0, 3, 7]):
        assert np.abs(frame.astype(int) - frames[index]).mean() < 6  # RGB order, lossy codec
    with pytest.raises(VideoReadError, match="clip.mp4.*ends at frame 8"):
        read_frames(tmp_path / "clip.mp4", [0, 9])


def test_read_frames_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(VideoReadError, match="nothere.mp4.*missing"):
        read_frames(tmp_path / "nothere.mp4", [0])
    (tmp_path / "garbage.mp4").write_bytes(b"not a video" * 100)
    with pytest.raises(VideoReadError, match="garbage.mp4"):
        read_frames(tmp_path / "garbage.mp4", [0])


# --- faces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_face_crop_of_real_face(cropper, name):
    frame, face_box = face_frame(name)
    (box,) = cropper.largest_boxes([frame])
    assert box is not None and box.dtype == np.float64 and iou(box, face_box) > 0.5
    faces, found = cropper.crops([frame])
    assert faces.shape == (1, 48, 48, 3) and faces.dtype == np.uint8
    assert found.dtype == np.bool_ and found.tolist() == [True]
    background = np.all(faces[0] == BACKGROUND, axis=-1).mean()
    assert background < 0.05  # the crop is the face, not the plain frame around it


def test_no_face_falls_back_to_centre_crop(cropper):
    blank = np.full((480, 360, 3), BACKGROUND, np.uint8)
    blank[180:300, :, 0] = 250  # a band across the centre, so a centre crop is recognisable
    faces, found = cropper.crops([blank])
    assert found.tolist() == [False]
    np.testing.assert_array_equal(faces[0], centre_crop(blank))
    assert (faces[0, 24, :, 0] == 250).all() and (faces[0, 0, :, 0] == BACKGROUND[0]).all()


def test_batch_mixing_faces_blanks_and_sizes(cropper):
    astronaut, _ = face_frame("astronaut")
    camera, _ = face_frame("camera", height=360, width=480)
    blank = np.full((480, 360, 3), BACKGROUND, np.uint8)
    faces, found = cropper.crops([astronaut, blank, camera, np.zeros((100, 200, 3), np.uint8)])
    assert faces.shape == (4, 48, 48, 3)
    assert found.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(faces[1], centre_crop(blank))


def test_batch_error_retries_frame_by_frame(cropper, monkeypatch):
    """facenet-pytorch#224: a batch that fails to pack under numpy 2 is detected frame by frame."""
    detect = cropper.mtcnn.detect

    def fails_on_batches(images, *args, **kwargs):
        if len(images) > 1:
            raise ValueError("setting an array element with a sequence")
        return detect(images, *args, **kwargs)

    monkeypatch.setattr(cropper.mtcnn, "detect", fails_on_batches)
    astronaut, _ = face_frame("astronaut")
    _, found = cropper.crops([astronaut, np.full_like(astronaut, 90)])
    assert found.tolist() == [True, False]


# --- text ----------------------------------------------------------------------------------------


def test_resolve_text_model():
    folder = Path(resolve_text_model("minilm"))
    assert folder.name == "model" and (folder / "config.json").is_file()
    assert resolve_text_model("albert-base-v2") == "albert-base-v2"
    assert resolve_text_model("/some/folder") == "/some/folder"


def test_tiny_bert_and_minilm():
    tokenizer = load_tokenizer("tiny-bert")
    tiny = load_text_encoder("tiny-bert")
    assert tiny.config.hidden_size == 32 and tiny.config.vocab_size == len(tokenizer)
    encoded = tokenizer(["hello there", "how are you today"], padding=True, return_tensors="pt")
    assert tiny(**encoded).last_hidden_state.shape == (2, encoded["input_ids"].shape[1], 32)
    pretrained = load_text_encoder("minilm")
    random = load_text_encoder("minilm", random_init=True)
    assert pretrained.config.hidden_size == random.config.hidden_size == 384
    weight = "embeddings.word_embeddings.weight"
    assert not torch.equal(pretrained.state_dict()[weight], random.state_dict()[weight])
