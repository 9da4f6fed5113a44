"""Reorg wall time on the demo corpora divided by one plain ffmpeg decode of the same source videos.

Prints one JSON object; target: ratio <= 2.0.
    python benchmarks/reorg_speed.py [--work DIR] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import ffmpeg
import imageio_ffmpeg

from data_reorg import demo, iemocap, mosei
from data_reorg.pipeline import RunOptions, reorganize
from data_reorg.splits import SplitSpec


def plain_decode_seconds(videos: list[Path]) -> float:
    """Decode every video once with ffmpeg to the null muxer (ffmpeg's own threading)."""
    executable = imageio_ffmpeg.get_ffmpeg_exe()
    started = time.perf_counter()
    for video in videos:
        ffmpeg.input(str(video)).output("-", format="null").run(cmd=executable, quiet=True)
    return time.perf_counter() - started


def reorg_seconds(corpora: demo.DemoCorpora, out: Path, jobs: int) -> float:
    started = time.perf_counter()
    for name, parsed in (
        ("iemocap", iemocap.parse_release(corpora.iemocap_src)),
        ("mosei", mosei.parse_release(corpora.mosei_src)),
    ):
        reorganize(parsed, SplitSpec("random"), RunOptions(out / name, jobs=jobs, progress=False))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=None, help="folder for the demo corpora (kept)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reorg_speed_"))
    corpora = demo.build_demo_corpora(work)
    videos = sorted(corpora.iemocap_src.glob("Session*/dialog/avi/DivX/*.avi"))
    videos += sorted(corpora.mosei_src.glob("Raw/Videos/Full/Combined/*.mp4"))
    decode = plain_decode_seconds(videos)
    out = work / "bench_out"
    shutil.rmtree(out, ignore_errors=True)
    reorg = reorg_seconds(corpora, out, args.jobs)
    print(
        json.dumps(
            {
                "reorg_seconds": round(reorg, 3),
                "plain_decode_seconds": round(decode, 3),
                "ratio": round(reorg / decode, 3),
                "videos": len(videos),
                "jobs": args.jobs,
                "target": "ratio <= 2.0",
            }
        )
    )


if __name__ == "__main__":
    main()
