"""Offline feature cache: face crops and the power mel spectrogram of every manifest row.

``DATA_DIR/cache/i<img_interval_ms>/<safe id>.npz`` holds

* ``faces`` uint8 (T, 48, 48, 3) RGB crops, one frame every ``img_interval_ms`` from the clip start;
* ``face_found`` bool (T,): False where MTCNN found no face and the frame's centre crop was stored;
* ``mel`` float32 (128, 1 + num_samples // 200): power mel spectrogram of the whole clip's audio;
* ``rms`` float32 (): audio RMS (full scale 1.0), ``num_samples`` int64 (): audio length at 16 kHz;
* ``source``: the manifest row's sha256 record, so a re-cut clip invalidates its cache file.

Files are written atomically, so an existing file with the current ``source`` is complete and skipped
(resumable). Items that cannot be processed are logged, listed in ``problems.jsonl`` beside the cache
files, and skipped; they are retried on the next run. Training reads this cache and never runs MTCNN.

Command line: ``e2e preprocess DATA_DIR [--img-interval-ms 500] [--jobs N] [--device auto]``.
``jobs > 1`` starts spawned worker processes, so a script calling :func:`preprocess` with it must do so
under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from data_reorg.io import atomic_path, safe_name, write_jsonl_atomic
from data_reorg.manifest import load_manifest
from data_reorg.media import AudioReadError, read_audio
from data_reorg.workers import worker_pool
from e2e.data.faces import FaceCropper, VideoReadError, read_frames, sample_frame_indices
from e2e.data.mel import N_FFT, mel_spectrogram

CACHE_KEYS = ("faces", "face_found", "mel", "rms", "num_samples", "source")
PROBLEMS_FILE = "problems.jsonl"

logger = logging.getLogger(__name__)
_worker_cropper: FaceCropper | None = None  # one MTCNN per pool worker process


class ItemProblem(Exception):
    """One utterance cannot be cached; ``path`` is the offending file."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


@dataclass
class CacheSummary:
    """What one build of a cache (face/mel here, two-stage features in :mod:`e2e.data.feature_cache`) did."""

    cache_dir: Path
    total: int  # manifest rows
    built: int = 0  # cache files written by this run
    reused: int = 0  # valid cache files found and kept
    problems: list[dict] = field(default_factory=list)  # {"id", "file", "error"} per failed item
    seconds: float = 0.0  # wall time spent building (excludes the validity scan)

    def finish(self, started: float, what: str) -> CacheSummary:
        """Record the build time, write ``problems.jsonl`` beside the cache and log one line."""
        self.seconds = time.perf_counter() - started
        problems = self.cache_dir / PROBLEMS_FILE
        write_jsonl_atomic(problems, self.problems)
        logger.info(
            "%s %s: %d rows, %d built, %d reused, %d problems (%s), %.1f s",
            what,
            self.cache_dir,
            self.total,
            self.built,
            self.reused,
            len(self.problems),
            problems,
            self.seconds,
        )
        return self


def cache_dir(data_dir: Path | str, img_interval_ms: int) -> Path:
    return Path(data_dir) / "cache" / f"i{img_interval_ms}"


def cache_path(data_dir: Path | str, img_interval_ms: int, item_id: str) -> Path:
    return cache_dir(data_dir, img_interval_ms) / f"{safe_name(item_id)}.npz"


def source_key(row: dict) -> str:
    """What the cache file of ``row`` was built from (the clip checksums, when the manifest has them)."""
    return json.dumps(row.get("sha256"), sort_keys=True)


def preprocess(
    data_dir: Path | str, img_interval_ms: int = 500, jobs: int = 1, device: str = "cpu", progress: bool = True
) -> CacheSummary:
    """Build the missing cache files of ``data_dir``'s manifest; see the module docstring."""
    data_dir = Path(data_dir)
    rows = load_manifest(data_dir)
    summary = CacheSummary(cache_dir(data_dir, img_interval_ms), total=len(rows))
    todo = [
        row for row in rows if not is_valid_cache(cache_path(data_dir, img_interval_ms, row["id"]), source_key(row))
    ]
    summary.reused = len(rows) - len(todo)
    started = time.perf_counter()
    with tqdm(total=len(todo), desc=f"preprocess {data_dir.name}", disable=not progress) as bar:
        for row, problem in _build_all(todo, data_dir, img_interval_ms, jobs, device):
            if problem is None:
                summary.built += 1
            else:
                logger.warning("skipping %s: %s", row["id"], problem["error"])
                summary.problems.append(problem)
            bar.update()
    return summary.finish(started, "preprocess")


def is_valid_cache(path: Path, source: str, keys: tuple[str, ...] = CACHE_KEYS) -> bool:
    """A complete cache file (holding ``keys``) built from ``source``; reads only the archive's directory
    and ``source``."""
    try:
        with np.load(path) as archive:
            return set(keys) <= set(archive.files) and str(archive["source"]) == source
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def _build_all(rows: list[dict], data_dir: Path, img_interval_ms: int, jobs: int, device: str):
    """Yield (row, problem or None) for each row, in completion order."""
    paths = [cache_path(data_dir, img_interval_ms, row["id"]) for row in rows]
    if jobs <= 1 or len(rows) <= 1:
        cropper = FaceCropper(device)
        for row, path in zip(rows, paths):
            yield row, build_item(row, path, img_interval_ms, cropper)
        return
    with worker_pool(min(jobs, len(rows)), _init_worker, (device,)) as pool:
        futures = {pool.submit(_pool_task, row, path, img_interval_ms): row for row, path in zip(rows, paths)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _init_worker(device: str) -> None:
    global _worker_cropper
    torch.set_num_threads(1)
    _worker_cropper = FaceCropper(device)


def _pool_task(row: dict, path: Path, img_interval_ms: int) -> dict | None:
    return build_item(row, path, img_interval_ms, _worker_cropper)


def build_item(row: dict, path: Path, img_interval_ms: int, cropper: FaceCropper) -> dict | None:
    """Write the cache file of one manifest row; return None, or a problem record if it cannot be built."""
    try:
        faces, found = _faces(row, img_interval_ms, cropper)
        samples = read_clip_audio(row["audio"])
    except ItemProblem as problem:
        return {"id": row["id"], "file": problem.path, "error": str(problem)}
    mel = mel_spectrogram(torch.from_numpy(samples)).numpy()
    rms = np.float32(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    with atomic_path(path) as tmp:
        np.savez(
            tmp,
            faces=faces,
            face_found=found,
            mel=mel,
            rms=rms,
            num_samples=np.int64(len(samples)),
            source=np.array(source_key(row)),
        )
    return None


def _faces(row: dict, img_interval_ms: int, cropper: FaceCropper) -> tuple[np.ndarray, np.ndarray]:
    indices = sample_frame_indices(int(row["num_frames"]), float(row["fps"]), img_interval_ms)
    if not indices:
        raise ItemProblem(
            row["video"], f"{row['video']}: no frames to sample (num_frames={row['num_frames']}, fps={row['fps']})"
        )
    try:
        frames = read_frames(row["video"], indices)
    except (VideoReadError, cv2.error) as error:
        raise ItemProblem(row["video"], str(error)) from error
    return cropper.crops(frames)


def read_clip_audio(path: str) -> np.ndarray:
    """A clip's 16 kHz mono samples (:func:`data_reorg.media.read_audio`), at least one analysis window long;
    a clip that cannot give them is this item's problem."""
    try:
        return read_audio(path, min_samples=N_FFT)
    except AudioReadError as error:
        raise ItemProblem(str(error.path), str(error)) from error
