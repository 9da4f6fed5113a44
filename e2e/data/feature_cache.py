"""Two-stage feature cache (``e2e features``): the inputs of the feature models, from the same clips.

``DATA_DIR/cache/features/<text model>-i<img_interval_ms>/<safe id>.npz`` holds float32 arrays
``text`` (tokens, hidden), ``audio`` (100 ms steps, AUDIO_DIM) and ``visual`` (frames, VISUAL_DIM) —
see :mod:`e2e.data.sequences` — and ``source``: the clip checksums, the text model and its
``max_length``, so a re-cut clip or another text setting invalidates the file.

Visual descriptors are computed from the face cache of :mod:`e2e.data.preprocess` (run it first; the
frames are the same ones the end-to-end models see); audio from the clip's wav; text from the
manifest transcript. Like the face cache it is resumable, written atomically, and an item that cannot
be processed is logged and listed in ``problems.jsonl`` while the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_reorg.io import atomic_path, safe_name
from data_reorg.manifest import load_manifest
from e2e.data.preprocess import CacheSummary, ItemProblem, cache_path, is_valid_cache, read_clip_audio, source_key
from e2e.data.sequences import FaceDescriber, TokenEmbedder, audio_descriptors

FEATURE_KEYS = ("text", "audio", "visual", "source")
TEXT_BATCH = 16

logger = logging.getLogger(__name__)


def feature_cache_dir(data_dir: Path | str, text_model: str, img_interval_ms: int) -> Path:
    return Path(data_dir) / "cache" / "features" / f"{safe_name(text_model)}-i{img_interval_ms}"


def feature_path(data_dir: Path | str, text_model: str, img_interval_ms: int, item_id: str) -> Path:
    return feature_cache_dir(data_dir, text_model, img_interval_ms) / f"{safe_name(item_id)}.npz"


def feature_source(row: dict, text_model: str, text_max_length: int) -> str:
    return json.dumps(
        {"clips": row.get("sha256"), "text_model": text_model, "max_length": text_max_length}, sort_keys=True
    )


def is_valid_features(path: Path, source: str) -> bool:
    return is_valid_cache(path, source, FEATURE_KEYS)


def extract_features(
    data_dir: Path | str,
    text_model: str = "minilm",
    img_interval_ms: int = 500,
    text_max_length: int = 100,
    progress: bool = True,
    device: str = "cpu",
) -> CacheSummary:
    """Build the missing feature files of ``data_dir``'s manifest; see the module docstring."""
    data_dir = Path(data_dir)
    rows = load_manifest(data_dir)
    summary = CacheSummary(feature_cache_dir(data_dir, text_model, img_interval_ms), total=len(rows))
    todo = [
        row
        for row in rows
        if not is_valid_features(
            feature_path(data_dir, text_model, img_interval_ms, row["id"]),
            feature_source(row, text_model, text_max_length),
        )
    ]
    summary.reused = len(rows) - len(todo)
    started = time.perf_counter()
    if todo:
        describe_faces, embed_tokens = FaceDescriber(device), TokenEmbedder(text_model, text_max_length, device)
        with tqdm(total=len(todo), desc=f"features {data_dir.name}", disable=not progress) as bar:
            for start in range(0, len(todo), TEXT_BATCH):
                chunk = todo[start : start + TEXT_BATCH]
                _build_chunk(
                    chunk, data_dir, text_model, img_interval_ms, text_max_length, describe_faces, embed_tokens, summary
                )
                bar.update(len(chunk))
    return summary.finish(started, "features")


def _build_chunk(
    rows: list[dict],
    data_dir: Path,
    text_model: str,
    img_interval_ms: int,
    text_max_length: int,
    describe_faces: FaceDescriber,
    embed_tokens: TokenEmbedder,
    summary: CacheSummary,
) -> None:
    """Write the feature files of ``rows`` (text embedded as one batch); problems go to ``summary``."""
    ready = []
    for row in rows:
        try:
            ready.append((row, *_media_features(row, data_dir, img_interval_ms, describe_faces)))
        except ItemProblem as problem:
            logger.warning("skipping %s: %s", row["id"], problem)
            summary.problems.append({"id": row["id"], "file": problem.path, "error": str(problem)})
    texts = embed_tokens([row["text"] or "" for row, _, _ in ready]) if ready else []
    for (row, audio, visual), text in zip(ready, texts):
        with atomic_path(feature_path(data_dir, text_model, img_interval_ms, row["id"])) as tmp:
            np.savez(
                tmp,
                text=text,
                audio=audio,
                visual=visual,
                source=np.array(feature_source(row, text_model, text_max_length)),
            )
        summary.built += 1


def _media_features(
    row: dict, data_dir: Path, img_interval_ms: int, describe_faces: FaceDescriber
) -> tuple[np.ndarray, np.ndarray]:
    """(audio, visual) descriptors of one row; ItemProblem names the file when an input is unusable."""
    face_cache = cache_path(data_dir, img_interval_ms, row["id"])
    if not is_valid_cache(face_cache, source_key(row)):
        raise ItemProblem(
            str(face_cache),
            f"{face_cache}: no valid face cache for {row['id']} (run `e2e preprocess {data_dir}` first)",
        )
    with np.load(face_cache) as archive:
        crops, found = archive["faces"], archive["face_found"]
    if len(crops) == 0:
        raise ItemProblem(str(face_cache), f"{face_cache}: no face frames for {row['id']}")
    return audio_descriptors(read_clip_audio(row["audio"])), describe_faces(crops, found)
