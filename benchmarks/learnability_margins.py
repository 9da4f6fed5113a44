"""Learnability margins on the demo corpus: each run's 6-way test accuracy over the majority baseline.

The learnability tests (tests/test_e2e_demo.py) train FE2E on one modality at a time (``t``, ``a``,
``v``), on all three (``tav``) and MESM, on the demo IEMOCAP, and require the test 6-way accuracy to
beat the majority class by MARGIN. A margin that holds on one CPU only is no proof: other float kernels
give other training trajectories. This script re-checks the margins over seeds and torch thread counts
(a stand-in for another CPU): every (run, seed, threads) cell trains in its own process, started with
``OMP_NUM_THREADS`` and ``torch.set_num_threads`` set to that count, through ``e2e train`` with the
test's config (``configs/demo/fe2e.yaml`` with ``model.modalities``, or ``configs/demo/mesm.yaml``) and
``train.seed``.

The demo corpus is built when ``--data DIR`` has none (``data-reorg demo DIR``) and its face/mel cache is
completed (``e2e.data.preprocess``). Finished cells (``OUT/<run>_s<seed>_t<threads>/results.json``) are reused,
so an interrupted check resumes.

Prints one JSON object: ``majority`` (test accuracy of the most frequent test class, as the tests
compute it), ``margin_required``, ``cells`` (run, seed, threads, accuracy, margin = accuracy - majority,
seconds) and ``worst`` (per run the smallest margin over its cells).
    python benchmarks/learnability_margins.py [--data build/demo] [--runs a,v,t,tav,mesm]
        [--seeds 0,1,2] [--threads 1,2] [--out build/learnability] [--parallel 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/...` from a checkout

from demo_corpus import ensure_demo  # noqa: E402  (beside this script)

RUNS = {
    "t": ("configs/demo/fe2e.yaml", "t"),
    "a": ("configs/demo/fe2e.yaml", "a"),
    "v": ("configs/demo/fe2e.yaml", "v"),
    "tav": ("configs/demo/fe2e.yaml", "tav"),
    "mesm": ("configs/demo/mesm.yaml", None),
}
MARGIN = 0.15  # tests/test_e2e_demo.py

# One cell, in a fresh process: threads first, then the trainer through the CLI.
CELL = """
import sys
import torch
torch.set_num_threads(int(sys.argv[1]))
from e2e.cli import main
sys.exit(main(sys.argv[2:]))
"""


def majority_accuracy(corpus: Path) -> float:
    """Share of the most frequent class among the test labels (the tests' baseline)."""
    from data_reorg.io import read_jsonl

    labels = [row["label"] for row in read_jsonl(corpus / "manifest.jsonl") if row["split"] == "test"]
    return Counter(labels).most_common(1)[0][1] / len(labels)


def run_cell(corpus: Path, run: str, seed: int, threads: int, out: Path) -> dict:
    """Train one cell (or reuse its finished results) and return its row."""
    config, modalities = RUNS[run]
    folder = out / f"{run}_s{seed}_t{threads}"
    results = folder / "results.json"
    seconds = None
    if not results.is_file():
        args = [
            "train",
            "--config",
            str(REPO / config),
            "--set",
            f"data.data_dir={corpus}",
            "--set",
            "train.progress=false",
            "--set",
            f"train.seed={seed}",
            "--out",
            str(folder),
        ]
        if modalities:
            args += ["--set", f"model.modalities={modalities}"]
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
        }
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CELL, str(threads), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seconds = round(time.perf_counter() - began, 1)
        if done.returncode != 0 or not results.is_file():
            raise SystemExit(f"{folder.name}: e2e train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    accuracy = json.loads(results.read_text(encoding="utf-8"))["test"]["multiclass_acc"]
    return {"run": run, "seed": seed, "threads": threads, "accuracy": round(accuracy, 4), "seconds": seconds}


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / "build" / "demo",
        help="demo corpus root (holds iemocap/); built when missing (default: build/demo)",
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    parser.add_argument("--threads", type=_ints, default=[1, 2], help="torch CPU thread counts to compare")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "learnability", help="run folders")
    parser.add_argument("--jobs", type=int, default=2, help="preprocess worker processes, if the cache is built")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="cells trained at once (their results do not depend on it; their times do)",
    )
    args = parser.parse_args()
    runs = [run for run in args.runs.split(",") if run]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    corpus, problems = ensure_demo(args.data.resolve(), args.jobs)
    if problems:
        raise SystemExit(f"{problems} utterances could not be preprocessed")
    majority = majority_accuracy(corpus)
    plan = [(run, seed, threads) for run in runs for seed in args.seeds for threads in args.threads]

    def cell(key: tuple[str, int, int]) -> dict:
        row = run_cell(corpus, *key, args.out.resolve())
        row["margin"] = round(row["accuracy"] - majority, 4)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        cells = list(pool.map(cell, plan))
    worst = {run: min(cell["margin"] for cell in cells if cell["run"] == run) for run in runs}
    print(
        json.dumps(
            {
                "data": str(corpus),
                "majority": round(majority, 4),
                "margin_required": MARGIN,
                "cells": cells,
                "worst": worst,
                "all_pass": all(margin >= MARGIN for margin in worst.values()),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
