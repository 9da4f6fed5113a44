"""The local engine: this process (``workers <= 1``) or the shared spawned pool of :mod:`data_reorg.workers`.

A task that raises becomes a failed outcome and the others go on. A worker that dies (a signal, the
out-of-memory killer) breaks the pool: the tasks not finished by then come back failed with
``worker <pid> died (SIGKILL); rerun to resume``, those finished keep their values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from data_reorg.executors.base import ExecutorSpec, TaskOutcome
from data_reorg.executors.outcomes import failed
from data_reorg.workers import _dead_worker, worker_pool


class LocalExecutor:
    def __init__(self, spec: ExecutorSpec):
        self.spec = spec

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], names: Sequence[str]) -> list[TaskOutcome]:
        if self.spec.workers <= 1 or len(items) <= 1:
            return [_call(fn, item, name) for item, name in zip(items, names, strict=True)]
        with worker_pool(min(self.spec.workers, len(items))) as pool:
            futures = [pool.submit(fn, item) for item in items]
            outcomes = [_result(future, name) for future, name in zip(futures, names, strict=True)]
            if any(isinstance(outcome, BrokenProcessPool) for outcome in outcomes):
                death = f"{_dead_worker(list(pool.started.values()))}; rerun to resume"
                outcomes = [
                    _worker_died(name, death) if isinstance(o, BrokenProcessPool) else o
                    for o, name in zip(outcomes, names, strict=True)
                ]
        return outcomes


def _call(fn: Callable[[Any], Any], item: Any, name: str) -> TaskOutcome:
    try:
        return TaskOutcome(name, ok=True, value=fn(item))
    except Exception as error:  # one task's failure is its outcome, the others go on
        return failed(name, error)


def _result(future: Future, name: str) -> TaskOutcome | BrokenProcessPool:
    """The outcome of one pool task, or the BrokenProcessPool error when its worker (or another) died."""
    try:
        return TaskOutcome(name, ok=True, value=future.result())
    except BrokenProcessPool as error:
        return error
    except Exception as error:
        return failed(name, error)


def _worker_died(name: str, death: str) -> TaskOutcome:
    """No traceback exists: the log tail is left to the task's own log, where the caller keeps one."""
    return TaskOutcome(name, ok=False, error=death)
