"""Two-stage feature cache (``e2e features``): the inputs of the feature models, from the same clips.

``DATA_DIR/cache/features/<text model>-i<img_interval_ms>/<safe id>.npz`` holds float32 arrays
``text`` (tokens, hidden), ``audio`` (100 ms steps, AUDIO_DIM) and ``visual`` (frames, VISUAL_DIM) —
see :mod:`e2e.data.sequences` — and ``source``: the clip checksums, the text model and its
``max_length``, so a re-cut clip or another text setting invalidates the file.

Visual descriptors are computed from the face cache of :mod:`e2e.data.preprocess` (run it first; the
frames are the same ones the end-to-end models see); audio from the clip's wav; text from the
manifest transcript. ``audio_encoder`` / ``visual_encoder`` (HF ids or folders) replace the audio /
visual descriptors by foundation-encoder features (:mod:`e2e.data.encoder_features`) in a folder of their
own, ``<text model>-i<ms>-a<audio id>-v<visual id>`` (each part only when chosen), their ids and what
identifies their weights (:func:`~e2e.data.hf_inputs.weights_fingerprint`) in ``source``, so changed weights
invalidate the files (so do a local text model folder's). A visual encoder may read the face cache of
another ``face_size`` (``e2e preprocess --face-size``): folder ``<text model>-i<ms>-f<size>-...`` and
``face_size`` in ``source``, both only when it is not the default 48 px (the O-Net substitute takes only
those).
Like the face cache it is resumable, written atomically, shards by item id
(``shard``, ``merge``, :func:`~e2e.data.preprocess.build_sharded`), and an item that cannot be processed
is logged and listed in ``problems.jsonl`` while the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from data_reorg.io import safe_name
from data_reorg.manifest import load_manifest
from data_reorg.shards import Shard
from e2e.config import ConfigError, DataConfig
from e2e.data.faces import FACE_SIZE
from e2e.data.hf_inputs import weights_fingerprint
from e2e.data.preprocess import (
    CacheSummary,
    ItemProblem,
    cache_path,
    is_valid_cache,
    merged_problems,
    read_clip_audio,
    shard_rows,
    source_key,
    write_npz,
)
from e2e.data.sequences import FaceDescriber, TokenEmbedder, audio_descriptors
from e2e.data.text import MINILM, TINY_BERT

if TYPE_CHECKING:
    from collections.abc import Callable

FEATURE_KEYS = ("text", "audio", "visual", "source")
CHUNK = 16  # rows whose media features are computed before their files are written

logger = logging.getLogger(__name__)


def feature_cache_dir(
    data_dir: Path | str,
    text_model: str,
    img_interval_ms: int,
    audio_encoder: str = "",
    visual_encoder: str = "",
    face_size: int = FACE_SIZE,
) -> Path:
    """``<text model>-i<ms>``, then ``-f<size>`` for a face size other than 48 px and the encoders' parts."""
    size = "" if face_size == FACE_SIZE else f"-f{face_size}"
    encoders = "".join(
        f"-{tag}{safe_name(name)}" for tag, name in (("a", audio_encoder), ("v", visual_encoder)) if name
    )
    return Path(data_dir) / "cache" / "features" / f"{safe_name(text_model)}-i{img_interval_ms}{size}{encoders}"


def feature_path(
    data_dir: Path | str,
    text_model: str,
    img_interval_ms: int,
    item_id: str,
    audio_encoder: str = "",
    visual_encoder: str = "",
    face_size: int = FACE_SIZE,
) -> Path:
    folder = feature_cache_dir(data_dir, text_model, img_interval_ms, audio_encoder, visual_encoder, face_size)
    return folder / f"{safe_name(item_id)}.npz"


def feature_source(
    row: dict,
    text_model: str,
    text_max_length: int,
    audio_encoder: str = "",
    visual_encoder: str = "",
    face_size: int = FACE_SIZE,
) -> str:
    """The file's fingerprint: the clips and the text settings; only when chosen (so the default features'
    stays as it was) the encoder ids and their weights' :func:`~e2e.data.hf_inputs.weights_fingerprint`
    (left out where that is the id: a Hub id not in the HF cache), a local text model folder's weights and
    a face size other than 48 px."""
    source = {"clips": row.get("sha256"), "text_model": text_model, "max_length": text_max_length}
    for key, name in (("audio_encoder", audio_encoder), ("visual_encoder", visual_encoder)):
        if name:
            source[key] = name
            source.update(_weights(f"{key}_weights", name))
    if text_model not in (MINILM, TINY_BERT) and Path(text_model).is_dir():  # those two are not read from there
        source.update(_weights("text_weights", text_model))
    if face_size != FACE_SIZE:
        source["face_size"] = face_size
    return json.dumps(source, sort_keys=True)


def _weights(key: str, name: str) -> dict[str, str]:
    fingerprint = weights_fingerprint(name)
    return {key: fingerprint} if fingerprint != name else {}


def check_face_size(face_size: int, visual_encoder: str) -> None:
    """ConfigError unless a visual encoder reads a face size other than 48 px: the O-Net substitute takes those."""
    if face_size != FACE_SIZE and not visual_encoder:
        raise ConfigError(
            f"--face-size / data.face_size={face_size} without a visual encoder: the O-Net substitute takes the "
            f"{FACE_SIZE} px crops of the default face cache; other sizes are for --visual-encoder / "
            "model.feature_visual_encoder"
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
    shard: Shard | None = None,
    merge: bool = False,
    audio_encoder: str = "",
    visual_encoder: str = "",
    face_size: int = DataConfig.face_size,
) -> CacheSummary:
    """Build the missing feature files of ``data_dir``'s manifest (of one ``shard``, or none: ``merge``);
    see the module docstring."""
    check_face_size(face_size, visual_encoder)
    data_dir = Path(data_dir)
    rows = shard_rows(load_manifest(data_dir), shard)
    cache_dir = feature_cache_dir(data_dir, text_model, img_interval_ms, audio_encoder, visual_encoder, face_size)
    summary = CacheSummary(cache_dir, total=len(rows), shard=shard)
    started = time.perf_counter()
    settings = (text_model, text_max_length, audio_encoder, visual_encoder, face_size)
    sources = _sources(rows, settings)
    todo = _todo(rows, cache_dir, sources)
    if merge:
        summary.problems = merged_problems(todo, summary.cache_dir, lambda row: sources[row["id"]])
    elif todo:
        extractors = _Extractors(
            *_media_extractors(audio_encoder, visual_encoder, device),
            TokenEmbedder(text_model, text_max_length, device),
        )
        if (loaded := _sources(rows, settings)) != sources:  # a Hub id just downloaded: its snapshot identifies it
            sources, todo = loaded, _todo(rows, cache_dir, loaded)
        with tqdm(total=len(todo), desc=f"features {data_dir.name}", disable=not progress) as bar:
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start : start + CHUNK]
                _build_chunk(chunk, data_dir, (img_interval_ms, face_size), sources, cache_dir, extractors, summary)
                bar.update(len(chunk))
    summary.reused = len(rows) - len(todo)
    return summary.finish(started, "features", {row["id"]: sources[row["id"]] for row in todo})


def _sources(rows: list[dict], settings: tuple) -> dict[str, str]:
    """id -> :func:`feature_source` of ``settings`` (its arguments after the row)."""
    return {row["id"]: feature_source(row, *settings) for row in rows}


def _todo(rows: list[dict], cache_dir: Path, sources: dict[str, str]) -> list[dict]:
    """The rows without a valid file of their source in ``cache_dir``."""
    return [row for row in rows if not is_valid_features(cache_dir / f"{safe_name(row['id'])}.npz", sources[row["id"]])]


@dataclass(frozen=True)
class _Extractors:
    describe_audio: Callable[[np.ndarray], np.ndarray]  # 16 kHz samples -> (steps, D)
    describe_faces: Callable[[np.ndarray, np.ndarray], np.ndarray]  # crops, face_found -> (frames, D)
    embed_tokens: TokenEmbedder


def _media_extractors(audio_encoder: str, visual_encoder: str, device: str) -> tuple:
    """(audio, visual) describers: the chosen encoders' (:mod:`e2e.data.encoder_features`), else the substitutes."""
    from e2e.data.encoder_features import EncoderAudio, EncoderFaces

    describe_audio = EncoderAudio(audio_encoder, device) if audio_encoder else audio_descriptors
    return describe_audio, EncoderFaces(visual_encoder, device) if visual_encoder else FaceDescriber(device)


def _build_chunk(
    rows: list[dict],
    data_dir: Path,
    faces: tuple[int, int],
    sources: dict[str, str],
    cache_dir: Path,
    extractors: _Extractors,
    summary: CacheSummary,
) -> None:
    """Write the feature files of ``rows`` (``faces``: the face cache's interval and size); problems go to
    ``summary``."""
    ready = []
    for row in rows:
        try:
            ready.append((row, *_media_features(row, data_dir, faces, extractors)))
        except ItemProblem as problem:
            logger.warning("skipping %s: %s", row["id"], problem)
            summary.problems.append({"id": row["id"], "file": problem.path, "error": str(problem)})
    # one text per forward pass: in a padded batch an embedding's last bits depend on its batch mates,
    # which differ between a plain build and its shards (and between reruns resuming different rows)
    texts = [extractors.embed_tokens([row["text"] or ""])[0] for row, _, _ in ready]
    for (row, audio, visual), text in zip(ready, texts):
        path = cache_dir / f"{safe_name(row['id'])}.npz"
        write_npz(path, text=text, audio=audio, visual=visual, source=np.array(sources[row["id"]]))
        summary.built += 1


def _media_features(
    row: dict, data_dir: Path, faces: tuple[int, int], extractors: _Extractors
) -> tuple[np.ndarray, np.ndarray]:
    """(audio, visual) descriptors of one row (``faces``: the face cache's interval and size); ItemProblem
    names the file, and the command that builds it, when an input is unusable."""
    face_cache = cache_path(data_dir, faces[0], row["id"], faces[1])
    if not is_valid_cache(face_cache, source_key(row)):
        raise ItemProblem(
            str(face_cache),
            f"{face_cache}: no valid face cache for {row['id']} (run `{_preprocess_command(data_dir, *faces)}` first)",
        )
    with np.load(face_cache) as archive:
        crops, found = archive["faces"], archive["face_found"]
    if len(crops) == 0:
        raise ItemProblem(str(face_cache), f"{face_cache}: no face frames for {row['id']}")
    return extractors.describe_audio(read_clip_audio(row["audio"])), extractors.describe_faces(crops, found)


def _preprocess_command(data_dir: Path, img_interval_ms: int, face_size: int) -> str:
    """The ``e2e preprocess`` command that builds the face cache of ``img_interval_ms`` and ``face_size``."""
    options = [
        f" --{flag} {value}"
        for flag, value, default in (
            ("img-interval-ms", img_interval_ms, DataConfig.img_interval_ms),
            ("face-size", face_size, FACE_SIZE),
        )
        if value != default
    ]
    return f"e2e preprocess {data_dir}{''.join(options)}"
