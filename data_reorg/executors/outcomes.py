"""Building outcomes the same way on every engine: the tail of a traceback or of a log file."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from data_reorg.executors.base import TaskOutcome

TAIL_LINES = 20


class ExecutorUnavailable(RuntimeError):
    """The chosen engine cannot run anything here (no cluster reachable, its package missing): a usage
    error naming what is missing, raised before any task is submitted."""


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def log_tail(path: Path | str | None, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of the log file ``path`` ("" when there is none, or it cannot be read)."""
    if not path:
        return ""
    try:
        return tail(Path(path).read_text(encoding="utf-8", errors="replace"), lines)
    except OSError:
        return ""


def failed(name: str, error: BaseException, log_path: str = "") -> TaskOutcome:
    """The outcome of a task that raised ``error``: its one-line message, the traceback's tail as the
    log tail (the log file's own tail where the engine keeps one)."""
    message = f"{type(error).__name__}: {error}"
    trace = "".join(traceback.format_exception(error))
    return TaskOutcome(name, ok=False, error=message, log_path=log_path, log_tail=log_tail(log_path) or tail(trace))


class Progress:
    """``<what>: 3/12 done, 1 failed, 4 min`` on stderr at most every ``every_s`` seconds while waiting."""

    def __init__(self, what: str, total: int, every_s: float = 30.0, stream=None):
        self.what, self.total, self.every_s, self.stream = what, total, every_s, stream
        self.started = self.last = time.monotonic()

    def update(self, done: int, failures: int = 0, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        failed_part = f", {failures} failed" if failures else ""
        minutes = (now - self.started) / 60
        print(
            f"{self.what}: {done}/{self.total} done{failed_part}, {minutes:.1f} min",
            file=self.stream or sys.stderr,
            flush=True,
        )
