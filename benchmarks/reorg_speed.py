"""Reorg wall time on the demo corpora divided by one plain ffmpeg decode of the same source videos.

Wall seconds are what the target is about; CPU seconds (this process and its children: ffmpeg, pool
workers) are printed beside them, as their ratio barely moves when other jobs share the machine.

Prints one JSON object; target: ratio <= 1.3.
    python benchmarks/reorg_speed.py [--work DIR] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ffmpeg
import imageio_ffmpeg

from data_reorg import iemocap, mosei
from data_reorg.pipeline import RunOptions, reorganize
from data_reorg.splits import SplitSpec

if TYPE_CHECKING:
    from data_reorg.demo import DemoCorpora


def cpu_seconds() -> float:
    """User + system seconds of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_decode_seconds(videos: list[Path]) -> tuple[float, float]:
    """(wall, CPU) seconds to decode every video once with ffmpeg to the null muxer (ffmpeg's own threading)."""
    executable = imageio_ffmpeg.get_ffmpeg_exe()
    started, cpu = time.perf_counter(), cpu_seconds()
    for video in videos:
        ffmpeg.input(str(video)).output("-", format="null").run(cmd=executable, quiet=True)
    return time.perf_counter() - started, cpu_seconds() - cpu


def reorg_seconds(corpora: DemoCorpora, out: Path, jobs: int) -> tuple[float, float]:
    """(wall, CPU) seconds of both demo reorganizations."""
    started, cpu = time.perf_counter(), cpu_seconds()
    for name, parsed in (
        ("iemocap", iemocap.parse_release(corpora.iemocap_src)),
        ("mosei", mosei.parse_release(corpora.mosei_src)),
    ):
        reorganize(parsed, SplitSpec("random"), RunOptions(out / name, jobs=jobs, progress=False))
    return time.perf_counter() - started, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=None, help="folder for the demo corpora (kept)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    # Imported here, not at the top: spawned pool workers re-import this script as their __main__, and the
    # demo builder's imports (1.5 CPU-s) would be charged to every worker's start-up.
    from data_reorg import demo

    work = args.work or Path(tempfile.mkdtemp(prefix="reorg_speed_"))
    corpora = demo.build_demo_corpora(work)
    videos = sorted(corpora.iemocap_src.glob("Session*/dialog/avi/DivX/*.avi"))
    videos += sorted(corpora.mosei_src.glob("Raw/Videos/Full/Combined/*.mp4"))
    decode, decode_cpu = plain_decode_seconds(videos)
    out = work / "bench_out"
    shutil.rmtree(out, ignore_errors=True)
    reorg, reorg_cpu = reorg_seconds(corpora, out, args.jobs)
    print(
        json.dumps(
            {
                "reorg_seconds": round(reorg, 3),
                "plain_decode_seconds": round(decode, 3),
                "ratio": round(reorg / decode, 3),
                "reorg_cpu_seconds": round(reorg_cpu, 3),
                "plain_decode_cpu_seconds": round(decode_cpu, 3),
                "cpu_ratio": round(reorg_cpu / decode_cpu, 3),
                "videos": len(videos),
                "jobs": args.jobs,
                "target": "ratio <= 1.3",
            }
        )
    )


if __name__ == "__main__":
    main()
