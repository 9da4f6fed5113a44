"""``e2e status DIR``: each job's state from the files its run directory holds, wherever it ran."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.cli import main
from e2e.config import UsageError
from e2e.experiments.status import folder_status


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def _dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep folder with one job in each state (and a knowledge run listed apart, as a benchmark does)."""
    out = tmp_path / "sweep"
    names = ["done", "failed", "here", "elsewhere", "killed", "fresh"]
    _write(out / "jobs.json", [{"name": name, "run_dir": str(out / name), "config": {}} for name in names])
    _write(out / "pretrain_jobs.json", [{"name": "knowledge", "run_dir": str(out / "knowledge")}])
    _write(out / "summary.json", {"models": {}})  # not a job list
    _write(out / "knowledge" / "results.json", {})
    _write(out / "done" / "results.json", {})
    _write(out / "done" / "failed.json", {"error": "an earlier try"})  # results win
    _write(out / "failed" / "failed.json", {"error": "ValueError: bad", "engine": "ray", "log_path": "L"})
    host = socket.gethostname()
    _write(out / "here" / "state.json", {"engine": "local", "host": host, "pid": os.getpid()})
    _write(out / "elsewhere" / "state.json", {"engine": "slurm", "host": "node7", "pid": 1, "job_id": "42_3"})
    _write(out / "killed" / "state.json", {"engine": "local", "host": host, "pid": _dead_pid()})
    (out / "killed" / "checkpoints").mkdir()
    (out / "killed" / "checkpoints" / "last.pt").write_bytes(b"")
    return out


def test_every_state_is_told_apart(sweep):
    states = {status.name: (status.state, status.detail) for status in folder_status(sweep)}
    assert [status.name for status in folder_status(sweep)][0] == "knowledge"  # trained first, listed first
    assert {name: state for name, (state, _) in states.items()} == {
        "knowledge": "done",
        "done": "done",
        "failed": "failed",
        "here": "running",
        "elsewhere": "running",
        "killed": "pending",
        "fresh": "pending",
    }
    assert states["failed"][1] == "ValueError: bad (on ray; log L)"
    assert states["elsewhere"][1].startswith("slurm on node7 pid 1 job 42_3 since")
    assert (
        states["killed"][1].startswith("interrupted (local on ")
        and "resumes from checkpoints/last.pt" in states["killed"][1]
    )


def test_the_command_prints_counts_and_one_line_per_job(sweep, capsys):
    assert main(["status", str(sweep)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{sweep}: 7 jobs: 2 done, 2 running, 1 failed, 2 pending"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["done", "knowledge"],
        ["done", "done"],
        ["failed", "failed"],
        ["running", "here"],
        ["running", "elsewhere"],
        ["pending", "killed"],
        ["pending", "fresh"],
    ]
    assert main(["status", str(sweep), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"done": 2, "running": 2, "failed": 1, "pending": 2}
    assert report["jobs"][2] == {
        "name": "failed",
        "state": "failed",
        "run_dir": str(sweep / "failed"),
        "detail": "ValueError: bad (on ray; log L)",
        "list_name": "jobs.json",
    }


def test_a_copied_folder_reads_its_own_run_directories(sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    shutil.rmtree(sweep)  # the recorded run_dir paths no longer exist
    statuses = folder_status(copy)
    assert all(Path(status.run_dir).parent == copy for status in statuses)
    assert [status.state for status in statuses][:3] == ["done", "done", "failed"]


def test_a_folder_without_a_job_list_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(UsageError, match="holds no job list"):
        folder_status(tmp_path)
    assert main(["status", str(tmp_path)]) == 2
    assert "e2e: error:" in capsys.readouterr().err
