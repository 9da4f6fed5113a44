"""The SLURM executor on a real one-node cluster started here (munged, slurmctld, slurmd; see
:mod:`tests.helpers.slurm_cluster`): one job array per submission, a failing task reported with its log,
a demo benchmark through sbatch equal to the local one, a DDP run as one two-task job, and an array task
cancelled mid-run (``scancel``) that a rerun completes with the results of an uninterrupted run.

Like the Ray tests, local and SLURM runs are compared on this one machine with one torch thread each,
so equal results do not depend on any CPU's rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_reorg.executors import ExecutorSpec, make_executor
from e2e.cli import main
from tests.helpers.executor_runs import (
    KILLED_RUN_EPOCHS,
    REPO,
    benchmark_args,
    job_starts,
    run_results,
    state_after_first_epoch,
)
from tests.helpers.slurm_cluster import all_reduced_rank, dies_once, local_slurm_cluster, twice


@pytest.fixture(scope="module")
def partition() -> str:
    with local_slurm_cluster() as name:
        yield name


def _spec(partition: str, log_dir: Path, **changes) -> ExecutorSpec:
    return ExecutorSpec(kind="slurm", workers=0, slurm_partition=partition, log_dir=log_dir, **changes)


def test_one_job_array_of_three_tasks_one_failing_with_its_log(partition, tmp_path):
    outcomes = make_executor(_spec(partition, tmp_path / "logs")).map(twice, [1, -1, 3], ["a", "b", "c"])
    assert [(o.name, o.ok, o.value) for o in outcomes] == [("a", True, 2), ("b", False, None), ("c", True, 6)]
    assert outcomes[1].error == "ValueError: negative item -1"
    assert "raise ValueError" in outcomes[1].log_tail and "doubling" not in outcomes[1].log_tail
    assert Path(outcomes[1].log_path).is_file()
    assert "doubling 3" in Path(outcomes[2].log_path).read_text(encoding="utf-8")
    job_ids = [Path(o.log_path).parent.name for o in outcomes]  # submitit's folder per job: <array>_<task>
    assert len({job_id.split("_")[0] for job_id in job_ids}) == 1
    assert sorted(job_id.split("_")[1] for job_id in job_ids) == ["0", "1", "2"]


def test_a_task_killed_without_a_result_is_submitted_again_with_retries(partition, tmp_path, capsys):
    executor = make_executor(_spec(partition, tmp_path / "logs", retries=1))
    [outcome] = executor.map(dies_once, [str(tmp_path / "marker")], ["victim"])
    assert outcome.ok and outcome.value == "survived"
    assert (
        "slurm: submitting again 1 task(s) that ended without a result (try 2 of 2): victim" in capsys.readouterr().err
    )
    assert len([path for path in (tmp_path / "logs").iterdir() if path.is_dir()]) == 2  # one job per try


def test_a_ddp_run_spans_the_two_tasks_of_one_job(partition, tmp_path):
    spec = _spec(partition, tmp_path / "logs", slurm_tasks_per_node=2)
    [outcome] = make_executor(spec).map(all_reduced_rank, [10], ["ddp"])
    assert outcome.ok, outcome.log_tail
    assert outcome.value == {"rank": 0, "world_size": 2, "sum": 21.0}  # (0 + 10) + (1 + 10)


def test_a_multi_task_slurm_step_gets_torchruns_environment(partition, monkeypatch):
    """What ``srun -n 2 e2e train ...`` gives the task of rank 1 (no torchrun variables of its own)."""
    from e2e.training.distributed import launched_by_torchrun, local_rank

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, "")  # so that the test's end restores what was there (nothing, usually)
        monkeypatch.delenv(key)
    slurm = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "4321"}
    for key, value in {**slurm, "SLURM_STEP_NODELIST": "node[07-08]"}.items():
        monkeypatch.setenv(key, value)
    assert launched_by_torchrun() and local_rank() == 0
    assert {key: os.environ[key] for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")} == {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "node07",
        "MASTER_PORT": "24321",
    }


@pytest.mark.slow
def test_a_benchmark_through_sbatch_equals_the_local_one_and_a_cancelled_task_is_completed_by_a_rerun(
    tiny, local_reference, partition, tmp_path, capsys
):
    """Two runs as one array of two sbatch tasks; ``scancel`` of fe2e-s0's task once its first epoch is
    checkpointed: the command reports that run failed (the other finishes), and rerunning it resumes
    from ``last.pt``; both runs end as the uninterrupted local ones did."""
    out = tmp_path / "slurm"
    options = ("--executor", "slurm", "--slurm-partition", partition)
    command = [sys.executable, "-m", "e2e.cli", *benchmark_args(tiny, out, "0,1", KILLED_RUN_EPOCHS, *options)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        job_id = state_after_first_epoch(out / "fe2e-s0", driver)["job_id"]
        # SIGKILL at once: submitit's tasks ignore the SIGTERM of a plain scancel (it waits KillWait seconds
        # before SIGKILL), time in which a tiny run may finish its last epoch
        subprocess.run(["scancel", "--signal=KILL", "--full", job_id], check=True, timeout=30)
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode != 0, err[-3000:]
    assert f"SLURM job {job_id} ended CANCELLED without a result" in err
    tasks = [path.name for path in (out / "executor_logs").iterdir() if path.is_dir() and "_" in path.name]
    assert sorted(name.split("_")[1] for name in tasks) == ["0", "1"]  # one array of two tasks
    failure = json.loads((out / "fe2e-s0" / "failed.json").read_text(encoding="utf-8"))
    assert failure["engine"] == "slurm" and "CANCELLED" in failure["error"]
    assert run_results(out, "fe2e-s1") == run_results(local_reference, "fe2e-s1")
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"done": 1, "running": 0, "failed": 1, "pending": 0}

    rerun = subprocess.run(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "fe2e-s1: finished, reused" in rerun.stderr  # not submitted again
    starts = job_starts(out / "fe2e-s0")  # the task's own output stays in its job.log on the node
    assert len(starts) == 2 and "on slurm" in starts[1] and starts[1].endswith("(resuming from checkpoints/last.pt)")
    assert run_results(out, "fe2e-s0") == run_results(local_reference, "fe2e-s0")
    assert not (out / "fe2e-s0" / "failed.json").exists()
    assert main(["status", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"done": 2, "running": 0, "failed": 0, "pending": 0}
