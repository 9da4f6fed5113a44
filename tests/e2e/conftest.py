"""Fixtures the executor tests of several modules share, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.cli import main
from tests.helpers.executor_runs import KILLED_RUN_EPOCHS, SIZES, benchmark_args, first_utterances


@pytest.fixture(scope="session")
def tiny(demo_iemocap_cache, tmp_path_factory) -> Path:
    """A few demo IEMOCAP utterances with their face/mel cache."""
    return first_utterances(demo_iemocap_cache, tmp_path_factory.mktemp("tiny"), SIZES)


@pytest.fixture(scope="session")
def local_reference(tiny, tmp_path_factory) -> Path:
    """The benchmark of two short fe2e runs (KILLED_RUN_EPOCHS) on this machine, in this process, one torch thread
    (what a cluster task of one CPU uses), which every executor must reproduce."""
    import torch

    out, threads = tmp_path_factory.mktemp("local"), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(benchmark_args(tiny, out, "0,1", KILLED_RUN_EPOCHS)) == 0
    finally:
        torch.set_num_threads(threads)
    return out
