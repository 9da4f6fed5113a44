"""Session fixtures: the demo corpora are built, reorganized and preprocessed once per test run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class DemoData:
    root: Path  # data-reorg demo OUT: raw/, iemocap/, mosei/
    raw_iemocap: Path
    raw_mosei: Path
    iemocap: Path  # reorganized (random 60/20/20 split, seed 0)
    mosei: Path
    truth: dict


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> DemoData:
    """``data-reorg demo`` output, exactly as ``make demo`` produces it."""
    from data_reorg.cli import main

    root = tmp_path_factory.mktemp("demo")
    assert main(["demo", str(root), "--no-progress"]) == 0
    raw = root / "raw"
    truth = json.loads((raw / "demo_truth.json").read_text(encoding="utf-8"))
    return DemoData(root, raw / "IEMOCAP_full_release", raw / "CMU_MOSEI", root / "iemocap", root / "mosei", truth)


@pytest.fixture(scope="session")
def demo_iemocap_cache(demo_data) -> Path:
    """The reorganized demo IEMOCAP folder with its face/mel cache built (``e2e preprocess``)."""
    from e2e.data.preprocess import preprocess

    summary = preprocess(demo_data.iemocap, jobs=2, progress=False)
    assert summary.problems == []
    return demo_data.iemocap


@pytest.fixture(scope="session")
def demo_iemocap_features(demo_iemocap_cache) -> Path:
    """The demo IEMOCAP folder with its two-stage feature cache (``e2e features``, as the demo configs set it)."""
    from e2e.data.feature_cache import extract_features

    summary = extract_features(demo_iemocap_cache, "minilm", 500, 32, progress=False)
    assert summary.problems == []
    return demo_iemocap_cache


def demo_benchmark_options(demo_data: DemoData, out: Path) -> list[str]:
    """The demo benchmark's command-line options, as ``make demo`` gives them (``--data``: the old
    spelling of ``--data-dir``, still accepted)."""
    return [
        "--data",
        str(demo_data.iemocap),
        "--models",
        "all",
        "--seeds",
        "0",
        "--config-dir",
        "configs/demo",
        "--knowledge-data",
        str(demo_data.mosei),
        "--set",
        "train.progress=false",
        "--jobs",
        "2",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="session")
def demo_benchmark(demo_iemocap_cache, demo_data, tmp_path_factory) -> Path:
    """``e2e benchmark`` of every model on the demo corpus (``make demo``'s main job), trained once per test
    run: its FE2E and MESM runs (``fe2e-s0``, ``mesm-s0``) are also the end-to-end tests' trained models."""
    from e2e.cli import main

    out = tmp_path_factory.mktemp("benchmark")
    assert main(["benchmark", *demo_benchmark_options(demo_data, out)]) == 0
    return out
