"""Offline feature cache: face crops and the power mel spectrogram of every manifest row.

``DATA_DIR/cache/i<img_interval_ms>/<safe id>.npz`` (48 px crops, the paper's; other sizes for
encoders with their own input resolution in ``cache/i<img_interval_ms>-f<face_size>/``) holds

* ``faces`` uint8 (T, S, S, 3) RGB crops (S = ``face_size``), one frame every ``img_interval_ms`` from
  the clip start;
* ``face_found`` bool (T,): False where MTCNN found no face and the frame's centre crop was stored;
* ``mel`` float32 (128, 1 + num_samples // 200): power mel spectrogram of the whole clip's audio;
* ``rms`` float32 (): audio RMS (full scale 1.0), ``num_samples`` int64 (): audio length at 16 kHz;
* ``source``: the manifest row's sha256 record, so a re-cut clip invalidates its cache file.

Files are written atomically, so an existing file with the current ``source`` is complete and skipped
(resumable). Items that cannot be processed are logged, listed in ``problems.jsonl`` beside the cache
files, and skipped; they are retried on the next run. Training reads this cache and never runs MTCNN.

Both caches shard by item id (:mod:`data_reorg.shards`): ``shard=K/N`` builds only that shard's files
and writes ``shards/<K>-of-<N>.json`` beside them instead of ``problems.jsonl``; ``merge=True`` builds
nothing and writes ``problems.jsonl`` from the finished shards, as one plain run would have;
:func:`build_sharded` runs the shards through an executor, then merges.

Command line: ``e2e preprocess DATA_DIR [--img-interval-ms 500] [--face-size 48] [--jobs N] [--device auto]
[--shard K/N | --merge | --shards N] [--executor local|slurm|ray ...]``.
``jobs > 1`` starts spawned worker processes, so a script calling :func:`preprocess` with it must do so
under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from data_reorg.executors import ExecutorSpec
from data_reorg.io import atomic_path, safe_name, write_jsonl_atomic
from data_reorg.manifest import load_manifest
from data_reorg.media import AudioReadError, read_audio
from data_reorg.shards import Shard, all_shards, merge_failures, run_shards, write_record
from data_reorg.workers import worker_pool
from e2e.data.faces import FACE_SIZE, FaceCropper, VideoReadError, read_frames, sample_frame_indices
from e2e.data.mel import N_FFT, mel_spectrogram

CACHE_KEYS = ("faces", "face_found", "mel", "rms", "num_samples", "source")
PROBLEMS_FILE = "problems.jsonl"
NPZ_TIME = (1980, 1, 1, 0, 0, 0)  # the timestamp of every cache file member (the earliest a zip holds)

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
    shard: Shard | None = None  # a shard build: ``total`` counts its rows only
    record: Path | None = None  # the record a shard build writes instead of ``problems.jsonl``

    def finish(self, started: float, what: str, fingerprints: dict[str, str]) -> CacheSummary:
        """Record the build time, write ``problems.jsonl`` (sorted by id) beside the cache, or for a shard
        its record (each problem with ``fingerprints[id]``, what it was built from), and log one line."""
        self.seconds = time.perf_counter() - started
        self.problems.sort(key=lambda problem: problem["id"])
        if self.shard is None:
            problems = self.cache_dir / PROBLEMS_FILE
            write_jsonl_atomic(problems, self.problems)
        else:
            failed = [{**problem, "fingerprint": fingerprints[problem["id"]]} for problem in self.problems]
            problems = self.record = write_record(self.shard, self.cache_dir, self.total, failed)
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


def face_cache_dir(data_dir: Path | str, img_interval_ms: int, face_size: int = FACE_SIZE) -> Path:
    """``cache/i<ms>`` for the paper's 48 px crops (the name every existing cache has), else ``cache/i<ms>-f<size>``."""
    suffix = "" if face_size == FACE_SIZE else f"-f{face_size}"
    return Path(data_dir) / "cache" / f"i{img_interval_ms}{suffix}"


def cache_path(data_dir: Path | str, img_interval_ms: int, item_id: str, face_size: int = FACE_SIZE) -> Path:
    return face_cache_dir(data_dir, img_interval_ms, face_size) / f"{safe_name(item_id)}.npz"


def source_key(row: dict) -> str:
    """What the cache file of ``row`` was built from (the clip checksums, when the manifest has them)."""
    return json.dumps(row.get("sha256"), sort_keys=True)


def preprocess(
    data_dir: Path | str,
    img_interval_ms: int = 500,
    jobs: int = 1,
    device: str = "cpu",
    progress: bool = True,
    face_size: int = FACE_SIZE,
    shard: Shard | None = None,
    merge: bool = False,
) -> CacheSummary:
    """Build the missing cache files of ``data_dir``'s manifest (of one ``shard``, or none: ``merge``);
    see the module docstring."""
    data_dir = Path(data_dir)
    rows = shard_rows(load_manifest(data_dir), shard)
    summary = CacheSummary(face_cache_dir(data_dir, img_interval_ms, face_size), total=len(rows), shard=shard)
    paths = {row["id"]: cache_path(data_dir, img_interval_ms, row["id"], face_size) for row in rows}
    todo = [row for row in rows if not is_valid_cache(paths[row["id"]], source_key(row))]
    summary.reused = len(rows) - len(todo)
    started = time.perf_counter()
    if merge:
        summary.problems = merged_problems(todo, summary.cache_dir, source_key)
    else:
        with tqdm(total=len(todo), desc=f"preprocess {data_dir.name}", disable=not progress) as bar:
            for row, problem in _build_all(todo, paths, img_interval_ms, jobs, device, face_size):
                if problem is None:
                    summary.built += 1
                else:
                    logger.warning("skipping %s: %s", row["id"], problem["error"])
                    summary.problems.append(problem)
                bar.update()
    return summary.finish(started, "preprocess", {row["id"]: source_key(row) for row in todo})


def shard_rows(rows: list[dict], shard: Shard | None) -> list[dict]:
    """The manifest rows of ``shard`` (by id), or all of them."""
    return rows if shard is None else [row for row in rows if shard.owns(row["id"])]


def merged_problems(todo: list[dict], folder: Path, fingerprint: Callable[[dict], str]) -> list[dict]:
    """The problems the shard records in ``folder`` hold for the rows no shard built (ShardsIncomplete
    names those in no record)."""
    found = merge_failures(((row["id"], fingerprint(row)) for row in todo), folder, str(folder))
    return [found[row["id"]] for row in todo]


@dataclass(frozen=True)
class CacheTask:
    """One shard of a cache build, as an executor sends it to a worker: ``build(data_dir, shard=shard, **options)``."""

    build: Callable[..., CacheSummary]
    data_dir: Path
    options: dict
    shard: Shard


def run_cache_task(task: CacheTask) -> CacheSummary:
    return task.build(task.data_dir, shard=task.shard, **task.options)


def build_sharded(
    build: Callable[..., CacheSummary], data_dir: Path | str, spec: ExecutorSpec, count: int, **options
) -> CacheSummary:
    """``build`` (:func:`preprocess`, :func:`~e2e.data.feature_cache.extract_features`) as ``count`` shard
    tasks through the executor of ``spec``, then merged here; the summary counts what the shards built. A ``jobs``
    option becomes 1 per local pool task and ``--cpus-per-task`` per cluster task. Raises ShardsFailed naming
    the failed shards after all ended."""
    task_options = {**options, "progress": False}
    if "jobs" in options:
        task_options["jobs"] = 1 if spec.kind == "local" else spec.resources.cpus
    tasks = [CacheTask(build, Path(data_dir).absolute(), task_options, shard) for shard in all_shards(count)]
    started = time.perf_counter()
    shards = run_shards(spec, run_cache_task, tasks, [f"{build.__name__} shard {task.shard}" for task in tasks])
    merged = build(data_dir, merge=True, **options)
    merged.built = sum(summary.built for summary in shards)
    merged.reused -= merged.built  # the merge finds the files the shards built
    merged.seconds = time.perf_counter() - started
    return merged


def is_valid_cache(path: Path, source: str, keys: tuple[str, ...] = CACHE_KEYS) -> bool:
    """A complete cache file (holding ``keys``) built from ``source``; reads only the archive's directory
    and ``source``."""
    try:
        with np.load(path) as archive:
            return set(keys) <= set(archive.files) and str(archive["source"]) == source
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def _build_all(rows: list[dict], paths: dict[str, Path], img_interval_ms: int, jobs: int, device: str, face_size: int):
    """Yield (row, problem or None) for each row, in completion order."""
    if jobs <= 1 or len(rows) <= 1:
        cropper = FaceCropper(device, face_size=face_size)
        for row in rows:
            yield row, build_item(row, paths[row["id"]], img_interval_ms, cropper)
        return
    with worker_pool(min(jobs, len(rows)), _init_worker, (device, face_size)) as pool:
        futures = {pool.submit(_pool_task, row, paths[row["id"]], img_interval_ms): row for row in rows}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _init_worker(device: str, face_size: int) -> None:
    global _worker_cropper
    torch.set_num_threads(1)
    _worker_cropper = FaceCropper(device, face_size=face_size)


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
    write_npz(
        path,
        faces=faces,
        face_found=found,
        mel=mel,
        rms=rms,
        num_samples=np.int64(len(samples)),
        source=np.array(source_key(row)),
    )
    return None


def write_npz(path: Path, **arrays) -> None:
    """``np.savez`` to ``path`` atomically, byte for byte reproducible: ``np.savez`` stamps each member with
    the time of writing, here every member gets the same fixed time, so equal arrays give equal files
    (a sharded build equals a plain one, on any machine)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=NPZ_TIME)
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


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
