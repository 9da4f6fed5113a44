"""Sweeps (top-p, modality subsets); the mean±std report of their runs.

The slow tests train on a small subset of the demo corpus (1 epoch, few frames) to stay within the
suite's budget; they check the sweep mechanics (rows, resumability, FLOPs ordering), not accuracy.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from e2e.experiments.jobs import make_job, parse_values, run_jobs
from e2e.experiments.modalities import sweep_modalities
from e2e.experiments.top_p import sweep_top_p
from e2e.models import load_config
from e2e.reporting.report import write_report
from e2e.reporting.tables import load_results
from tests.helpers.executor_runs import first_utterances

DEMO_MESM = Path("configs/demo/mesm.yaml")
SUBSET = {"train": 24, "valid": 12, "test": 12}  # utterances per split of the tiny corpus


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- fast unit tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.1:1.0:0.1", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
        ("0.3,0.5,1.0", [0.3, 0.5, 1.0]),
        ("0.5", [0.5]),
        ("0.1:1.0:0.4", [0.1, 0.5, 0.9]),
    ],
)
def test_parse_values(text, expected):
    assert parse_values(text) == expected


@pytest.mark.parametrize("text", ["", "1.0:0.1:0.1", "0.1:1.0:0"])
def test_parse_values_rejects_bad_input(text):
    with pytest.raises(ValueError):
        parse_values(text)


def test_each_job_is_named_when_it_starts(tmp_path, capsys):
    jobs = [
        make_job(tmp_path, f"mesm-p{p:g}-s1", load_config(DEMO_MESM, [f"model.top_p={p}", "train.seed=1"]))
        for p in (0.5, 1.0)
    ]
    for job in jobs:  # finished points: reused, not trained
        Path(job.run_dir).mkdir()
        (Path(job.run_dir) / "results.json").write_text(json.dumps({"config": job.config.to_dict()}), encoding="utf-8")
    run_jobs(jobs, tmp_path)
    assert capsys.readouterr().err.splitlines() == [
        f"[1/2] mesm tav top_p=0.5 seed 1 on iemocap -> {tmp_path / 'mesm-p0.5-s1'}: finished, reused",
        f"[2/2] mesm tav top_p=1 seed 1 on iemocap -> {tmp_path / 'mesm-p1-s1'}: finished, reused",
    ]


# --- sweeps on the demo corpus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_corpus(demo_iemocap_cache, tmp_path_factory) -> Path:
    """The first few utterances per split of the preprocessed demo corpus (media and cache linked)."""
    return first_utterances(demo_iemocap_cache, tmp_path_factory.mktemp("tiny"), SUBSET)


def _overrides(data_dir: Path) -> list[str]:
    return [
        f"data.data_dir={data_dir}",
        "train.epochs=1",
        "train.progress=false",
        "data.max_frames=4",
        "data.max_chunks=8",
    ]


@pytest.fixture(scope="module")
def top_p_sweep(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "top_p"
    sweep_top_p(load_config(DEMO_MESM, _overrides(tiny_corpus)), parse_values("0.3,1.0"), [0], out, flops_utterances=4)
    return out


@pytest.mark.slow
def test_top_p_sweep_writes_rows_and_plot(top_p_sweep):
    rows = _read_csv(top_p_sweep / "results.csv")
    assert [(r["model"], r["p"], r["seed"]) for r in rows] == [
        ("fe2e", "", "0"),
        ("mesm", "0.3", "0"),
        ("mesm", "1.0", "0"),
    ]
    for column in ("acc", "f1", "wacc", "multiclass_acc", "weighted_f1", "gflops", "gflops_ratio"):
        assert all(r[column] != "" for r in rows), column
    assert (top_p_sweep / "top_p.png").stat().st_size > 10_000
    jobs = json.loads((top_p_sweep / "jobs.json").read_text(encoding="utf-8"))
    assert [job["name"] for job in jobs] == ["fe2e-s0", "mesm-p0.3-s0", "mesm-p1-s0"]
    assert all((Path(job["run_dir"]) / "config.yaml").is_file() for job in jobs)


@pytest.mark.slow
def test_gflops_fall_with_p(top_p_sweep):
    gflops = {r["p"]: float(r["gflops"]) for r in _read_csv(top_p_sweep / "results.csv")}
    assert gflops["0.3"] < gflops["1.0"]
    assert gflops["1.0"] <= gflops[""] * 1.001  # MESM with p = 1 does no more than the dense FE2E


@pytest.mark.slow
def test_top_p_rerun_skips_finished_points(top_p_sweep, tiny_corpus):
    results = sorted(top_p_sweep.glob("*/results.json"))
    before = {path: path.stat().st_mtime_ns for path in [*results, *top_p_sweep.glob("*/flops.json")]}
    assert len(results) == 3
    sweep_top_p(load_config(DEMO_MESM, _overrides(tiny_corpus)), [0.3, 1.0], [0], top_p_sweep, flops_utterances=4)
    assert {path: path.stat().st_mtime_ns for path in before} == before


@pytest.mark.slow
def test_top_p_rerun_with_another_config_is_refused(top_p_sweep, tiny_corpus):
    with pytest.raises(ValueError, match="another config"):
        sweep_top_p(load_config(DEMO_MESM, [*_overrides(tiny_corpus), "train.lr=0.5"]), [0.3], [0], top_p_sweep)


@pytest.mark.slow
def test_modality_sweep_and_report(tiny_corpus, tmp_path):
    out = tmp_path / "modalities"
    sweep_modalities(Path("configs/demo"), ["fe2e", "mesm"], [0], out, _overrides(tiny_corpus), jobs=2)
    rows = _read_csv(out / "modalities.csv")
    expected = ["T", "A", "V", "TA", "TV", "AV", "TAV"]
    for model in ("fe2e", "mesm"):
        assert [r["modalities"] for r in rows if r["model"] == model] == expected
    mesm = {r["modalities"]: r for r in rows if r["model"] == "mesm"}
    assert {subset for subset, r in mesm.items() if r["variant"] == "fe2e"} == {"A", "V", "AV"}
    assert mesm["A"]["run"] == "fe2e-a-s0"  # the FE2E run is shared, not trained twice
    assert len(list(out.glob("*/results.json"))) == 11
    table = (out / "modalities.md").read_text(encoding="utf-8")
    assert sum(line.startswith("| mesm |") for line in table.splitlines()) == 7 and "±" in table

    markdown = write_report(load_results(sorted(out.glob("*-tav-s0")))[0], out)
    assert "ang Acc" in markdown and "avg F1" in markdown and "±" in markdown
    assert (out / "report.csv").is_file()
