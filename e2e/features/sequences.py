"""Two-stage features: the per-modality descriptor sequences the baselines (LF-LSTM, LF-TRANS, EmoEmbs,
MulT, ...) consume, extracted from the same clips and face crops as the end-to-end models.

Substitutes for the papers' GloVe / COVAREP / FACET features (none of which ships as a package):

* text: token-level last hidden states of the configured text model (frozen), ``(tokens, hidden)``;
* audio: :data:`AUDIO_DESCRIPTORS` per 100 ms step, ``(steps, AUDIO_DIM)``;
* visual: per sampled frame, the 256-d penultimate layer of MTCNN's O-Net (a CNN trained on 48x48 face
  crops, the same size as ours) plus the five O-Net landmarks and geometry derived from them,
  ``(frames, VISUAL_DIM)``.

Sequences are unaligned across modalities (different lengths), as in the papers' unaligned setting.
"""
from __future__ import annotations

AUDIO_STEP_MS = 100
AUDIO_DESCRIPTORS = (*(f"mfcc{i}" for i in range(20)), "log_energy", "zero_crossing_rate",
                     "spectral_centroid", "spectral_bandwidth", "spectral_flatness", "spectral_rolloff",
                     "log_f0", "voiced")
AUDIO_DIM = len(AUDIO_DESCRIPTORS)
ONET_EMBEDDING_DIM = 256
LANDMARK_DIM = 10  # (x, y) of left eye, right eye, nose, left and right mouth corner, in crop units
GEOMETRY_DESCRIPTORS = ("interocular", "mouth_width", "nose_to_mouth", "eyes_to_mouth", "roll", "nose_offset")
VISUAL_DIM = ONET_EMBEDDING_DIM + LANDMARK_DIM + len(GEOMETRY_DESCRIPTORS) + 2  # + face prob, face found


def feature_dims(text_model: str) -> dict[str, int]:
    """Feature size per modality: the text model's hidden size, :data:`AUDIO_DIM`, :data:`VISUAL_DIM`."""
    from transformers import AutoConfig

    from e2e.features.text import TINY_BERT, TINY_BERT_HIDDEN, resolve_text_model

    hidden = TINY_BERT_HIDDEN if text_model == TINY_BERT else AutoConfig.from_pretrained(
        resolve_text_model(text_model)).hidden_size
    return {"t": hidden, "a": AUDIO_DIM, "v": VISUAL_DIM}
