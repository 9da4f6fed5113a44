"""Faces/s of ``e2e preprocess`` on the demo corpus: today's detection settings vs the reference ones.

``reference`` is :data:`e2e.data.faces.REFERENCE_DETECTION` (MTCNN on full-resolution frames, faces from
20 px: the settings of the first caches); ``fast`` is :class:`~e2e.data.faces.FaceCropper`'s default. For
each mode, :func:`e2e.data.preprocess.preprocess` (face crops and mel spectrograms, one process) builds the
caches of a fresh copy of each corpus folder; ``--repeats`` interleaved runs are timed and the median kept.
Rate = sampled frames (one crop each) / seconds.

Agreement: the largest-face boxes of both modes on every sampled frame of the corpora: ``iou_ge_0.9``
is the fraction of the frames where both found a face whose boxes have IoU >= 0.9 (of the frames where
the reference found one), ``flags_equal`` the fraction of all frames where both agree on face / no face.

Prints one JSON object; targets: speedup >= 2.5, iou_ge_0.9 >= 0.98, flags_equal >= 0.99.
    python benchmarks/preprocess_speed.py DEMO_DIR [--corpora iemocap mosei] [--repeats 1]
(DEMO_DIR as written by ``data-reorg demo DEMO_DIR``.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/...` from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

import e2e  # noqa: E402,F401  (the compat shim, before torchvision / facenet-pytorch)
from data_reorg.manifest import load_manifest  # noqa: E402
from e2e.data import preprocess as preprocess_module  # noqa: E402
from e2e.data.faces import REFERENCE_DETECTION, FaceCropper, read_frames, sample_frame_indices  # noqa: E402

MODES = {"reference": REFERENCE_DETECTION, "fast": {}}


def corpus_copy(data_dir: Path, work: Path) -> Path:
    """A folder with ``data_dir``'s manifest and links to its clips, without caches."""
    work.mkdir(parents=True)
    for entry in data_dir.iterdir():
        if entry.name != "cache":
            (work / entry.name).symlink_to(entry.resolve())
    return work


def timed_preprocess(data_dirs: list[Path], mode: dict, interval: int, work: Path) -> float:
    """Seconds of :func:`preprocess` over copies of ``data_dirs`` with FaceCropper(**mode)."""
    copies = [corpus_copy(data_dir, work / data_dir.name) for data_dir in data_dirs]
    with mock.patch.object(preprocess_module, "FaceCropper", partial(FaceCropper, **mode)):
        started = time.perf_counter()
        for copy in copies:
            summary = preprocess_module.preprocess(copy, img_interval_ms=interval, progress=False)
            if summary.problems:
                raise SystemExit(f"{copy}: {len(summary.problems)} items failed: {summary.problems[:1]}")
        return time.perf_counter() - started


def sampled_frames(data_dirs: list[Path], interval: int) -> list[np.ndarray]:
    frames = []
    for data_dir in data_dirs:
        for row in load_manifest(data_dir):
            frames += read_frames(row["video"], sample_frame_indices(row["num_frames"], row["fps"], interval))
    return frames


def all_boxes(cropper: FaceCropper, frames: list[np.ndarray]) -> list[np.ndarray | None]:
    boxes = []
    for start in range(0, len(frames), cropper.batch_size):
        batch = frames[start : start + cropper.batch_size]
        if len({frame.shape for frame in batch}) == 1:
            boxes += cropper.largest_boxes(batch)
        else:
            boxes += [box for frame in batch for box in cropper.largest_boxes([frame])]
    return boxes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def agreement(reference: list, fast: list) -> dict:
    flags = [(r is not None) == (f is not None) for r, f in zip(reference, fast)]
    ious = [iou(r, f) if f is not None else 0.0 for r, f in zip(reference, fast) if r is not None]
    return {
        "frames": len(reference),
        "faces_reference": sum(r is not None for r in reference),
        "faces_fast": sum(f is not None for f in fast),
        "flags_equal": round(float(np.mean(flags)), 4),
        "iou_ge_0.9": round(float(np.mean([value >= 0.9 for value in ious])), 4),
        "iou_median": round(float(np.median(ious)), 4),
        "iou_min": round(float(np.min(ious)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--corpora", nargs="+", default=["iemocap", "mosei"])
    parser.add_argument("--img-interval-ms", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data_dirs = [args.demo_dir / name for name in args.corpora]
    frames = sampled_frames(data_dirs, args.img_interval_ms)
    seconds: dict[str, list[float]] = {name: [] for name in MODES}
    with tempfile.TemporaryDirectory(prefix="preprocess_speed_") as work:
        for repeat in range(args.repeats):
            for name, mode in MODES.items():
                run_dir = Path(work) / f"{name}{repeat}"
                seconds[name].append(timed_preprocess(data_dirs, mode, args.img_interval_ms, run_dir))
    rates = {name: len(frames) / statistics.median(values) for name, values in seconds.items()}
    boxes = {name: all_boxes(FaceCropper("cpu", **mode), frames) for name, mode in MODES.items()}
    print(
        json.dumps(
            {
                "faces_per_s": {name: round(rate, 2) for name, rate in rates.items()},
                "speedup": round(rates["fast"] / rates["reference"], 3),
                "seconds": {name: [round(value, 2) for value in values] for name, values in seconds.items()},
                "settings": {"reference": REFERENCE_DETECTION, "fast": fast_settings()},
                "agreement": agreement(boxes["reference"], boxes["fast"]),
                "torch_threads": torch.get_num_threads(),
                "target": "speedup >= 2.5, iou_ge_0.9 >= 0.98, flags_equal >= 0.99",
            }
        )
    )


def fast_settings() -> dict:
    cropper = FaceCropper("cpu")
    return {"min_face_fraction": cropper.min_face_fraction}


if __name__ == "__main__":
    main()
