"""The demo corpus the benchmarks train on: built once, reorganized and preprocessed (shared by the scripts)."""

from __future__ import annotations

from pathlib import Path


def ensure_demo(root: Path, jobs: int) -> tuple[Path, int]:
    """``(root/iemocap, number of utterances that could not be preprocessed)``; the corpus is built first
    when missing."""
    corpus = root / "iemocap"
    if not (corpus / "manifest.jsonl").is_file():
        from data_reorg.cli import main as data_reorg

        if data_reorg(["demo", str(root), "--no-progress"]) != 0:
            raise SystemExit(f"data-reorg demo {root} failed")
    from e2e.data.preprocess import preprocess

    return corpus, len(preprocess(corpus, jobs=jobs, progress=False).problems)
