"""``e2e table`` and ``e2e report`` over finished runs, runs of two datasets, benchmark folders and
unfinished runs (results.json files in the trainer's format)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from e2e.cli import main
from e2e.reporting.report import write_report
from e2e.reporting.tables import format_value, load_results, modalities_table

CLASSES = {
    "iemocap": ["ang", "exc", "fru", "hap", "neu", "sad"],
    "mosei": ["anger", "disgust", "fear", "happy", "sad", "surprise"],
}
MAIN_METRICS = {"iemocap": ["acc", "f1"], "mosei": ["wacc", "f1"]}


def fake_run(
    run_dir: Path, model: str, seed: int, acc: float, f1: float, top_p: float | None = None, dataset: str = "iemocap"
) -> Path:
    """A finished run directory: results.json as the trainer writes it (the fields tables read)."""
    first = MAIN_METRICS[dataset][0]
    per_class = {name: {first: acc, "f1": f1 + 0.01 * i} for i, name in enumerate(CLASSES[dataset])}
    test = {first: acc, "f1": f1 + 0.025, "per_class": per_class}
    if dataset == "iemocap":
        test.update(multiclass_acc=0.5, weighted_f1=0.4)
    results = {
        "model": model,
        "dataset": dataset,
        "main_metrics": MAIN_METRICS[dataset],
        "class_names": CLASSES[dataset],
        "valid": test,
        "test": test,
        "config": {"model": {"modalities": "tav"}, "train": {"seed": seed}},
    }
    if top_p is not None:
        results["top_p"] = top_p
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return run_dir


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_report_aggregates_seeds_per_model(tmp_path):
    runs = [
        fake_run(tmp_path / "f0", "fe2e", 0, 0.80, 0.50),
        fake_run(tmp_path / "f1", "fe2e", 1, 0.90, 0.60),
        fake_run(tmp_path / "m0", "mesm", 0, 0.70, 0.40, top_p=0.7),
    ]
    markdown = write_report(load_results(runs)[0], tmp_path / "out")
    lines = markdown.splitlines()
    header = lines[2]
    for name in CLASSES["iemocap"]:
        assert f"{name} Acc" in header and f"{name} F1" in header
    assert "avg Acc" in header and "6-way Acc" in header
    fe2e_row = next(line for line in lines if line.startswith("| fe2e"))
    assert "| 2 |" in fe2e_row and "85.0±7.1" in fe2e_row  # mean and sample std of 0.80, 0.90
    mesm_row = next(line for line in lines if line.startswith("| mesm"))
    assert "| 0.7 | 1 |" in mesm_row and "70.0±0.0" in mesm_row
    assert (tmp_path / "out" / "report.md").read_text(encoding="utf-8").strip() == markdown
    rows = _read_csv(tmp_path / "out" / "report.csv")
    avg_f1 = next(r for r in rows if r["model"] == "fe2e" and r["class"] == "avg" and r["metric"] == "f1")
    assert float(avg_f1["mean"]) == pytest.approx(0.575) and avg_f1["runs"] == "2"
    assert {r["class"] for r in rows} == {*CLASSES["iemocap"], "avg"}


def test_runs_with_other_encoders_get_their_own_rows(tmp_path):
    runs = [fake_run(tmp_path / name, "mesm", 0, 0.7, 0.4, top_p=0.5) for name in ("vgg", "hf", "pruned", "feat")]
    encoders = {"audio_encoder": "microsoft/wavlm-base-plus", "visual_encoder": "/models/clip-vit-base-patch16"}
    changes = {
        "hf": encoders,
        "pruned": {**encoders, "prune_layers": "4"},
        "feat": {"feature_visual_encoder": "facebook/dinov2-small"},
    }
    for name, model in changes.items():
        path = tmp_path / name / "results.json"
        results = json.loads(path.read_text(encoding="utf-8"))
        results["config"]["model"].update(model)
        path.write_text(json.dumps(results), encoding="utf-8")
    markdown = write_report(load_results(runs)[0])
    models = [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| mesm")]
    assert models == [
        "mesm",
        "mesm (a=wavlm-base-plus, v=clip-vit-base-patch16)",
        "mesm (a=wavlm-base-plus, v=clip-vit-base-patch16, pruned after 4)",
        "mesm (v=dinov2-small)",
    ]


def test_a_path_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_results([tmp_path / "missing"])


def test_table_over_two_datasets_prints_one_table_each(tmp_path, capsys):
    runs = [
        str(fake_run(tmp_path / "iemocap-fe2e", "fe2e", 0, 0.8, 0.5)),
        str(fake_run(tmp_path / "mosei-fe2e", "fe2e", 0, 0.7, 0.4, dataset="mosei")),
    ]
    assert main(["table", *runs]) == 0
    iemocap, mosei = capsys.readouterr().out.strip().split("\n\nmosei test")
    assert iemocap.startswith("iemocap test Acc/F1") and "| iemocap-fe2e | fe2e (tav) | 80.0/50.0 |" in iemocap
    assert "mosei" not in iemocap.split("\n", 1)[1]
    assert mosei.startswith(" WAcc/F1") and "surprise" in mosei and "| mosei-fe2e | fe2e (tav) | 70.0/40.0 |" in mosei
    assert main(["report", *runs]) == 0
    out = capsys.readouterr().out
    assert "iemocap test" in out and "mosei test" in out and "ang Acc" in out and "surprise WAcc" in out


def test_table_skips_non_runs_and_unfinished_runs_with_a_note(tmp_path, capsys):
    """``e2e table bench/*`` also matches jobs.json, report.md and runs still training."""
    fake_run(tmp_path / "fe2e-s0", "fe2e", 0, 0.8, 0.5)
    (tmp_path / "jobs.json").write_text("[]\n", encoding="utf-8")
    (tmp_path / "tb").mkdir()
    (tmp_path / "starting").mkdir()
    (tmp_path / "starting" / "config.yaml").write_text("model:\n  name: fe2e\n", encoding="utf-8")
    (tmp_path / "training" / "checkpoints").mkdir(parents=True)
    (tmp_path / "training" / "checkpoints" / "last.pt").write_bytes(b"")
    empty = fake_run(tmp_path / "no-epoch", "fe2e", 0, 0.8, 0.5)
    results = json.loads((empty / "results.json").read_text(encoding="utf-8"))
    (empty / "results.json").write_text(json.dumps(dict(results, valid=None, test=None)), encoding="utf-8")
    paths = sorted(str(path) for path in tmp_path.iterdir())
    for command in ("table", "report"):
        assert main([command, *paths]) == 0
        captured = capsys.readouterr()
        assert "fe2e" in captured.out
        notes = captured.err.splitlines()
        assert len(notes) == 5 and all(note.startswith("e2e: skipped ") for note in notes)
        by_path = {Path(note.split()[2].rstrip(":")).name: note for note in notes}
        assert "not a run directory" in by_path["jobs.json"] and "not a run directory" in by_path["tb"]
        assert "no finished epoch" in by_path["starting"] and "no finished epoch" in by_path["no-epoch"]
        assert "has not finished" in by_path["training"]


def test_table_without_a_finished_run_says_so(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model:\n  name: fe2e\n", encoding="utf-8")
    assert main(["table", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "no finished run" in err and "run: the run has no finished epoch" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{", encoding="utf-8")
    assert main(["table", str(tmp_path / "broken")]) == 2
    assert "results.json: not valid JSON" in capsys.readouterr().err


def test_regression_metrics_are_shown_as_they_are_and_undefined_ones_as_a_dash():
    assert format_value("acc2_non0", 0.8125) == "81.2" and format_value("mae", 0.61234) == "0.612"
    assert format_value("corr", None) == "-" and format_value("ccc", float("nan")) == "-"
    rows = [
        {"model": "mult", "modalities": "TAV", "variant": "mult", "mae": mae, "ccc": ccc}
        for mae, ccc in ((0.5, 0.6), (0.7, 0.4))
    ]
    table = modalities_table(rows, ("mae", "ccc"))
    assert "| MAE | CCC |" in table and "| 0.600±0.141 | 0.500±0.141 |" in table
