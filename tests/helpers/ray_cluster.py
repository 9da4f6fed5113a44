"""A real local Ray cluster for tests (``ray start --head``), and a tiny corpus of demo clips to train on.

The cluster's processes all belong to the process group of the ``ray start`` that launched them, so
they are stopped by that group's id, never by name (other Ray clusters on the machine are left alone).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import stop_process_group

SMALL_SHM_BYTES = 200_000_000  # below this /dev/shm cannot hold the object store


RAY_STOP_GRACE_S = 3.0  # a throwaway cluster: its raylet and workers get SIGKILL after this (SIGTERM takes ~15 s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def local_ray_cluster(num_cpus: int = 2) -> Iterator[str]:
    """A one-node Ray cluster of ``num_cpus`` CPUs on localhost for one test module; yields its address.
    Skips the test when Ray cannot start here, but fails under ``CI=true``, where it must."""
    try:
        address, group = start_head(num_cpus)
    except RuntimeError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"a local Ray cluster must start under CI: {error}")
        pytest.skip(f"no local Ray cluster: {error}")
    try:
        yield address
    finally:
        if "ray" in sys.modules:  # a command run in this process connected to it
            sys.modules["ray"].shutdown()
        stop_process_group(group, RAY_STOP_GRACE_S)


def start_head(num_cpus: int = 2) -> tuple[str, int]:
    """``ray start --head`` on localhost at a free port: (its address, the process group of its processes);
    a RuntimeError saying why when it cannot start."""
    ray = Path(sys.executable).with_name("ray")
    port = free_port()
    command = [
        str(ray if ray.is_file() else shutil.which("ray") or "ray"),
        *("start", "--head", "--num-cpus", str(num_cpus), "--object-store-memory", "80000000"),
        *("--port", str(port), "--node-ip-address", "127.0.0.1", "--ray-client-server-port", str(free_port())),
        *("--include-dashboard=false", "--disable-usage-stats"),
    ]
    env = dict(os.environ)
    if not Path("/dev/shm").is_dir() or shutil.disk_usage("/dev/shm").free < SMALL_SHM_BYTES:
        env["RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE"] = "1"
    try:
        starter = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    except OSError as error:
        raise RuntimeError(f"cannot run {command[0]}: {error}") from None
    try:
        output, _ = starter.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        stop_process_group(starter.pid)
        raise RuntimeError("`ray start --head` did not finish within 180 s") from None
    if starter.returncode != 0:
        stop_process_group(starter.pid)
        raise RuntimeError(f"`ray start --head` failed ({starter.returncode}): {output[-1500:]}")
    return f"127.0.0.1:{port}", starter.pid


def twice(value: int) -> int:
    """A task for executors (in a module spawned workers import quickly): ``2 * value``, an error if negative."""
    if value < 0:
        raise ValueError(f"negative item {value}")
    return 2 * value
