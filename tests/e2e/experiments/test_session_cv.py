"""IEMOCAP leave-one-session-out cross-validation: the folds partition the sessions with disjoint
speakers, the datasets read them, and ``e2e benchmark --split session-cv`` tables mean ± std over folds."""

from __future__ import annotations

import csv
import json

import pytest

from data_reorg.manifest import load_manifest
from e2e.cli import main
from e2e.config import DataConfig, UsageError
from e2e.data.protocols import (
    check_protocol,
    check_speaker_independent,
    iemocap_speaker,
    session_fold,
    sessions_in,
    split_rows,
)
from e2e.reporting.tables import format_mean_std

TINY = ["--set", "train.epochs=1", "--set", "data.max_frames=2", "--set", "data.max_chunks=2"]


def test_speaker_of_an_id():
    assert iemocap_speaker("Ses05F_script02_2_M035") == ("5", "Ses05M")
    assert iemocap_speaker("Ses01M_impro05a_F009") == ("1", "Ses01F")
    with pytest.raises(UsageError, match="not an IEMOCAP utterance id"):
        iemocap_speaker("--qXJuDtHPw_4", "m.jsonl")


def test_folds_partition_the_sessions_with_disjoint_speakers(demo_data):
    rows = load_manifest(demo_data.iemocap)
    sessions = sessions_in(rows)
    assert sessions == [1, 2, 3]  # the demo corpus holds three of IEMOCAP's five sessions
    tested: list[str] = []
    for fold in sessions:
        assignment = session_fold(rows, fold)
        assert set(assignment) == {row["id"] for row in rows}
        test = {i for i, split in assignment.items() if split == "test"}
        assert test == {row["id"] for row in rows if row["id"].startswith(f"Ses0{fold}")}
        fit = set(assignment) - test
        assert {iemocap_speaker(i)[1] for i in test}.isdisjoint({iemocap_speaker(i)[1] for i in fit})
        valid = [i for i in fit if assignment[i] == "valid"]
        assert 0 < len(valid) <= 0.1 * len(fit) + 1
        assert session_fold(rows, fold) == assignment  # deterministic
        tested += sorted(test)
    assert sorted(tested) == sorted(row["id"] for row in rows)  # every utterance tested exactly once
    with pytest.raises(UsageError, match="fold 5 has no utterance of session 5"):
        session_fold(rows, 5)
    with pytest.raises(ValueError, match="Ses01F"):
        check_speaker_independent({"Ses01F_impro01_F000": "test", "Ses01M_impro01_F001": "train"})


def test_protocol_settings_are_checked(demo_data):
    with pytest.raises(UsageError, match="needs data.fold"):
        check_protocol(DataConfig(split="session-cv"))
    with pytest.raises(UsageError, match="IEMOCAP"):
        check_protocol(DataConfig(dataset="mosei", split="session-cv", fold=1))
    with pytest.raises(UsageError, match="only for data.split=session-cv"):
        check_protocol(DataConfig(fold=2))
    standard = split_rows(demo_data.iemocap, "test", DataConfig(dataset="iemocap"))
    assert standard == load_manifest(demo_data.iemocap, "test")
    fold2 = split_rows(demo_data.iemocap, "test", DataConfig(dataset="iemocap", split="session-cv", fold=2))
    assert {row["id"][:5] for row in fold2} == {"Ses02"}


def _read_csv(path):
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_session_cv_benchmark_tables_mean_std_over_folds(demo_iemocap_cache, tmp_path):
    out = tmp_path / "cv"
    argv = ["benchmark", "--data-dir", str(demo_iemocap_cache), "--models", "fe2e", "--seeds", "0"]
    argv += ["--config-dir", "configs/demo", "--split", "session-cv", "--folds", "1,3", *TINY]
    assert main([*argv, "--set", "train.progress=false", "--out", str(out)]) == 0
    results = {fold: json.loads((out / f"fe2e-f{fold}-s0" / "results.json").read_text()) for fold in (1, 3)}
    for fold, result in results.items():
        assert result["config"]["data"]["split"] == "session-cv" and result["config"]["data"]["fold"] == fold
        assert result["test"]["n"] == sum(
            row["id"].startswith(f"Ses0{fold}") for row in load_manifest(demo_iemocap_cache)
        )
    markdown = (out / "session_cv.md").read_text(encoding="utf-8")
    f1 = format_mean_std([results[1]["test"]["f1"], results[3]["test"]["f1"]], "f1")
    row = next(line for line in markdown.splitlines() if line.startswith("| fe2e | tav | 1,3 | 0 | 2 |"))
    assert f1 in row and "±" in f1
    assert "| majority | - | 1,3 | - | 2 |" in markdown
    runs = _read_csv(out / "session_cv.csv")
    assert [(r["model"], r["fold"]) for r in runs] == [
        ("majority", "1"),
        ("majority", "3"),
        ("fe2e", "1"),
        ("fe2e", "3"),
    ]
    summary = json.loads((out / "session_cv.json").read_text())
    assert summary["folds"] == [1, 3] and summary["models"]["fe2e"]["runs"] == ["fe2e-f1-s0", "fe2e-f3-s0"]
