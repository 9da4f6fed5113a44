"""The recipe API: ``prepare_iemocap`` / ``prepare_mosei`` called from Python on the raw demo corpora.

Each run goes into a copy of the CLI's reorganized folder for the same source, so it reuses the finished
clips (cheap) and must write the same manifest, drops, splits and run record as ``data-reorg demo``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from data_reorg import prepare_iemocap, prepare_mosei
from data_reorg.io import read_jsonl
from data_reorg.manifest import SPLITS

pytestmark = pytest.mark.slow

DEMO_RATIOS = (0.6, 0.2, 0.2)  # what ``data-reorg demo`` splits with (seed 0)
OUTPUTS = ("manifest.jsonl", "dropped.jsonl", "reorg.json", *(f"splits/{name}.txt" for name in SPLITS))


def _copy_of(reorganized: Path, tmp_path: Path) -> Path:
    out = tmp_path / reorganized.name
    shutil.copytree(reorganized, out)
    return out


def _split_ids(out: Path) -> dict[str, set[str]]:
    return {name: set((out / "splits" / f"{name}.txt").read_text(encoding="utf-8").split()) for name in SPLITS}


@pytest.mark.parametrize("prepare, corpus", [(prepare_iemocap, "iemocap"), (prepare_mosei, "mosei")])
def test_prepare_from_python_writes_what_the_cli_wrote(demo_data, tmp_path, prepare, corpus):
    cli_out = getattr(demo_data, corpus)
    out = _copy_of(cli_out, tmp_path)
    summary = prepare(
        getattr(demo_data, f"raw_{corpus}"), out, split="random", seed=0, ratios=DEMO_RATIOS, jobs=2, progress=False
    )
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (cli_out / name).read_bytes(), name
    rows = read_jsonl(out / "manifest.jsonl")
    assert summary.kept == len(rows) > 0
    assert summary.dropped == len(read_jsonl(out / "dropped.jsonl"))
    assert summary.split_counts == {name: sum(row["split"] == name for row in rows) for name in SPLITS}


def test_prepare_iemocap_session_split_holds_out_the_last_sessions(demo_data, tmp_path):
    out = _copy_of(demo_data.iemocap, tmp_path)
    summary = prepare_iemocap(demo_data.raw_iemocap, out, split="session", progress=False)
    splits = _split_ids(out)
    assert {item[4] for item in splits["test"]} == {"3"} and {item[4] for item in splits["valid"]} == {"2"}
    assert {item[4] for item in splits["train"]} == {"1"}
    assert summary.kept == sum(map(len, splits.values()))


def test_prepare_iemocap_keeps_only_the_classes_asked_for(demo_data, tmp_path):
    out = _copy_of(demo_data.iemocap, tmp_path)
    summary = prepare_iemocap(demo_data.raw_iemocap, out, classes=("ang", "sad"), progress=False)
    labels = {row["label"] for row in read_jsonl(out / "manifest.jsonl")}
    assert labels == {"ang", "sad"}
    assert summary.kept == sum(cls in labels for cls in demo_data.truth["iemocap"]["classes"].values())


@pytest.mark.parametrize("prepare, corpus", [(prepare_iemocap, "iemocap"), (prepare_mosei, "mosei")])
def test_prepare_refuses_out_inside_src_and_writes_nothing(demo_data, prepare, corpus):
    src = getattr(demo_data, f"raw_{corpus}")
    with pytest.raises(ValueError, match="is inside SRC"):
        prepare(src, src / "out", progress=False)
    assert not (src / "out").exists()


@pytest.mark.parametrize("prepare", [prepare_iemocap, prepare_mosei])
def test_prepare_refuses_a_missing_source_and_an_unknown_split(demo_data, tmp_path, prepare):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown .* split 'folds'"):
        prepare(demo_data.raw_iemocap, tmp_path / "out", split="folds")
    assert not (tmp_path / "out").exists()


def test_bad_random_ratios_are_refused(demo_data, tmp_path):
    with pytest.raises(ValueError, match="ratios must be three"):
        prepare_mosei(demo_data.raw_mosei, tmp_path / "out", ratios=(0.5, 0.5), progress=False)
