"""The Ray engine: one Ray task per item on a running cluster (``--ray-address`` or ``RAY_ADDRESS``).

Nothing is started here: without an address, or when nothing answers there, the command stops with an
:class:`ExecutorUnavailable` naming the address (``auto`` finds a cluster ``ray start --head`` started on
this machine). Each task asks for the :class:`Resources` of the spec (a GPU fraction lets several small
runs share one GPU); a task whose worker process or node dies is re-run up to ``retries`` times by Ray
itself, an exception raised by the task is not (it would raise again). The workers import the task's
function by module path, so the package must be installed on every node. Their output reaches this
process's stderr prefixed by Ray with the task and pid.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from data_reorg.executors.base import ExecutorSpec, TaskOutcome
from data_reorg.executors.outcomes import ExecutorUnavailable, Progress, tail

CONNECT_TIMEOUT_S = 5.0
WAIT_STEP_S = 1.0


class RayExecutor:
    def __init__(self, spec: ExecutorSpec):
        self.spec = spec

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], names: Sequence[str]) -> list[TaskOutcome]:
        ray = connect(self.spec.ray_address)
        task, options = ray.remote(fn), task_options(self.spec)
        refs = [task.options(**options, name=name).remote(item) for item, name in zip(items, names, strict=True)]
        _wait(ray, refs, Progress(f"ray tasks on {self.spec.ray_address}", len(refs)))
        return [_outcome(ray, ref, name) for ref, name in zip(refs, names, strict=True)]


def task_options(spec: ExecutorSpec) -> dict:
    """``ray.remote`` options of one task: its CPUs, GPUs (fractions allowed), memory and retries."""
    resources = spec.resources
    options = {
        "num_cpus": resources.cpus,
        "num_gpus": resources.gpus,
        "max_retries": spec.retries,
        "retry_exceptions": False,
    }
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * 1024**3)
    return options


def connect(address: str | None):
    """The ``ray`` module, connected to the cluster at ``address`` (once per process)."""
    try:
        import ray
    except ImportError as error:
        raise ExecutorUnavailable(f"--executor ray needs the ray package ({error})") from None
    if ray.is_initialized():
        return ray
    if not address:
        raise ExecutorUnavailable(
            "--executor ray runs on a running Ray cluster: pass --ray-address HOST:PORT or set RAY_ADDRESS "
            "(start one with `ray start --head`; 'auto' finds one started on this machine)"
        )
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ExecutorUnavailable(f"no Ray cluster reachable at {address}: {error}") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail within seconds when nothing listens at ``HOST:PORT`` (``ray.init`` would wait minutes)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorUnavailable(f"--ray-address {address!r} is not HOST:PORT (nor 'auto' or ray://HOST:PORT)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ExecutorUnavailable(f"no Ray cluster reachable at {address}: {error}") from None


def _wait(ray, refs: list, progress: Progress) -> None:
    """Block until every task has ended, with a progress line on stderr every 30 s."""
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_STEP_S, fetch_local=False)
        progress.update(len(refs) - len(pending))


def _outcome(ray, ref, name: str) -> TaskOutcome:
    """The task's value, or its error: the task's own exception (with the remote traceback as log tail),
    or what Ray says of a worker or node that died after its retries."""
    try:
        return TaskOutcome(name, ok=True, value=ray.get(ref))
    except ray.exceptions.RayTaskError as error:
        cause = error.cause
        message = f"{type(cause).__name__}: {cause}" if cause is not None else str(error).splitlines()[-1]
        return TaskOutcome(name, ok=False, error=message, log_tail=tail(str(error)))
    except ray.exceptions.RayError as error:
        text = str(error)
        return TaskOutcome(name, ok=False, error=f"{type(error).__name__}: {tail(text, 1)}", log_tail=tail(text))
