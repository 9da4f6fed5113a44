"""Two-stage features: the per-modality descriptor sequences the baselines (LF-LSTM, LF-TRANS, EmoEmbs,
MulT, ...) consume, extracted from the same clips and face crops as the end-to-end models.

Substitutes for the papers' GloVe / COVAREP / FACET features (none of which ships as a package):

* text: token-level last hidden states of the configured text model (frozen), ``(tokens, hidden)``;
* audio: :data:`AUDIO_DESCRIPTORS` per 100 ms step, ``(steps, AUDIO_DIM)``;
* visual: per sampled frame, the 256-d penultimate layer of MTCNN's O-Net (a CNN trained on 48x48 face
  crops, the same size as ours) plus the five O-Net landmarks and geometry derived from them,
  ``(frames, VISUAL_DIM)``.

Sequences are unaligned across modalities (different lengths), as in the papers' unaligned setting.
Foundation-encoder features can replace the audio / visual substitutes (:mod:`e2e.data.encoder_features`);
their sizes are then the cache's (``model.input_dims``), not :func:`feature_dims`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from e2e.data.mel import SAMPLE_RATE

AUDIO_STEP_MS = 100
AUDIO_DESCRIPTORS = (
    *(f"mfcc{i}" for i in range(20)),
    "log_energy",
    "zero_crossing_rate",
    "spectral_centroid",
    "spectral_bandwidth",
    "spectral_flatness",
    "spectral_rolloff",
    "log_f0",
    "voiced",
)
AUDIO_DIM = len(AUDIO_DESCRIPTORS)
ONET_EMBEDDING_DIM = 256
LANDMARK_DIM = 10  # (x, y) of left eye, right eye, nose, left and right mouth corner, in crop units
GEOMETRY_DESCRIPTORS = ("interocular", "mouth_width", "nose_to_mouth", "eyes_to_mouth", "roll", "nose_offset")
VISUAL_DIM = ONET_EMBEDDING_DIM + LANDMARK_DIM + len(GEOMETRY_DESCRIPTORS) + 2  # + face prob, face found


def feature_dims(text_model: str) -> dict[str, int]:
    """Feature size per modality: the text model's hidden size, :data:`AUDIO_DIM`, :data:`VISUAL_DIM`."""
    from e2e.data.text import TINY_BERT, TINY_BERT_HIDDEN, load_text_config

    hidden = TINY_BERT_HIDDEN if text_model == TINY_BERT else load_text_config(text_model).hidden_size
    return {"t": hidden, "a": AUDIO_DIM, "v": VISUAL_DIM}


FRAME_HOP = 200  # 12.5 ms analysis hop; 8 hops make one 100 ms step
FRAMES_PER_STEP = AUDIO_STEP_MS * SAMPLE_RATE // 1000 // FRAME_HOP
F0_RANGE = (60.0, 500.0)  # Hz, covers adult speech
VOICED_RMS_FRACTION = 0.1  # a frame quieter than 10 % of the utterance's loudest frame is unvoiced
ONET_MEAN, ONET_SCALE = 127.5, 0.0078125  # O-Net's input normalisation (facenet-pytorch's detect_face)
MIN_INTEROCULAR = 1e-3


def audio_descriptors(samples: np.ndarray) -> np.ndarray:
    """(steps, AUDIO_DIM) descriptors of 16 kHz audio: librosa frame features on 25 ms windows with a
    12.5 ms hop, averaged over 100 ms steps (``ceil(frames / 8)`` steps).

    ``voiced`` is the fraction of the step's frames with a YIN f0 strictly inside :data:`F0_RANGE` and
    an RMS of at least :data:`VOICED_RMS_FRACTION` of the utterance maximum (YIN itself has no voicing
    decision); ``log_f0`` is the mean log f0 of those frames, 0 where a step has none. Centroid,
    bandwidth and rolloff are in kHz, energy is log RMS.
    """
    import librosa

    y = np.asarray(samples, dtype=np.float32)
    y = np.pad(y, (0, max(0, 2 * 400 - len(y))))  # YIN needs two 25 ms windows
    frame = dict(n_fft=400, hop_length=FRAME_HOP)
    rms = librosa.feature.rms(y=y, frame_length=400, hop_length=FRAME_HOP)[0]
    rows = [
        librosa.feature.mfcc(y=y, sr=SAMPLE_RATE, n_mfcc=20, n_mels=40, **frame),
        np.log(rms + 1e-6)[None],
        librosa.feature.zero_crossing_rate(y, frame_length=400, hop_length=FRAME_HOP),
        librosa.feature.spectral_centroid(y=y, sr=SAMPLE_RATE, **frame) / 1000,
        librosa.feature.spectral_bandwidth(y=y, sr=SAMPLE_RATE, **frame) / 1000,
        librosa.feature.spectral_flatness(y=y, **frame),
        librosa.feature.spectral_rolloff(y=y, sr=SAMPLE_RATE, **frame) / 1000,
    ]
    f0 = librosa.yin(y, fmin=F0_RANGE[0], fmax=F0_RANGE[1], sr=SAMPLE_RATE, frame_length=800, hop_length=FRAME_HOP)
    frames = min(len(rms), len(f0), *(row.shape[1] for row in rows))
    voiced = (
        (f0[:frames] > F0_RANGE[0] + 1)
        & (f0[:frames] < F0_RANGE[1] - 1)
        & (rms[:frames] >= VOICED_RMS_FRACTION * rms.max())
    )
    frame_features = np.concatenate([row[:, :frames] for row in rows]).T  # (frames, 26)
    return np.concatenate([_step_means(frame_features), _step_pitch(f0[:frames], voiced)], axis=1).astype(np.float32)


def _step_means(frame_features: np.ndarray) -> np.ndarray:
    steps = math.ceil(len(frame_features) / FRAMES_PER_STEP)
    return np.stack([frame_features[s * FRAMES_PER_STEP : (s + 1) * FRAMES_PER_STEP].mean(0) for s in range(steps)])


def _step_pitch(f0: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """(steps, 2): mean log f0 over the voiced frames of each step (0 if none) and the voiced fraction."""
    rows = []
    for start in range(0, len(f0), FRAMES_PER_STEP):
        step_f0, step_voiced = f0[start : start + FRAMES_PER_STEP], voiced[start : start + FRAMES_PER_STEP]
        log_f0 = float(np.log(step_f0[step_voiced]).mean()) if step_voiced.any() else 0.0
        rows.append((log_f0, float(step_voiced.mean())))
    return np.asarray(rows, dtype=np.float32)


class FaceDescriber:
    """Frozen MTCNN O-Net over cached 48x48 face crops: its 256-d penultimate activations, its five
    landmarks (crop-relative, 0..1) and face probability, plus :data:`GEOMETRY_DESCRIPTORS`."""

    def __init__(self, device: str = "cpu"):
        from facenet_pytorch.models.mtcnn import ONet

        self.onet = ONet(pretrained=True).to(device).eval()
        self.device = device
        self._embedding: torch.Tensor | None = None
        self.onet.prelu5.register_forward_hook(self._keep_embedding)

    def _keep_embedding(self, module, inputs, output) -> None:
        self._embedding = output

    @torch.no_grad()
    def __call__(self, crops: np.ndarray, face_found: np.ndarray) -> np.ndarray:
        """uint8 (T, 48, 48, 3) RGB crops and (T,) flags -> (T, VISUAL_DIM) float32."""
        images = torch.from_numpy(np.asarray(crops)).to(self.device).permute(0, 3, 1, 2).float()
        _, landmarks, probability = self.onet((images - ONET_MEAN) * ONET_SCALE)
        landmarks = landmarks.cpu()
        columns = [
            self._embedding.cpu(),
            landmarks,
            face_geometry(landmarks),
            probability[:, 1:].cpu(),
            torch.from_numpy(np.asarray(face_found, dtype=np.float32))[:, None],
        ]
        return torch.cat(columns, dim=1).numpy().astype(np.float32)


def face_geometry(landmarks: torch.Tensor) -> torch.Tensor:
    """(T, 10) O-Net landmarks (x of eyes, nose, mouth corners, then their y) -> (T, 6) geometry.

    With iod the interocular distance: ``interocular`` = iod; ``mouth_width`` = mouth corner distance /
    iod; ``nose_to_mouth`` and ``eyes_to_mouth`` = vertical distance from the nose / eye midpoint to the
    mouth midpoint / iod; ``roll`` = angle of the eye line (radians); ``nose_offset`` = horizontal nose
    offset from the eye midpoint / iod (a yaw cue).
    """
    x, y = landmarks[:, :5], landmarks[:, 5:]
    left_eye, right_eye = torch.stack([x[:, 0], y[:, 0]], 1), torch.stack([x[:, 1], y[:, 1]], 1)
    nose, left_mouth, right_mouth = (torch.stack([x[:, i], y[:, i]], 1) for i in (2, 3, 4))
    iod = (right_eye - left_eye).norm(dim=1).clamp(min=MIN_INTEROCULAR)
    eyes, mouth = (left_eye + right_eye) / 2, (left_mouth + right_mouth) / 2
    return torch.stack(
        [
            iod,
            (right_mouth - left_mouth).norm(dim=1) / iod,
            (mouth[:, 1] - nose[:, 1]) / iod,
            (mouth[:, 1] - eyes[:, 1]) / iod,
            torch.atan2(right_eye[:, 1] - left_eye[:, 1], right_eye[:, 0] - left_eye[:, 0]),
            (nose[:, 0] - eyes[:, 0]) / iod,
        ],
        dim=1,
    )


class TokenEmbedder:
    """Frozen text model: per utterance the last hidden states of its tokens, special tokens included
    (CLS/SEP keep an empty or one-word utterance non-empty), padding removed."""

    def __init__(self, text_model: str, max_length: int, device: str = "cpu"):
        from e2e.data.text import load_text_encoder, load_tokenizer

        torch.manual_seed(0)  # only matters for randomly initialised test models (tiny-bert)
        self.tokenizer = load_tokenizer(text_model)
        self.model = load_text_encoder(text_model).to(device).eval()
        self.max_length, self.device = max_length, device

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        states = self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        lengths = tokens["attention_mask"].sum(1).tolist()
        return [states[b, :n].float().cpu().numpy() for b, n in enumerate(lengths)]
