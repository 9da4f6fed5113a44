"""The one process pool of every command with ``--jobs`` (``data-reorg``, ``e2e preprocess``, ``e2e sweep``).

Its workers never outlive the process that started them, however that process ends: on Linux each
worker asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), elsewhere a watchdog
thread polls the parent's pid; a worker still starting up when its parent dies exits as soon as its
start-up imports are done. Workers ignore SIGINT, so Ctrl-C reaches only the parent, which kills them
at once. (A program a worker runs, e.g. ffmpeg, is not a worker: it ends when its own job is done.)
A worker that dies (a signal, the out-of-memory killer) is reported as
``worker <pid> died (SIGKILL); rerun to resume`` instead of a ``BrokenProcessPool`` traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_INTERVAL_S = 0.5


class WorkerDied(RuntimeError):
    """A worker process of a :func:`worker_pool` ended abruptly; finished work is kept, so a rerun resumes."""


class _Pool(ProcessPoolExecutor):
    """Remembers every worker it starts: the executor itself forgets them once it is broken or shut down."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started: dict[int, multiprocessing.Process] = {}

    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        self.started.update(self._processes or {})  # workers are started on demand, by submit
        return future


@contextlib.contextmanager
def worker_pool(jobs: int, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``jobs`` spawned workers, each running ``initializer(*initargs)`` first.

    Spawned, never forked: forking a process whose threads (torch pools, tqdm's monitor) are running
    can deadlock. Leaving the block, normally or by an error in one task, waits for every task, so the
    work of the others is kept (a rerun then redoes only what failed); by an interrupt
    (KeyboardInterrupt, SystemExit, a generator closed early) the workers are killed at once. A dead
    worker raises :class:`WorkerDied`.
    """
    pool = _Pool(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    try:
        yield pool
    except BrokenProcessPool as error:
        raise WorkerDied(f"{_dead_worker(list(pool.started.values()))}; rerun to resume") from error
    except Exception:
        raise
    except BaseException:
        for process in pool.started.values():
            with contextlib.suppress(OSError, ValueError):
                process.kill()
        raise
    finally:
        pool.shutdown(wait=True)


def _dead_worker(workers: list[multiprocessing.Process]) -> str:
    """``worker <pid> died (<how>)`` for the worker that broke the pool.

    The executor terminates the other workers (SIGTERM) once one dies, so a worker that ended any
    other way is the cause; if all got SIGTERM, any of them is.
    """
    for process in workers:
        process.join(timeout=5)
    died = [process for process in workers if process.exitcode not in (None, 0)]
    if not died:
        return "a worker died"
    cause = next((process for process in died if process.exitcode != -signal.SIGTERM), died[0])
    return f"worker {cause.pid} died ({_how(cause.exitcode)})"


def _how(exitcode: int) -> str:
    """``SIGKILL`` for a process killed by signal 9 (exit code -9), ``exit status 3`` for exit code 3."""
    if exitcode > 0:
        return f"exit status {exitcode}"
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def _start_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not _kill_me_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent:  # the parent died before this worker could ask to follow it
        os._exit(1)
    if initializer is not None:
        initializer(*initargs)


def _kill_me_with_parent() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent dies; False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """Exit this process as soon as ``parent`` is no longer its parent (it died; we were re-parented)."""
    while os.getppid() == parent:
        time.sleep(WATCHDOG_INTERVAL_S)
    os._exit(1)
