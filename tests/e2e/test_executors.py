"""Executors under the job runner: a failed job is recorded and the others finish, a rerun submits only
what is unfinished, and a demo benchmark on a real local Ray cluster (started here) gives the same results
as on this machine, also when a Ray worker is killed mid-run (the fixtures ``tiny`` and ``local_reference``
are in this folder's conftest).

The runs are tiny (a few demo utterances, few frames, 1-4 epochs): these tests check the dispatch, not
accuracy. Local and Ray runs are compared on this one machine with one torch thread each, so equal
results do not depend on any CPU's rounding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_reorg.executors import ExecutorSpec, ExecutorUnavailable, make_executor
from data_reorg.executors.ray_engine import connect
from e2e.cli import main
from e2e.experiments.jobs import JobsFailed, make_job, run_jobs
from e2e.models import load_config
from tests.helpers.executor_runs import (
    KILLED_RUN_EPOCHS,
    REPO,
    benchmark_args,
    job_starts,
    overrides,
    run_results,
    state_after_first_epoch,
)
from tests.helpers.ray_cluster import free_port, local_ray_cluster, twice

# --- the executors themselves ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_task_is_an_outcome_and_the_others_finish(workers):
    outcomes = make_executor(ExecutorSpec(workers=workers)).map(twice, [1, -1, 3], ["a", "b", "c"])
    assert [(o.name, o.ok, o.value) for o in outcomes] == [("a", True, 2), ("b", False, None), ("c", True, 6)]
    assert outcomes[1].error == "ValueError: negative item -1"
    assert "raise ValueError" in outcomes[1].log_tail


def test_ray_without_a_cluster_is_a_clear_error_naming_the_address():
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        pytest.skip("this process is connected to a Ray cluster already")
    with pytest.raises(ExecutorUnavailable, match="--ray-address HOST:PORT or set RAY_ADDRESS"):
        connect(None)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ExecutorUnavailable, match=f"no Ray cluster reachable at {address}"):
        connect(address)
    assert time.monotonic() - started < 10


# --- jobs on this machine --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failed_job_is_recorded_the_others_finish_and_a_rerun_retries_only_it(tiny, tmp_path, capsys):
    late = tmp_path / "late"  # the data of job "late" appears only after its first try
    jobs = [
        make_job(tmp_path / "out", name, load_config("configs/demo/fe2e.yaml", [f"data.data_dir={data}", *overrides()]))
        for name, data in (("early", tiny), ("late", late))
    ]
    with pytest.raises(JobsFailed, match=r"1 of 2 jobs failed: .*late .*rerun the same command"):
        run_jobs(jobs, tmp_path / "out")
    failure = json.loads((tmp_path / "out" / "late" / "failed.json").read_text(encoding="utf-8"))
    assert failure["engine"] == "local" and str(late) in failure["error"]
    assert failure["log_path"] == str(tmp_path / "out" / "late" / "job.log")
    assert failure["log_tail"].splitlines()[-1] == failure["error"]  # the traceback's tail
    assert "Traceback (most recent call last):" in Path(failure["log_path"]).read_text(encoding="utf-8")
    err = capsys.readouterr().err
    assert f"late failed on local: {failure['error']}\n  run dir: {tmp_path / 'out' / 'late'}\n" in err
    assert (tmp_path / "out" / "early" / "results.json").is_file()
    assert main(["status", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path / 'out'}: 2 jobs: 1 done, 0 running, 1 failed, 0 pending"
    assert lines[1].split()[:3] == ["done", "early", str(tmp_path / "out" / "early")]
    assert lines[2].split()[:3] == ["failed", "late", str(tmp_path / "out" / "late")]

    late.symlink_to(tiny)
    results = run_jobs(jobs, tmp_path / "out")
    err = capsys.readouterr().err
    assert f"-> {tmp_path / 'out' / 'early'}: finished, reused" in err  # not submitted again
    assert f"-> {tmp_path / 'out' / 'late'}: training" in err
    assert set(results) == {"early", "late"} and not (tmp_path / "out" / "late" / "failed.json").exists()
    assert not (tmp_path / "out" / "late" / "state.json").exists()


# --- a real local Ray cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> str:
    with local_ray_cluster(num_cpus=2) as address:
        yield address


@pytest.mark.slow
def test_a_benchmark_on_ray_equals_the_local_one_also_when_a_worker_is_killed(
    tiny, local_reference, ray_address, tmp_path, capsys
):
    """Two runs as Ray tasks; the worker of fe2e-s0 is SIGKILLed once its first epoch is checkpointed:
    Ray runs that task again (``--retries 1``), it resumes from ``last.pt``, and both runs end as the
    uninterrupted local ones did."""
    out = tmp_path / "ray"
    command = benchmark_args(
        tiny, out, "0,1", KILLED_RUN_EPOCHS, "--executor", "ray", "--ray-address", ray_address, "--retries", "1"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "e2e.cli", *command], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        state = state_after_first_epoch(out / "fe2e-s0", driver)
        assert state["engine"] == "ray" and state["job_id"]
        os.kill(state["pid"], signal.SIGKILL)
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err[-3000:]
    starts = job_starts(out / "fe2e-s0")
    assert len(starts) == 2 and starts[1].endswith("(resuming from checkpoints/last.pt)"), starts
    assert len(job_starts(out / "fe2e-s1")) == 1
    for run in ("fe2e-s0", "fe2e-s1"):
        assert run_results(out, run) == run_results(local_reference, run)
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"] == {"done": 2, "running": 0, "failed": 0, "pending": 0}
    assert [(job["name"], job["state"]) for job in status["jobs"]] == [("fe2e-s0", "done"), ("fe2e-s1", "done")]
