"""``e2e predict``: per-emotion probabilities of a trained end-to-end model for a new video."""

from __future__ import annotations

import argparse
from pathlib import Path

from e2e.cli.options import add_device


def register(commands) -> None:
    predict = commands.add_parser("predict", help="per-emotion probabilities for a new video")
    predict.add_argument("--ckpt", type=Path, required=True)
    predict.add_argument("video", type=Path)
    text = predict.add_mutually_exclusive_group(required=True)
    text.add_argument("--text")
    text.add_argument("--transcript", type=Path, help="file holding the transcript")
    predict.add_argument("--start", type=float, default=None, help="seconds into VIDEO")
    predict.add_argument("--end", type=float, default=None, help="seconds into VIDEO")
    predict.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="audio file on the video's timeline (default: the video's own audio track; for a "
        "clip DATA/video/<id>.mp4 of a reorganized folder without one, DATA/audio/<id>.wav)",
    )
    add_device(predict, "model and MTCNN device")
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from e2e.training.predict import predict_video

    text = args.text if args.text is not None else args.transcript.read_text(encoding="utf-8")
    prediction = predict_video(
        args.ckpt, args.video, text, start=args.start, end=args.end, device=args.device, audio=args.audio
    )
    print(prediction.format())
    return 0
