"""Where MESM looks: the sites each sparse block kept, drawn over the face crops and mel chunks.

One PNG per utterance: a row of inputs (faces, then mel chunks) and, under each, one row per sparse
block with the kept sites highlighted (:func:`overlay`; a block's mask is upsampled to the input's
resolution, so a block-3 site on a face covers 8×8 pixels). The title carries the checkpoint's
probabilities and its decisions at the stored thresholds. ``density.json`` holds the fraction of each
block's grid sites that were kept.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: renders with Agg, touches no global backend state

from data_reorg.io import write_text_atomic
from e2e.data import FACE_MEAN, FACE_STD, EmotionDataset, even_subsample

MAX_COLUMNS = 6  # frames / chunks drawn per utterance (evenly spaced)
FIGSIZE, DPI = (9.0, 12.0), 80  # fixed, so every PNG is 720×960 pixels
HIGHLIGHT = np.array([1.0, 0.15, 0.0])  # kept sites are blended towards this colour
ALPHA, DIM = 0.45, 0.35  # blend weight at kept sites; brightness factor elsewhere
MODALITY_NAMES = {"v": "face", "a": "mel"}


def upsample(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of an (h, w) mask to ``shape``, an integer multiple of it."""
    factor_y, factor_x = shape[0] // mask.shape[0], shape[1] // mask.shape[1]
    if (mask.shape[0] * factor_y, mask.shape[1] * factor_x) != tuple(shape):
        raise ValueError(f"cannot upsample a {mask.shape} mask to {shape}")
    return np.repeat(np.repeat(mask, factor_y, axis=0), factor_x, axis=1)


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1] with the sites of ``mask`` (h, w) blended towards HIGHLIGHT and
    the rest dimmed. A pixel is marked iff its red value differs from ``DIM * image``: at marked
    pixels red ≥ ALPHA > 0 beyond the dimmed value, so the marking is recoverable from the array."""
    kept = upsample(np.asarray(mask, dtype=bool), image.shape[:2])
    out = image * DIM
    out[kept] = (1 - ALPHA) * image[kept] + ALPHA * HIGHLIGHT
    return out


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


def _load(ckpt: Path, data_dir: Path | None):
    from e2e.features.text import load_tokenizer
    from e2e.train import load_checkpoint, model_from_checkpoint

    checkpoint = load_checkpoint(ckpt)
    name = checkpoint["config"]["model"]["name"]
    if name != "mesm":
        raise ValueError(f"{ckpt}: model {name!r} has no sparse attention to visualize; use a mesm checkpoint")
    config, model = model_from_checkpoint(checkpoint, ckpt)
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    return checkpoint, config, model, load_tokenizer(config.model.text_model)


def _items(ids: list[str], config, tokenizer) -> dict[str, tuple[dict, EmotionDataset]]:
    """Each id's dataset item (from whichever split holds it); unknown or skipped ids are one error."""
    from data_reorg.manifest import load_manifest

    splits = {row["id"]: row["split"] for row in load_manifest(config.data.data_dir)}
    datasets = {split: EmotionDataset(config.data.data_dir, split, config, tokenizer)
                for split in {splits[i] for i in ids if i in splits}}
    index = {item.id: (position, dataset) for dataset in datasets.values()
             for position, item in enumerate(dataset.items)}
    missing = [i for i in ids if i not in index]
    if missing:
        raise ValueError(f"{config.data.data_dir}: unknown or unusable utterance ids: {', '.join(missing)}")
    return {i: (index[i][1][index[i][0]], index[i][1]) for i in ids}


def _title(item: dict, class_names: list[str], probs: torch.Tensor, thresholds: list[float]) -> str:
    scores = "  ".join(f"{name} {prob:.2f}{'*' if prob >= threshold else ''}"
                       for name, prob, threshold in zip(class_names, probs.tolist(), thresholds))
    return f"{item['id']}  (* = predicted at stored thresholds)\n{scores}\n\"{item['text'][:70]}\""


def _draw(path: Path, title: str, inputs: dict[str, np.ndarray], masks: dict[str, list[np.ndarray]]) -> None:
    rows = sum(1 + len(blocks) for blocks in masks.values())
    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    axes = figure.subplots(rows, MAX_COLUMNS, squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    row = 0
    for modality, images in inputs.items():
        origin = "upper" if modality == "v" else "lower"  # low mel bins at the bottom
        for column, frame in enumerate(even_subsample(len(images), MAX_COLUMNS)):
            axes[row, column].imshow(images[frame], origin=origin, aspect="auto")
            for block, mask in enumerate(masks[modality], start=1):
                axes[row + block, column].imshow(overlay(images[frame], mask[frame]), origin=origin, aspect="auto")
        axes[row, 0].set_title(MODALITY_NAMES[modality], loc="left", fontsize=9)
        for block in range(1, len(masks[modality]) + 1):
            axes[row + block, 0].set_title(f"block {block}", loc="left", fontsize=8)
        row += 1 + len(masks[modality])
    figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=DPI)


def visualize(ckpt: Path, ids: list[str], out_dir: Path, data_dir: Path | None = None) -> dict:
    """One PNG per utterance id and ``density.json`` in ``out_dir``; returns the image paths, the
    densities and the kept-site masks ``{id: {modality: [per block (frames, H, W) nested lists]}}``."""
    checkpoint, config, model, tokenizer = _load(Path(ckpt), data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, masks, density = [], {}, {}
    for utterance, (item, dataset) in _items(ids, config, tokenizer).items():
        with torch.no_grad():
            output = model(dataset.collator()([item]))
        probs = torch.sigmoid(output.logits[0])
        kept = {m: [mask.numpy() for mask in blocks] for m, blocks in output.extras["sparse_masks"].items()}
        inputs = {m: face_images(item["faces"]) if m == "v" else mel_images(item["audio"]) for m in kept}
        path = out_dir / f"{utterance}.png"
        _draw(path, _title(item, checkpoint["class_names"], probs, checkpoint["thresholds"]), inputs, kept)
        images.append(str(path))
        masks[utterance] = {m: [mask.tolist() for mask in blocks] for m, blocks in kept.items()}
        density[utterance] = {m: [float(mask.mean()) for mask in blocks] for m, blocks in kept.items()}
    summary = {"per_utterance": density, "mean": _mean_density(density)}
    write_text_atomic(out_dir / "density.json", json.dumps(summary, indent=2))
    return {"images": images, "density": summary, "masks": masks}


def _mean_density(density: dict[str, dict[str, list[float]]]) -> dict[str, list[float]]:
    modalities = next(iter(density.values()))
    return {m: np.mean([per[m] for per in density.values()], axis=0).tolist() for m in modalities}
