"""``e2e sweep missing`` per checkpoint: reproducible rows, and the same drops for runs evaluated in
batches of different sizes (tiny in-memory runs; the full sweep is in test_benchmark.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import e2e  # noqa: F401  (compat shim first)
from e2e.config import UsageError
from e2e.experiments import missing
from e2e.experiments.benchmark import BenchmarkRequest
from e2e.experiments.jobs import metric_values
from e2e.training.inference import checkpoint_evaluator
from e2e.training.trainer import train
from tests.helpers import train as helpers

RATES = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[int, Path]:
    """best.pt of a tiny run per evaluation batch size (the runs' data.batch_size)."""
    result = {}
    for batch_size in (3, 8):
        config = helpers.make_config(epochs=1)
        config.data.batch_size = batch_size
        run_dir = tmp_path_factory.mktemp(f"batch{batch_size}")
        train(config, run_dir, datasets=helpers.make_bundle())
        result[batch_size] = run_dir / "checkpoints" / "best.pt"
    return result


@pytest.fixture
def in_memory(monkeypatch):
    """Evaluate on the tiny runs' in-memory data; returns what each transform left of every utterance,
    per (mode, rate, batch size)."""
    monkeypatch.setattr(
        missing, "checkpoint_evaluator", lambda path: checkpoint_evaluator(path, datasets=helpers.make_bundle())
    )
    seen: dict[tuple, dict[str, tuple]] = {}

    def recording(transform):
        def wrapped(batch, rate, seed):
            out = transform(batch, rate, seed)
            per_id = seen.setdefault((transform.__name__, rate), {})
            faces, audio = out.faces.split(out.face_lengths.tolist()), out.audio.split(out.audio_lengths.tolist())
            for uid, *inputs in zip(out.ids, _rows(out), faces, audio):
                per_id.setdefault(uid, set()).add(tuple(_identity(x) for x in inputs))
            return out

        return wrapped

    monkeypatch.setattr(missing, "drop_elements", recording(missing.drop_elements))
    monkeypatch.setattr(missing, "drop_modalities", recording(missing.drop_modalities))
    return seen


def _rows(batch) -> list[torch.Tensor]:
    return [ids[mask.bool()] for ids, mask in zip(batch.text_input_ids, batch.text_attention_mask)]


def _identity(tensor: torch.Tensor) -> tuple:
    """Shape and exact bytes: equal only for the same elements."""
    return tuple(tensor.shape), tensor.numpy().tobytes()


def test_rows_are_reproducible_and_rate_zero_is_the_plain_test(checkpoints, in_memory):
    first = missing.evaluate_missing(checkpoints[8], RATES)
    assert [(row["mode"], row["rate"]) for row in first] == [(mode, rate) for mode in missing.MODES for rate in RATES]
    assert missing.evaluate_missing(checkpoints[8], RATES) == first
    plain = metric_values(checkpoint_evaluator(checkpoints[8], datasets=helpers.make_bundle())("test"))
    for row in first[:: len(RATES)]:  # rate 0 of each mode
        assert {name: row[name] for name in plain} == pytest.approx(plain, abs=1e-6)


def test_runs_with_other_batch_sizes_see_the_same_drops(checkpoints, in_memory):
    for checkpoint in checkpoints.values():
        missing.evaluate_missing(checkpoint, RATES)
    # every utterance was seen once per run, and both runs left it the same inputs
    assert all(len(variants) == 1 for per_id in in_memory.values() for variants in per_id.values())
    assert len(in_memory) == len(missing.MODES) * len(RATES)
    assert all(len(per_id) == helpers.SIZES["test"] for per_id in in_memory.values())
    zero, full = in_memory[("drop_elements", 0.0)], in_memory[("drop_elements", 1.0)]
    assert zero != full  # the recording can tell drops apart


def test_bad_rates_are_refused_before_any_training(tmp_path):
    request = BenchmarkRequest(tmp_path / "data", ["fe2e"], [0], tmp_path / "configs", tmp_path / "out")
    with pytest.raises(UsageError, match=r"rate must be in \[0, 1\], got 1.5"):
        missing.sweep_missing(request, rates=[0.5, 1.5])
    assert not (tmp_path / "out").exists()


def test_the_drops_follow_the_seed(checkpoints, in_memory):
    missing.evaluate_missing(checkpoints[3], [0.5], modes=["elements"], seed=0)
    missing.evaluate_missing(checkpoints[3], [0.5], modes=["elements"], seed=1)
    assert any(len(variants) == 2 for variants in in_memory[("drop_elements", 0.5)].values())
