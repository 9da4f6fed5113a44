"""Frame sampling, frame decoding and square face crops, 48 px by default (MTCNN, largest face, centre-crop fallback).

Runs once, offline, in :mod:`e2e.data.preprocess`; training reads the cached crops and never detects faces.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

FACE_SIZE = 48
FACE_MARGIN = 2
REFERENCE_MIN_FACE = 20.0  # facenet-pytorch's default smallest face: the setting of the first caches
PYRAMID_FACTOR = 0.709  # facenet-pytorch's default step between image pyramid levels
# Faces are looked for from this fraction of the frame's shorter side (see min_face_size); chosen by
# benchmarks/preprocess_speed.py on the demo corpus. 0 gives the reference (every pyramid level).
MIN_FACE_FRACTION = 0.22
REFERENCE_DETECTION = {"min_face_fraction": 0.0}


class VideoReadError(RuntimeError):
    """A video is missing, cannot be opened, or ends before a requested frame."""


def sample_frame_indices(num_frames: int, fps: float, img_interval_ms: int) -> list[int]:
    """One frame every ``img_interval_ms`` by timestamp from the clip start: t = 0, dt, 2 dt, ...

    Frame ``floor(t * fps + 0.5)`` (nearest, ties up) is taken while it is < ``num_frames``; a clip with
    frames always yields >= 1.
    """
    if num_frames <= 0 or fps <= 0:
        return []
    step = img_interval_ms / 1000.0
    indices = []
    while (index := math.floor(len(indices) * step * fps + 0.5)) < num_frames:
        indices.append(index)
    return indices


def read_frames(video_path: Path | str, indices: list[int]) -> list[np.ndarray]:
    """Frames ``indices`` of a video as RGB uint8 arrays, in the order given, decoded in one sequential pass."""
    video_path = Path(video_path)
    if not video_path.is_file():
        raise VideoReadError(f"{video_path}: video file is missing")
    capture = cv2.VideoCapture(str(video_path))
    try:
        if not capture.isOpened():
            raise VideoReadError(f"{video_path}: cannot open video (corrupt or unsupported container)")
        return _decode(capture, indices, video_path)
    finally:
        capture.release()


def _decode(capture: cv2.VideoCapture, indices: list[int], video_path: Path) -> list[np.ndarray]:
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    for position in range(max(indices, default=-1) + 1):
        if not capture.grab():
            raise VideoReadError(f"{video_path}: video ends at frame {position}, frame {max(indices)} was requested")
        if position in wanted:
            ok, frame = capture.retrieve()
            if not ok:
                raise VideoReadError(f"{video_path}: cannot decode frame {position}")
            frames[position] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return [frames[index] for index in indices]


def centre_crop(frame: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The central square of ``frame`` resized to ``size`` x ``size`` (the no-face fallback)."""
    height, width = frame.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frame[top : top + side, left : left + side]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


class FaceCropper:
    """MTCNN (facenet-pytorch) face crops: the largest face per frame, ``face_size`` square (48 = the paper's),
    2 px margin, raw 0-255 pixels.

    Faces smaller than about ``min_face_fraction`` of a frame's shorter side are not looked for (see
    :func:`min_face_size`); the default (0.22: faces from 79 px in a 360 px wide IEMOCAP half) detects
    ~2.5x faster on CPU than the reference ``min_face_fraction=0`` (faces from 20 px), with boxes that match
    the reference's (IoU >= 0.9 on 99 % of the demo corpus frames, most of them identical).

    ``device``: where MTCNN's three networks run (``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``); the
    frames go there for detection, boxes come back as numpy and crops are cut on the CPU.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        face_size: int = FACE_SIZE,
        *,
        min_face_fraction: float = MIN_FACE_FRACTION,
    ):
        from facenet_pytorch import MTCNN

        if face_size < 1:
            raise ValueError(f"face_size={face_size}: a crop needs at least 1 x 1 pixels")
        if not 0 <= min_face_fraction < 1:
            raise ValueError(f"min_face_fraction={min_face_fraction}: a face is a fraction 0 <= f < 1 of the frame")
        self.mtcnn = MTCNN(
            image_size=face_size,
            margin=FACE_MARGIN,
            min_face_size=REFERENCE_MIN_FACE,
            factor=PYRAMID_FACTOR,
            post_process=False,
            select_largest=True,
            device=device,
        )
        self.batch_size = batch_size
        self.face_size = face_size
        self.min_face_fraction = min_face_fraction

    def crops(self, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(T, S, S, 3) uint8 crops (S = ``face_size``) and (T,) bool face-found flags for RGB uint8 frames.

        Frames of equal size are detected together, ``batch_size`` at a time; a frame without a face gets
        :func:`centre_crop` and ``found=False``.
        """
        boxes: list[np.ndarray | None] = [None] * len(frames)
        for group in _groups_by_size(frames):
            for start in range(0, len(group), self.batch_size):
                members = group[start : start + self.batch_size]
                for index, box in zip(members, self.largest_boxes([frames[i] for i in members])):
                    boxes[index] = box
        faces = np.empty((len(frames), self.face_size, self.face_size, 3), dtype=np.uint8)
        for index, (frame, box) in enumerate(zip(frames, boxes)):
            faces[index] = centre_crop(frame, self.face_size) if box is None else self._extract(frame, box)
        return faces, np.array([box is not None for box in boxes], dtype=np.bool_)

    def largest_boxes(self, frames: list[np.ndarray]) -> list[np.ndarray | None]:
        """The largest face box (x1, y1, x2, y2) of each frame (all of equal size), or None.

        facenet-pytorch under numpy 2 can raise ValueError while packing a batch that mixes frames with and
        without faces (timesler/facenet-pytorch#224); such a batch is detected again frame by frame.
        """
        self.mtcnn.min_face_size = min_face_size(frames[0].shape, self.min_face_fraction)
        try:
            batch_boxes, _ = self.mtcnn.detect(np.stack(frames))
        except ValueError:
            if len(frames) == 1:
                raise
            return [box for frame in frames for box in self.largest_boxes([frame])]
        # boxes come back as numpy object arrays, sorted largest first (select_largest=True)
        return [None if boxes is None else np.asarray(boxes, dtype=object).astype(float)[0] for boxes in batch_boxes]

    def _extract(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        from facenet_pytorch import extract_face

        face = extract_face(frame, box, self.face_size, FACE_MARGIN)  # (3, S, S) float on the 0-255 scale
        return face.permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def min_face_size(shape: tuple[int, ...], fraction: float) -> float:
    """The smallest face (px) MTCNN looks for in frames of ``shape``: the largest 20 px / 0.709^k (k >= 0)
    that is at most ``fraction`` of the frame's shorter side.

    MTCNN's image pyramid starts at scale 12 / min_face_size and steps by 0.709, so a size on this grid keeps
    the reference pyramid (20 px) minus its k finest levels, exactly: the boxes of the faces found are the
    reference's as long as no finer-level candidate would have won. The finest levels are the costly ones
    for P-Net (each has twice the pixels of the next), which is where the time goes on CPU. A size off the
    grid shifts every level and moves the boxes (IoU >= 0.9 with the reference on only ~80 % of the frames).
    """
    size = REFERENCE_MIN_FACE
    while size / PYRAMID_FACTOR <= fraction * min(shape[:2]):
        size /= PYRAMID_FACTOR
    return size


def _groups_by_size(frames: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, frame in enumerate(frames):
        groups.setdefault(frame.shape, []).append(index)
    return list(groups.values())
