"""Face sprites: real faces (LFW crops, sample photos) on soft-edged patches, tinted per class."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data_reorg.demo.cues import CLASSES

FACE_PX = 125  # face height at sprite scale 1 (MTCNN wants faces of 100-150 px in a half)
LFW_UPSCALE = 5  # the 25 px LFW crops hold the face alone: 25 * 5 = FACE_PX
LFW_PAD = 7  # replicated border around an LFW crop: context that face detectors need
SPRITE_PX = (25 + 2 * LFW_PAD) * LFW_UPSCALE
SKIN = (0.80, 0.90, 1.05)  # BGR gains that turn the grey LFW crops into a skin tone
CLASS_TINT = {  # BGR gains times a brightness: the colour cue a small CNN picks up. The six
    "ang": ((0.70, 0.70, 1.30), 1.00),  # final gains (SKIN * tint * light) are >= 0.39 apart pairwise
    "exc": ((0.55, 1.20, 1.20), 1.10),  # (red, yellow, magenta, green, skin, dark blue), so a few CPU
    "fru": ((1.35, 0.65, 1.15), 1.00),  # epochs separate them on any float kernels; MTCNN finds the
    "hap": ((0.75, 1.30, 0.80), 1.00),  # tinted faces in >= 96 % of the sampled frames of every class.
    "neu": ((1.00, 1.00, 1.00), 1.00),
    "sad": ((1.45, 1.00, 0.70), 0.80),
}
# MTCNN boxes (x1, y1, x2, y2) of the faces in the bundled photos.
PHOTO_FACES = {"astronaut": (181, 62, 268, 172), "camera": (199, 119, 254, 192), "grace_hopper": (174, 120, 356, 340)}


@dataclass(frozen=True)
class Sprite:
    """A face on a soft-edged square patch: uint8 BGR (S, S, 3) and float32 alpha (S, S)."""

    bgr: np.ndarray
    alpha: np.ndarray


def load_faces() -> tuple[dict[str, list[Sprite]], list[Sprite]]:
    """(class pools, resting faces): faces from scikit-image and matplotlib (both pip packages).

    The first 100 LFW crops are split into 7 pools by index (identities are not labelled, so one person
    may recur across pools): pools 0-5 are the class pools, pool 6 and the three photos rest.
    """
    from skimage import data as skdata

    lfw = skdata.lfw_subset()[:100]
    class_faces = {
        cls: [_lfw_sprite(lfw[i], _class_gains(cls)) for i in range(k, 100, 7)] for k, cls in enumerate(CLASSES)
    }
    resting = [_photo_sprite(image, PHOTO_FACES[name]) for name, image in _photos().items()]
    resting += [_lfw_sprite(lfw[i], SKIN) for i in range(6, 100, 7)]
    return class_faces, resting


def _class_gains(cls: str) -> tuple[float, float, float]:
    tint, light = CLASS_TINT[cls]
    return tuple(skin * gain * light for skin, gain in zip(SKIN, tint))


def _lfw_sprite(face: np.ndarray, gains) -> Sprite:
    padded = cv2.copyMakeBorder(face.astype(np.float32), *(LFW_PAD,) * 4, cv2.BORDER_REPLICATE)
    grey = np.clip(cv2.resize(padded, (SPRITE_PX, SPRITE_PX), interpolation=cv2.INTER_CUBIC), 0, 1)
    return _sprite(grey[..., None] * (255 * np.asarray(gains, np.float32)))


def _photos() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from skimage import data as skdata

    hopper = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return {
        "astronaut": cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR),
        "camera": cv2.cvtColor(skdata.camera(), cv2.COLOR_GRAY2BGR),
        "grace_hopper": hopper,
    }


def _photo_sprite(image: np.ndarray, box: tuple[int, int, int, int]) -> Sprite:
    """The face of ``box`` scaled to FACE_PX, centred, with the same margin as an LFW sprite."""
    x1, y1, x2, y2 = box
    k = FACE_PX / (y2 - y1)
    centre = (SPRITE_PX - 1) / 2
    matrix = np.float32([[k, 0, centre - k * (x1 + x2) / 2], [0, k, centre - k * (y1 + y2) / 2]])
    patch = cv2.warpAffine(
        image.astype(np.float32),
        matrix,
        (SPRITE_PX, SPRITE_PX),
        flags=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return _sprite(patch)


def _sprite(bgr: np.ndarray) -> Sprite:
    """Cut a soft-edged oval around the face (a head shape, not a pasted square)."""
    side = bgr.shape[0]
    alpha = np.zeros((side, side), np.float32)
    centre = round((side - 1) / 2)
    cv2.ellipse(alpha, (centre, centre), (round(0.43 * side), round(0.47 * side)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), side / 40)
    return Sprite(np.clip(bgr + 0.5, 0, 255).astype(np.uint8), alpha)
