"""Face crops per second of batched MTCNN vs one frame per call (``e2e.data.faces.FaceCropper.crops``).

Frames imitate one speaker's half of an IEMOCAP frame: 480 rows x 360 columns, a photograph scaled to
about ``--subject-width`` px wide and pasted centred on a noisy grey background, with a small random
shift (``--jitter`` px), scale (+-5 %) and brightness (+-10 %) per frame. Faces are the bundled
sample photos skimage ``astronaut()`` and ``camera()`` and matplotlib's ``grace_hopper.jpg``;
``--no-face-fraction`` of the frames show face-less photos instead (skimage ``coffee()``, ``rocket()``,
``chelsea()``, ``immunohistochemistry()``). Frames are shuffled, so batches mix frames with and without
faces, as real utterances do (``crops`` must handle such batches).

Batched: ``crops(frames)`` on all ``--frames`` frames (the cropper detects ``--batch-size`` at a time).
Single: ``crops([frame])`` for every frame. After one warm-up pass of each, ``--repeats`` interleaved
passes are timed and the median kept. Rate = frames / seconds (every frame yields one 48x48 crop:
the largest face, or the centre-crop fallback); ``found`` counts the frames where MTCNN found a face
(it must be equal in both modes; ``crops_equal`` says whether the crops are identical).

On CPU, MTCNN is compute-bound (P-net over the image pyramid, R-net on every candidate box), so
batching saves only per-call overhead; large batches even slow P-net down (its activations for a
whole batch no longer fit in the caches). On a 2-core test machine ``--batch-size 4`` was the fastest.

Prints one JSON object; target: ratio (= batched / single) >= 1.4.
    python benchmarks/mtcnn_batch.py [--frames 64] [--batch-size 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/...` from a checkout

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import e2e  # noqa: E402,F401  (the compat shim, before torchvision / facenet-pytorch)
from e2e.data.faces import FaceCropper  # noqa: E402

HALF_H, HALF_W = 480, 360  # one speaker's half of an IEMOCAP frame


def source_photos() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(photos with one face, photos without a face), RGB uint8; all ship with skimage / matplotlib."""
    import skimage.data
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = np.asarray(Image.open(handle).convert("RGB"))
    faces = [skimage.data.astronaut(), np.repeat(skimage.data.camera()[..., None], 3, axis=2), hopper]
    others = [skimage.data.coffee(), skimage.data.rocket(), skimage.data.chelsea(), skimage.data.immunohistochemistry()]
    return faces, others


def compose(photo: np.ndarray, rng: np.random.Generator, subject_width: int, jitter: int) -> np.ndarray:
    """``photo`` scaled to about ``subject_width`` px wide, pasted centred (+- jitter) on a 480x360 frame."""
    frame = np.clip(rng.normal(110, 12, (HALF_H, HALF_W, 3)), 0, 255).astype(np.uint8)
    scale = subject_width / photo.shape[1] * rng.uniform(0.95, 1.05)
    image = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    image = np.clip(image.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
    top = (HALF_H - image.shape[0]) // 2 + int(rng.integers(-jitter, jitter + 1))
    left = (HALF_W - image.shape[1]) // 2 + int(rng.integers(-jitter, jitter + 1))
    # paste the part of the image that falls inside the frame
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + image.shape[0], HALF_H), min(left + image.shape[1], HALF_W)
    frame[y0:y1, x0:x1] = image[y0 - top : y1 - top, x0 - left : x1 - left]
    return frame


def make_frames(
    count: int, no_face_fraction: float, subject_width: int, jitter: int, seed: int = 0
) -> tuple[list[np.ndarray], int]:
    """``count`` shuffled frames and how many of them were composed from a face photo."""
    rng = np.random.default_rng(seed)
    faces, others = source_photos()
    without = round(count * no_face_fraction)
    photos = [faces[i % len(faces)] for i in range(count - without)] + [others[i % len(others)] for i in range(without)]
    order = rng.permutation(count)
    return [compose(photos[i], rng, subject_width, jitter) for i in order], count - without


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="FaceCropper batch size")
    parser.add_argument("--no-face-fraction", type=float, default=0.25)
    parser.add_argument("--subject-width", type=int, default=300, help="width of the pasted photo, px")
    parser.add_argument("--jitter", type=int, default=12, help="max shift from the centre, px")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="MTCNN device (cpu, cuda, cuda:N)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    frames, face_frames = make_frames(args.frames, args.no_face_fraction, args.subject_width, args.jitter)
    cropper = FaceCropper(args.device, batch_size=args.batch_size)

    def sync() -> None:
        if torch.device(args.device).type == "cuda":
            torch.cuda.synchronize(args.device)

    def batched():
        return cropper.crops(frames)

    def single():
        results = [cropper.crops([frame]) for frame in frames]
        return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])

    runs = {"batched": batched, "single": single}
    outputs = {name: run() for name, run in runs.items()}  # warm-up, and the results compared below
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(args.repeats):
        for name in ("batched", "single") if repeat % 2 == 0 else ("single", "batched"):
            sync()
            started = time.perf_counter()
            runs[name]()
            sync()
            seconds[name].append(time.perf_counter() - started)

    batched_rate, single_rate = (args.frames / statistics.median(seconds[name]) for name in ("batched", "single"))
    (batched_crops, batched_found), (single_crops, single_found) = outputs["batched"], outputs["single"]
    print(
        json.dumps(
            {
                "batched_faces_per_s": round(batched_rate, 2),
                "single_faces_per_s": round(single_rate, 2),
                "ratio": round(batched_rate / single_rate, 3),
                "frames": args.frames,
                "batch_size": args.batch_size,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "face_frames": face_frames,
                "found_batched": int(batched_found.sum()),
                "found_single": int(single_found.sum()),
                "crops_equal": bool(
                    np.array_equal(batched_crops, single_crops) and np.array_equal(batched_found, single_found)
                ),
                "batched_s_all": [round(s, 3) for s in seconds["batched"]],
                "single_s_all": [round(s, 3) for s in seconds["single"]],
                "target": "ratio >= 1.4",
                "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
