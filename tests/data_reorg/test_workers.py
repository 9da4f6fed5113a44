"""The shared worker pool: workers never outlive their parent, a dead worker is one clear error, and
both CLIs print pool and full-disk errors as ``<prog>: error: ...`` with exit status 2."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from data_reorg.io import DiskFullError
from data_reorg.workers import WorkerDied, worker_pool
from tests.helpers.processes import default_signals, running, still_running, wait_for_workers

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")

ROOT = Path(__file__).resolve().parents[2]


def _kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _fail() -> None:
    raise ValueError("bad item 7")


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_a_worker_killed_by_a_signal_is_one_clear_error():
    with pytest.raises(WorkerDied, match=r"^worker \d+ died \(SIGKILL\); rerun to resume$") as caught:
        with worker_pool(2) as pool:
            futures = [pool.submit(_pid_after, 0.5), pool.submit(_kill_myself)]
            [future.result() for future in futures]
    victim = int(str(caught.value).split()[1])
    assert victim != os.getpid() and not running(victim)


def test_task_errors_pass_through_unchanged():
    with pytest.raises(ValueError, match="bad item 7"):
        with worker_pool(2) as pool:
            pool.submit(_fail).result()


def _write_marker(path: str) -> None:
    time.sleep(0.5)
    Path(path).write_text("done", encoding="utf-8")


def test_an_error_in_one_task_lets_the_others_finish(tmp_path):
    markers = [tmp_path / f"task{index}" for index in range(4)]
    with pytest.raises(ValueError, match="bad item 7"):
        with worker_pool(1) as pool:
            failing = pool.submit(_fail)
            others = [pool.submit(_write_marker, str(marker)) for marker in markers]
            failing.result()
    assert all(future.done() and future.exception() is None for future in others)
    assert all(marker.read_text(encoding="utf-8") == "done" for marker in markers)


def test_an_interrupt_kills_the_workers_at_once():
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with worker_pool(2) as pool:
            futures = [pool.submit(_pid_after, 60) for _ in range(2)]
            workers = wait_for_workers(os.getpid(), 2)
            raise KeyboardInterrupt
    assert time.monotonic() - started < 30
    assert still_running(workers, within=5) == []
    assert all(future.done() for future in futures)


POOL_SCRIPT = textwrap.dedent("""
    import sys, time
    from data_reorg.workers import worker_pool

    with worker_pool(2) as pool:
        futures = [pool.submit(time.sleep, 60) for _ in range(4)]
        print("started", flush=True)
        [future.result() for future in futures]
""")


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda sig: sig.name
)
def test_no_worker_outlives_its_parent(sig):
    """However the parent ends, its workers (re-parented orphans otherwise, waiting forever) end too."""
    parent = subprocess.Popen(
        [sys.executable, "-c", POOL_SCRIPT],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        workers = wait_for_workers(parent.pid, 2)
        os.kill(parent.pid, sig)
        parent.wait(timeout=30)
    finally:
        parent.kill()
        parent.communicate()
    assert still_running(workers, within=5) == []


def test_the_watchdog_ends_a_worker_whose_parent_died():
    """Where PR_SET_PDEATHSIG does not exist, a thread notices the parent's death. The parent passes
    its own pid (as worker_pool does), so a parent that dies while the child still starts is noticed."""
    orphan = "import os, sys; from data_reorg.workers import _watch_parent; _watch_parent(int(sys.argv[1]))"
    script = (
        f"import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', {orphan!r}, "
        "str(os.getpid())], stdout=subprocess.DEVNULL); print(child.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)
        assert running(child)
        parent.kill()
        parent.wait(timeout=30)
        assert still_running([child], within=10) == []
    finally:
        parent.kill()
        parent.wait(timeout=30)
        parent.stdout.close()
        if child is not None and running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize(
    "error",
    [
        DiskFullError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/manifest.jsonl"),
        WorkerDied("worker 4242 died (SIGKILL); rerun to resume"),
    ],
    ids=["disk-full", "worker-died"],
)
def test_both_clis_print_pool_and_disk_errors_plainly(monkeypatch, capsys, error):
    import data_reorg.cli
    import e2e.cli
    import e2e.cli.models

    def fail(args):
        raise error

    monkeypatch.setattr(data_reorg.cli, "_run_stats", fail)
    monkeypatch.setattr(e2e.cli.models, "run_models", fail)
    assert data_reorg.cli.main(["stats", "/nonexistent"]) == 2
    assert e2e.cli.main(["models"]) == 2
    assert capsys.readouterr().err == f"data-reorg: error: {error}\ne2e: error: {error}\n"
