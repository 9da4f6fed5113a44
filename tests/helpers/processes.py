"""Process inspection through /proc (no psutil): children of a pid, liveness that counts zombies as dead."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def default_signals() -> None:
    """``preexec_fn`` for a child the test signals: SIGINT and SIGHUP back to their default handling,
    whatever the test runner inherited (a shell's background job ignores SIGINT, ``nohup`` SIGHUP)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first, then the parent pid), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a killed orphan may wait unreaped for a while)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def children(parent: int) -> list[int]:
    """Running children of ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[1] == str(parent) and running(int(entry.name)):
                found.append(int(entry.name))
    return sorted(found)


def wait_for_workers(parent: int, count: int, busy: bool = False, timeout: float = 60.0) -> list[int]:
    """The pids of ``count`` spawned pool workers of ``parent`` once they run (``busy``: once each has a
    child process of its own, i.e. it is past its start-up and working, e.g. running ffmpeg)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [pid for pid in children(parent) if "spawn_main" in cmdline(pid)]
        if busy:
            workers = [pid for pid in workers if children(pid)]
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"process {parent} did not start {count} {'busy ' * busy}workers within {timeout} s")


def still_running(pids: list[int], within: float) -> list[int]:
    """The pids of ``pids`` still running after up to ``within`` seconds."""
    deadline = time.monotonic() + within
    alive = [pid for pid in pids if running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if running(pid)]
    return alive


def stop_process_group(group: int, grace_s: float = 15.0) -> None:
    """SIGTERM to a process group (a daemon or cluster the test started in its own session), SIGKILL to
    whatever is left after ``grace_s``; the group's leader is reaped when it is our child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(group, os.WNOHANG)
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
