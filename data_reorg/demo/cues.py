"""The hidden classes that decide every cue, and the seeded random streams all parts draw from."""

from __future__ import annotations

import zlib

import numpy as np

from data_reorg.manifest import IEMOCAP_CLASSES

CLASSES = IEMOCAP_CLASSES


def seeded_rng(seed: int, *keys: str) -> np.random.Generator:
    """An independent stream per (seed, keys), so that one part's draws never shift another's."""
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])
