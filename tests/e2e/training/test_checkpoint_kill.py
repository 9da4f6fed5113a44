"""A training run SIGKILLed at every file write (during it, just before its rename, just after), then
resumed, ends exactly like an uninterrupted run, with a consistent best.pt / last.pt pair and no
temporaries left.

Every run happens in a forked child with one torch thread (the uninterrupted reference too), so a kill
is a real SIGKILL: no ``finally`` block or atomic_path clean-up runs in the killed process. The
children score epochs with a cheap stand-in for the sklearn metrics, which would otherwise take nearly
all of the time and have nothing to do with checkpoints.
"""

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils.tensorboard  # noqa: F401  (imported once here, not in every child)

from e2e.training.checkpoint import load_checkpoint
from e2e.training.metrics import Scoring
from e2e.training.trainer import train
from tests.helpers import train as helpers

CONFIG = {"epochs": 3, "scheduler": "cosine", "grad_clip": 1.0}
MODES = ("during", "before", "after")  # partial temporary; complete but not renamed; renamed


def run_child(
    run_dir: Path, resume: bool = False, kill_at: tuple[int, str] | None = None, writes_log: Path | None = None
) -> int:
    """Exit code of ``train`` in a forked child; ``kill_at=(k, mode)`` SIGKILLs it at its k-th rename,
    ``writes_log`` gets the name of every renamed file."""

    def target() -> None:
        torch.set_num_threads(1)
        Scoring.thresholds = lambda self, logits, labels: [0.5] * logits.shape[1]
        Scoring.metrics = quick_metrics
        os.replace = _instrumented(os.replace, kill_at, writes_log)
        train(helpers.make_config(**CONFIG), run_dir, resume=resume, datasets=helpers.make_bundle())

    process = multiprocessing.get_context("fork").Process(target=target)
    process.start()
    process.join(300)
    return process.exitcode


def quick_metrics(scoring, logits: np.ndarray, labels: np.ndarray, thresholds) -> dict:
    """Binary accuracy and mean F1 over classes, in numpy."""
    predicted, truth = 1 / (1 + np.exp(-logits)) >= np.asarray(thresholds), labels > 0.5
    hits = (predicted & truth).sum(0)
    f1 = 2 * hits / np.maximum(predicted.sum(0) + truth.sum(0), 1)
    return {"acc": float((predicted == truth).mean()), "f1": float(f1.mean()), "n": len(labels)}


def _instrumented(replace, kill_at, writes_log):
    calls = iter(range(10**6))

    def instrumented(src, dst):
        call = next(calls)
        if writes_log is not None:
            with open(writes_log, "a", encoding="utf-8") as log:
                log.write(Path(dst).name + "\n")
        kill_here = kill_at is not None and kill_at[0] == call
        if kill_here and kill_at[1] == "during":
            os.truncate(src, os.path.getsize(src) // 2)
        if kill_here and kill_at[1] in ("during", "before"):
            os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
        if kill_here:
            os.kill(os.getpid(), signal.SIGKILL)

    return instrumented


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    writes_log = run_dir.parent / "writes.txt"
    assert run_child(run_dir, writes_log=writes_log) == 0
    return run_dir, writes_log.read_text(encoding="utf-8").split()


@pytest.mark.slow
def test_kill_at_every_write_then_resume_matches_the_uninterrupted_run(reference, tmp_path):
    reference_dir, writes = reference
    assert writes[0] == "config.yaml" and writes[-1] == "results.json"
    assert writes.count("last.pt") == 3 and 1 <= writes.count("best.pt") <= 3
    for call, name in enumerate(writes):
        for mode in MODES:
            run_dir = tmp_path / f"{call}-{name}-{mode}"
            assert run_child(run_dir, kill_at=(call, mode)) == -signal.SIGKILL
            resume = (run_dir / "checkpoints" / "last.pt").exists()
            assert run_child(run_dir, resume=resume) == 0, (call, name, mode)
            assert_same_run(run_dir, reference_dir)


def assert_same_run(run_dir: Path, reference_dir: Path) -> None:
    assert (run_dir / "results.json").read_text() == (reference_dir / "results.json").read_text()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not [p.name for p in run_dir.iterdir() if ".tmp" in p.name]
    helpers.assert_same_state(run_dir, reference_dir)
    best, reference_best = (load_checkpoint(d / "checkpoints" / "best.pt") for d in (run_dir, reference_dir))
    assert best["epoch"] == reference_best["epoch"] == best["progress"]["best_epoch"]
    assert best["thresholds"] == reference_best["thresholds"]
    helpers.assert_same_model(best, reference_best)
