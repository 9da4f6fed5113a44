"""Attention maps of a sparse model (MESM): the sites each sparse block kept, drawn over the face crops
and mel chunks (what was kept: :mod:`e2e.analysis.attention`).

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
from matplotlib.colors import to_rgb

from data_reorg.io import write_text_atomic
from e2e.analysis.attention import UtteranceAttention, kept_fractions, mean_kept_fractions, sparse_attention
from e2e.data.dataset import even_subsample
from e2e.reporting.plots import ATTENTION_MAP_SIZE, COLORS, styled_figure

MAX_COLUMNS = 6  # frames / chunks drawn per utterance (evenly spaced)
HIGHLIGHT = np.array(to_rgb(COLORS["kept_sites"]))  # kept sites are blended towards this colour
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


def visualize(ckpt: Path, ids: list[str], out_dir: Path, data_dir: Path | None = None) -> dict:
    """One PNG per utterance id and ``density.json`` in ``out_dir``; returns the image paths, the
    densities and the kept-site masks ``{id: {modality: [per block (frames, H, W) nested lists]}}``."""
    checkpoint, utterances = sparse_attention(Path(ckpt), ids, data_dir)
    out_dir = Path(out_dir)
    images = []
    for utterance, attention in utterances.items():
        path = out_dir / f"{utterance}.png"
        draw_attention_map(path, _title(attention, checkpoint["class_names"], checkpoint["thresholds"]), attention)
        images.append(str(path))
    density = {utterance: kept_fractions(attention.masks) for utterance, attention in utterances.items()}
    summary = {"per_utterance": density, "mean": mean_kept_fractions(density)}
    write_text_atomic(out_dir / "density.json", json.dumps(summary, indent=2))
    masks = {
        utterance: {m: [mask.tolist() for mask in blocks] for m, blocks in attention.masks.items()}
        for utterance, attention in utterances.items()
    }
    return {"images": images, "density": summary, "masks": masks}


def _title(attention: UtteranceAttention, class_names: list[str], thresholds: list[float] | None) -> str:
    """Id, the per-class probabilities (* = predicted at the stored thresholds) or, for a regression
    checkpoint (no thresholds), the predictions, and the text."""
    values = attention.scores.tolist()
    if thresholds is None:
        legend, marks = "predictions", [""] * len(values)
    else:
        legend = "* = predicted at stored thresholds"
        marks = ["*" if value >= threshold else "" for value, threshold in zip(values, thresholds)]
    scores = "  ".join(f"{name} {value:.2f}{mark}" for name, value, mark in zip(class_names, values, marks))
    item = attention.item
    return f'{item["id"]}  ({legend})\n{scores}\n"{item["text"][:70]}"'


def draw_attention_map(path: Path, title: str, attention: UtteranceAttention) -> None:
    """Per modality a row of up to MAX_COLUMNS inputs and under it one row per sparse block, saved to ``path``."""
    rows = sum(1 + len(blocks) for blocks in attention.masks.values())
    with styled_figure(path, ATTENTION_MAP_SIZE, rows, MAX_COLUMNS) as (figure, axes):
        for axis in axes.flat:
            axis.axis("off")
        row = 0
        for modality, images in attention.images.items():
            blocks = attention.masks[modality]
            _draw_modality(axes[row : row + 1 + len(blocks)], modality, images, blocks)
            row += 1 + len(blocks)
        figure.suptitle(title)


def _draw_modality(axes: np.ndarray, modality: str, images: np.ndarray, blocks: list[np.ndarray]) -> None:
    """The inputs on ``axes[0]``, block k's kept sites over them on ``axes[k]``."""
    origin = "upper" if modality == "v" else "lower"  # low mel bins at the bottom
    for column, frame in enumerate(even_subsample(len(images), MAX_COLUMNS)):
        axes[0, column].imshow(images[frame], origin=origin, aspect="auto")
        for block, mask in enumerate(blocks, start=1):
            axes[block, column].imshow(overlay(images[frame], mask[frame]), origin=origin, aspect="auto")
    axes[0, 0].set_title(MODALITY_NAMES[modality], loc="left")
    for block in range(1, len(blocks) + 1):
        axes[block, 0].set_title(f"block {block}", loc="left")
