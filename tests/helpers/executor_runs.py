"""What the job-runner tests (sweeps; local, Ray, SLURM executors) share: a tiny corpus of demo clips, the
tiny demo benchmark they dispatch, its results, and the wait for a run's first checkpoint before its
worker is killed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from data_reorg.io import read_jsonl

REPO = Path(__file__).resolve().parents[2]
SIZES = {"train": 12, "valid": 6, "test": 6}  # utterances of the tiny corpus per split
# epochs of the runs whose worker the kill tests kill once the first is checkpointed: the later ones give the
# kill (scancel through slurmctld, Ray's worker pid) seconds to land before the run could finish
KILLED_RUN_EPOCHS = 4


def overrides(epochs: int = 1) -> list[str]:
    return [f"train.epochs={epochs}", "train.progress=false", "data.max_frames=2", "data.max_chunks=4"]


def benchmark_args(corpus: Path, out: Path, seeds: str, epochs: int, *extra: str) -> list[str]:
    """``e2e benchmark`` of short fe2e runs on ``corpus``, one per seed."""
    return [
        *("benchmark", "--data-dir", str(corpus), "--models", "fe2e", "--seeds", seeds),
        *("--config-dir", "configs/demo", "--out", str(out)),
        *(part for override in overrides(epochs) for part in ("--set", override)),
        *extra,
    ]


def run_results(out: Path, run: str) -> dict:
    """What must not depend on where a run trained: its metrics, thresholds and best epoch."""
    results = json.loads((out / run / "results.json").read_text(encoding="utf-8"))
    return {key: results[key] for key in ("test", "valid", "thresholds", "best_epoch") if key in results}


def state_after_first_epoch(run_dir: Path, driver: subprocess.Popen, timeout: float = 240) -> dict:
    """The ``state.json`` of the job training ``run_dir`` (engine, pid, job id) once ``last.pt`` exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        state = run_dir / "state.json"
        if (run_dir / "checkpoints" / "last.pt").is_file() and state.is_file():
            return json.loads(state.read_text(encoding="utf-8"))
        time.sleep(0.05)
    raise AssertionError(f"{run_dir} got no checkpoints/last.pt (driver exit status {driver.poll()})")


def job_starts(run_dir: Path) -> list[str]:
    """The start lines of every try of a job, from its ``job.log``."""
    return [line for line in (run_dir / "job.log").read_text(encoding="utf-8").splitlines() if " start " in line]


def first_utterances(corpus: Path, root: Path, sizes: dict[str, int]) -> Path:
    """``root/<corpus name>``: the first ``sizes[split]`` utterances per split of a preprocessed corpus
    (media and cache linked, not copied)."""
    tiny = root / corpus.name
    tiny.mkdir(parents=True)
    for name in ("video", "audio", "cache"):
        (tiny / name).symlink_to(corpus / name)
    rows = read_jsonl(corpus / "manifest.jsonl")
    kept = [row for split, size in sizes.items() for row in [r for r in rows if r["split"] == split][:size]]
    (tiny / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
    return tiny
