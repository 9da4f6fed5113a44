"""Rendering: backgrounds, animated faces and the video files that show them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data_reorg.demo.faces import Sprite
from data_reorg.io import atomic_path


@dataclass(frozen=True)
class Motion:
    """Where a face sits over time: a base centre and scale, plus a slow sinusoidal pan and zoom."""

    cx: float
    cy: float
    scale: float
    phases: tuple[float, float, float]
    rate: float

    def at(self, t: float) -> tuple[float, float, float]:
        omega = 2 * math.pi * self.rate
        a, b, c = self.phases
        return (
            self.cx + 3 * math.sin(omega * t + a),
            self.cy + 2 * math.sin(0.7 * omega * t + b),
            self.scale * (1 + 0.02 * math.sin(1.3 * omega * t + c)),
        )


def random_motion(rng: np.random.Generator, cx: float, cy: float, scale: float) -> Motion:
    return Motion(
        cx + rng.uniform(-6, 6),
        cy + rng.uniform(-6, 6),
        scale * rng.uniform(0.9, 1.04),
        tuple(rng.uniform(0, 2 * math.pi, 3)),
        rng.uniform(0.3, 0.8),
    )


@dataclass(frozen=True)
class Shot:
    """Frames [first, stop) show ``sprite`` moving by ``motion``; no sprite = nobody facing the camera."""

    first: int
    stop: int
    sprite: Sprite | None
    motion: Motion | None = None


def frame_index(t: float, fps: float) -> int:
    """The first frame at or after ``t`` seconds, by the same rule as the clip cutter."""
    return max(0, math.ceil(t * fps - 1e-6))


@dataclass
class Track:
    """One camera view: a fixed background, a resting face, and shots that replace it (later wins)."""

    background: np.ndarray
    fps: float
    resting: Sprite | None
    rest_motion: Motion | None
    shots: list[Shot] = field(default_factory=list)

    def add(self, start: float, end: float, sprite: Sprite | None, motion: Motion | None = None) -> None:
        self.shots.append(Shot(frame_index(start, self.fps), frame_index(end, self.fps), sprite, motion))

    def render(self, index: int) -> np.ndarray:
        sprite, motion = self.resting, self.rest_motion
        for shot in self.shots:
            if shot.first <= index < shot.stop:
                sprite, motion = shot.sprite, shot.motion
        frame = self.background.copy()
        if sprite is not None:
            _paste(frame, sprite, *motion.at(index / self.fps))
        return frame


def random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A blurred vertical gradient of muted colours with soft blotches: a plausible, face-free room."""
    top, bottom = (rng.uniform(60, 180, (2, 1)) + rng.normal(0, 14, (2, 3))).astype(np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(top + (bottom - top) * ramp, (height, width, 3))
    blotches = cv2.resize(
        rng.normal(0, 12, (4, 5, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    image = cv2.GaussianBlur(image + blotches, (0, 0), 9)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, sprite: Sprite, cx: float, cy: float, scale: float) -> None:
    """Alpha-blend ``sprite`` centred at (cx, cy), warping only the region it covers."""
    side = sprite.alpha.shape[0]
    reach = side * scale / 2 + 2
    x0, y0 = max(0, int(cx - reach)), max(0, int(cy - reach))
    x1, y1 = min(frame.shape[1], math.ceil(cx + reach)), min(frame.shape[0], math.ceil(cy + reach))
    centre = (side - 1) / 2
    matrix = np.float32([[scale, 0, cx - x0 - scale * centre], [0, scale, cy - y0 - scale * centre]])
    size = (x1 - x0, y1 - y0)
    bgr = cv2.warpAffine(sprite.bgr, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(sprite.alpha, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    region = frame[y0:y1, x0:x1]
    region[:] = cv2.blendLinear(region, bgr, 1 - alpha, alpha)


def write_video(path: Path, tracks: list[Track], num_frames: int, fps: float, fourcc: str) -> None:
    """Tracks side by side, ``num_frames`` frames, written under a temporary name and renamed."""
    width = sum(track.background.shape[1] for track in tracks)
    height = tracks[0].background.shape[0]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"{path}: OpenCV cannot open a {fourcc} writer")
        try:
            for index in range(num_frames):
                writer.write(np.hstack([track.render(index) for track in tracks]))
        finally:
            writer.release()
