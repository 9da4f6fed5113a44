"""Everything the corpora are drawn from, loaded once per build."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_reorg.demo.faces import Sprite, load_faces
from data_reorg.demo.voices import load_voices


@dataclass(frozen=True)
class Assets:
    class_faces: dict[str, list[Sprite]]
    resting_faces: list[Sprite]  # shown while an actor listens; never a class cue
    voices: dict[str, np.ndarray]  # speaker -> concatenated turns, float32, peak 1
    filler: list[str]

    def class_face(self, cls: str, rng: np.random.Generator) -> Sprite:
        pool = self.class_faces[cls]
        return pool[rng.integers(len(pool))]


def load_assets() -> Assets:
    """Faces from scikit-image and matplotlib, speech from pyannote-audio's sample (all pip packages)."""
    return Assets(*load_faces(), *load_voices())
