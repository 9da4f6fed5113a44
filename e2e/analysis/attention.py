"""Where a sparse model (MESM) looks: the sites each sparse block kept for given utterances.

:func:`sparse_attention` runs a checkpoint's model on utterances picked by id and returns, per
utterance, its probabilities, the kept-site masks of every sparse block and its inputs as displayable
images; :func:`kept_fractions` is the fraction of each block's grid sites that were kept. The drawing
is :mod:`e2e.reporting.attention_maps`.

With Hugging Face encoders (MESM's token pruning, :mod:`e2e.models.layers.token_pruning`) a "block" is a
pruning step and its mask the kept tokens: for a vision encoder the patch grid (special tokens left out)
over the face at the encoder's resolution, for a speech encoder one row of frame tokens per chunk over the
chunk's log-mel spectrogram, stretched to a whole multiple of the token count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data_reorg.manifest import load_manifest
from e2e.config import ExperimentConfig, UsageError
from e2e.data.dataset import FACE_MEAN, FACE_STD, EmotionDataset
from e2e.data.mel import mel_spectrogram
from e2e.data.text import load_tokenizer
from e2e.models import available_models, model_spec
from e2e.models.layers.hf_encoders import HFEncoder
from e2e.training.checkpoint import load_checkpoint, model_from_checkpoint


@dataclass
class UtteranceAttention:
    item: dict  # the dataset item (``id``, ``text``, ``faces``, ``audio``, ...)
    scores: torch.Tensor  # per-class probabilities, or a regression task's predictions
    masks: dict[str, list[np.ndarray]]  # modality -> per sparse block its kept sites, (frames, H, W) bool
    images: dict[str, np.ndarray]  # modality -> its frames / chunks, (frames, H, W, 3) in [0, 1]


def face_images(faces: torch.Tensor) -> np.ndarray:
    """Normalised (T, 3, 48, 48) faces → displayable (T, 48, 48, 3) RGB in [0, 1]."""
    pixels = faces.permute(0, 2, 3, 1) * FACE_STD + FACE_MEAN
    return (pixels / 255.0).clamp(0, 1).numpy()


def mel_images(chunks: torch.Tensor) -> np.ndarray:
    """(A, 1, 128, 32) mel chunks → (A, 128, 32, 3) grey images, each scaled to [0, 1]."""
    flat = chunks[:, 0]
    low = flat.amin(dim=(1, 2), keepdim=True)
    high = flat.amax(dim=(1, 2), keepdim=True)
    grey = ((flat - low) / (high - low).clamp(min=1e-8)).numpy()
    return np.repeat(grey[..., None], 3, axis=-1)


def sparse_attention(
    ckpt: Path, ids: list[str], data_dir: Path | None = None
) -> tuple[dict, dict[str, UtteranceAttention]]:
    """The loaded checkpoint and, per utterance id (in order), what its model kept. ``data_dir``
    replaces the checkpoint's data folder. A model without sparse traces is refused from the checkpoint's
    config alone, before its weights are loaded."""
    checkpoint = load_checkpoint(ckpt)
    name = checkpoint["config"]["model"]["name"]
    if not model_spec(name).sparse_traces:
        sparse = ", ".join(other for other in available_models() if model_spec(other).sparse_traces)
        raise UsageError(f"{ckpt}: model {name!r} has no sparse attention to visualize; use a checkpoint of {sparse}")
    config, model = model_from_checkpoint(checkpoint, ckpt)
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    items = _items(ids, config, load_tokenizer(config.model.text_model))
    return checkpoint, {utterance: _run(model, item, dataset) for utterance, (item, dataset) in items.items()}


def _items(ids: list[str], config: ExperimentConfig, tokenizer) -> dict[str, tuple[dict, EmotionDataset]]:
    """Each id's dataset item (from whichever split holds it); unknown or skipped ids are one error."""
    splits = {row["id"]: row["split"] for row in load_manifest(config.data.data_dir)}
    datasets = {
        split: EmotionDataset(config.data.data_dir, split, config, tokenizer)
        for split in {splits[i] for i in ids if i in splits}
    }
    index = {
        item.id: (position, dataset) for dataset in datasets.values() for position, item in enumerate(dataset.items)
    }
    missing = [i for i in ids if i not in index]
    if missing:
        raise UsageError(f"{config.data.data_dir}: unknown or unusable utterance ids: {', '.join(missing)}")
    return {i: (index[i][1][index[i][0]], index[i][1]) for i in ids}


def _run(model: torch.nn.Module, item: dict, dataset: EmotionDataset) -> UtteranceAttention:
    with torch.no_grad():
        output = model(dataset.collator()([item]))
    masks = {m: [mask.numpy() for mask in blocks] for m, blocks in output.extras.get("sparse_masks", {}).items()}
    images = {m: face_images(item["faces"]) if m == "v" else mel_images(item["audio"]) for m in masks}
    for modality, traces in output.extras.get("token_traces", {}).items():
        encoder = model.cnns[modality]
        masks[modality] = [token_grid(encoder, trace.keep).numpy() for trace in traces]
        frames = item["faces"] if modality == "v" else item["audio"]
        images[modality] = encoder_images(encoder, frames, masks[modality][0].shape[-1])
    scores = output.logits[0] if dataset.target is not None else torch.sigmoid(output.logits[0])
    return UtteranceAttention(item, scores, masks, images)


def token_grid(encoder: HFEncoder, keep: torch.Tensor) -> torch.Tensor:
    """(chunks, tokens) kept tokens → the patch grid (chunks, g, g) of a vision encoder, or one row
    (chunks, 1, tokens) of a speech encoder's frames; special tokens (CLS, registers) left out."""
    tokens = keep[:, encoder.anatomy.special_tokens :]
    if encoder.kind == "audio":
        return tokens[:, None, :]
    side = round(tokens.shape[1] ** 0.5)
    return tokens.reshape(len(tokens), side, side)


def encoder_images(encoder: HFEncoder, frames: torch.Tensor, tokens: int) -> np.ndarray:
    """[0, 1] faces at the encoder's resolution (T, S, S, 3), or per waveform chunk its log-mel image
    (A, 128, 4·tokens, 3) scaled to [0, 1]."""
    if encoder.kind == "visual":
        faces = F.interpolate(frames, size=encoder.image_size, mode="bilinear", align_corners=False)
        return faces.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    log_mel = torch.log(mel_spectrogram(frames) + 1e-6)[:, None]
    stretched = F.interpolate(log_mel, size=(log_mel.shape[2], 4 * tokens), mode="bilinear", align_corners=False)
    return mel_images(stretched)


def kept_fractions(masks: dict[str, list[np.ndarray]]) -> dict[str, list[float]]:
    """Per modality, the fraction of each block's grid sites that were kept."""
    return {m: [float(mask.mean()) for mask in blocks] for m, blocks in masks.items()}


def mean_kept_fractions(fractions: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per modality and block, the mean over utterances of :func:`kept_fractions` (``{id: fractions}``)."""
    modalities = next(iter(fractions.values()))
    return {m: np.mean([per[m] for per in fractions.values()], axis=0).tolist() for m in modalities}
