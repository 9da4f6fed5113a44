"""A real one-node SLURM cluster on localhost for tests: its own munged, slurmctld and slurmd.

Everything of one cluster lives in one temporary directory (munge key and socket, slurm.conf, spool,
state, logs) and uses free ports, so another cluster on the machine is left alone; clients find it by
``SLURM_CONF``, which the context manager sets for its duration (sbatch passes it on to the jobs). The
daemons are stopped by their process group ids, never by name. Job state comes from ``squeue`` (kept
``MinJobAge`` seconds after a job ends): this cluster has no accounting database, so ``sacct`` does not
answer, which the executor does not need.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import stop_process_group

PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(path) for path in (Path("/usr/sbin") / name, Path("/sbin") / name) if path.is_file()), None
    )


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"a one-node SLURM cluster must start under CI: {reason}")
    pytest.skip(f"no one-node SLURM cluster: {reason}")


def node_resources() -> tuple[int, int]:
    """CPUs and memory (MB, a little below the machine's total, as slurmd measures it) of this machine."""
    meminfo = Path("/proc/meminfo").read_text(encoding="utf-8").split()
    total_mb = int(meminfo[meminfo.index("MemTotal:") + 1]) // 1024
    return os.cpu_count() or 1, int(total_mb * 0.9)


def slurm_conf(root: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    """A one-node cluster: no cgroups (containers have none), no accounting, consumable cores."""
    cpus, memory_mb = node_resources()
    return "\n".join(
        [
            f"ClusterName=test{ctld_port}",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge.socket'}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/builtin",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MinJobAge=600",
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@contextlib.contextmanager
def local_slurm_cluster() -> Iterator[str]:
    """Start a one-node SLURM cluster on this machine; yields its partition with ``SLURM_CONF`` set.
    Skips the test without root or the Debian packages ``slurm-wlm`` and ``munge``, but fails under
    ``CI=true``, where the cluster must start."""
    if os.geteuid() != 0:
        _unavailable("its daemons (slurmd, munged) must run as root; run the tests as root")
    missing = [name for name in DAEMONS if _binary(name) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not found; install the Debian packages slurm-wlm and munge")
    root = Path(tempfile.mkdtemp(prefix="slurm-test-"))
    root.chmod(0o755)  # the jobs read their submitit folders below the tests' temporary dirs, also as root
    for name in ("state", "spool"):
        (root / name).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, socket.gethostname().split(".")[0], free_port(), free_port()), encoding="utf-8")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    groups: list[int] = []
    try:
        groups.append(_start_munged(root))
        groups.append(_start([_binary("slurmctld"), "-D", "-i", "-f", str(conf)], root / "slurmctld.out"))
        groups.append(_start([_binary("slurmd"), "-D", "-f", str(conf)], root / "slurmd.out"))
        _wait_idle(root)
        yield PARTITION
    finally:
        _cancel_all_jobs()
        for group in reversed(groups):
            stop_process_group(group)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)


def _start_munged(root: Path) -> int:
    """A private munged with its own key and socket (the machine's munged, if any, is not touched)."""
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    command = [
        *(_binary("munged"), "--foreground", "--force", "--key-file", str(key)),
        *("--socket", str(root / "munge.socket"), "--pid-file", str(root / "munged.pid")),
        *("--log-file", str(root / "munged.log"), "--seed-file", str(root / "munged.seed")),
    ]
    group = _start(command, root / "munged.out")
    deadline = time.monotonic() + 10
    while not (root / "munge.socket").exists():
        if time.monotonic() > deadline:
            stop_process_group(group)
            _unavailable(f"munged did not start: {_read(root / 'munged.out')}{_read(root / 'munged.log')}")
        time.sleep(0.1)
    return group


def _start(command: list, output: Path) -> int:
    with output.open("w") as stream:
        process = subprocess.Popen(
            [str(part) for part in command], stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process.pid


def _wait_idle(root: Path) -> None:
    """Wait until ``sinfo`` reports the node idle."""
    deadline, state = time.monotonic() + START_TIMEOUT_S, ""
    while time.monotonic() < deadline:
        probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
        state = (probe.stdout + probe.stderr).strip()
        if probe.returncode == 0 and state == "idle":
            return
        time.sleep(0.3)
    logs = "".join(_read(root / name) for name in ("slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log"))
    _unavailable(f"the node is not idle after {START_TIMEOUT_S:.0f} s (sinfo: {state!r}); logs:\n{logs[-3000:]}")


def _cancel_all_jobs() -> None:
    """Cancel what is left (a failed test's jobs) and wait for it to end, so that no job outlives slurmd."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10)
            if probe.returncode != 0 or not probe.stdout.strip():
                return
            time.sleep(0.3)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# --- task functions of the tests: here, in a module light to import, not in the test module, whose
# imports (torch, the whole CLI) would cost every SLURM job seconds


def twice(value: int) -> int:
    if value < 0:
        raise ValueError(f"negative item {value}")
    print(f"doubling {value}", file=sys.stderr)
    return 2 * value


def all_reduced_rank(value: int) -> dict:
    """A two-process DDP step on CPU (gloo): joins the process group from the SLURM task's environment."""
    import torch
    import torch.distributed as dist

    from e2e.training.distributed import cleanup, init_distributed

    context = init_distributed(torch.device("cpu"))
    total = torch.tensor([float(context.rank + value)])
    dist.all_reduce(total)
    cleanup(context)
    return {"rank": context.rank, "world_size": context.world_size, "sum": total.item()}


def dies_once(marker: str) -> str:
    """SIGKILLs its own process the first time (when ``marker`` does not exist yet), as the out-of-memory
    killer would; returns "survived" the next time."""
    if not Path(marker).exists():
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"
