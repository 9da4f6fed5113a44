"""``e2e status DIR``: the state of every job of a sweep or benchmark directory, wherever its jobs ran.

Only files are read: the job lists the runner wrote (``jobs.json``, a benchmark's
``pretrain_jobs.json``: any ``DIR/*.json`` holding a list of jobs with ``name`` and ``run_dir``) and
each run directory's own record (see :mod:`e2e.experiments.jobs`):

* ``done``: ``results.json`` exists;
* ``failed``: ``failed.json`` exists (its error and log are shown), no results;
* ``running``: ``state.json`` exists and its process still runs (on this host), or it ran on another
  host, so only that host could tell;
* ``pending``: nothing yet, or a ``state.json`` whose process on this host is gone (the command was
  killed: the next run resumes it, from ``checkpoints/last.pt`` when there is one).

A run directory is looked up in DIR by its name first, so a directory copied from a cluster reads the same.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from e2e.config import UsageError

STATES = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class JobStatus:
    name: str
    state: str
    run_dir: str
    detail: str = ""
    list_name: str = "jobs.json"


def job_lists(folder: Path) -> dict[str, list[dict]]:
    """The job lists of ``folder`` by file name; a usage error when it has none."""
    lists = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a job list (results, summaries)
        if isinstance(entries, list) and entries and all(_is_job(entry) for entry in entries):
            lists[path.name] = entries
    if not lists:
        raise UsageError(f"{folder} holds no job list (jobs.json): is it the --out of a benchmark or sweep?")
    return lists


def folder_status(folder: Path) -> list[JobStatus]:
    """Every job of every job list of ``folder`` (knowledge runs first, as they train first)."""
    folder = Path(folder)
    lists = job_lists(folder)
    order = sorted(lists, key=lambda name: (name == "jobs.json", name))
    return [job_status(folder, entry, name) for name in order for entry in lists[name]]


def job_status(folder: Path, entry: dict, list_name: str = "jobs.json") -> JobStatus:
    run_dir = _run_dir(folder, entry)
    name = entry["name"]
    if (run_dir / "results.json").is_file():
        return JobStatus(name, "done", str(run_dir), list_name=list_name)
    failure = _read(run_dir / "failed.json")
    if failure is not None:
        detail = f"{failure.get('error', '?')} (on {failure.get('engine', '?')}; log {failure.get('log_path', '?')})"
        return JobStatus(name, "failed", str(run_dir), detail, list_name)
    state = _read(run_dir / "state.json")
    resumable = " resumes from checkpoints/last.pt" if (run_dir / "checkpoints" / "last.pt").is_file() else ""
    if state is not None:
        where = f"{state.get('engine', '?')} on {state.get('host', '?')} pid {state.get('pid', '?')}"
        job_id = f" job {state['job_id']}" if state.get("job_id") else ""
        if _may_run(state):
            return JobStatus(
                name, "running", str(run_dir), f"{where}{job_id} since {state.get('started', '?')}", list_name
            )
        return JobStatus(
            name, "pending", str(run_dir), f"interrupted ({where} is gone);{resumable or ' restarts'}", list_name
        )
    return JobStatus(name, "pending", str(run_dir), resumable.strip(), list_name)


def counts(statuses: list[JobStatus]) -> dict[str, int]:
    return {state: sum(status.state == state for status in statuses) for state in STATES}


def format_status(folder: Path, statuses: list[JobStatus]) -> str:
    """One line of counts, then one line per job: state, name, run directory, detail."""
    total = counts(statuses)
    lines = [f"{folder}: {len(statuses)} jobs: " + ", ".join(f"{total[state]} {state}" for state in STATES)]
    width = max(len(status.name) for status in statuses)
    for status in statuses:
        detail = f"  {status.detail}" if status.detail else ""
        lines.append(f"  {status.state:<8} {status.name:<{width}}  {status.run_dir}{detail}")
    return "\n".join(lines)


def status_json(folder: Path, statuses: list[JobStatus]) -> dict:
    return {"dir": str(folder), "counts": counts(statuses), "jobs": [asdict(status) for status in statuses]}


def _is_job(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("run_dir"), str)


def _run_dir(folder: Path, entry: dict) -> Path:
    """``DIR/<name of the recorded run dir>`` when it exists (a copied or moved DIR), else the recorded path."""
    recorded = Path(entry["run_dir"])
    local = folder / recorded.name
    return local if local.is_dir() or not recorded.is_dir() else recorded


def _read(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _may_run(state: dict) -> bool:
    """False only when the recorded process is known to be gone: it ran on this host and its pid is dead."""
    if state.get("host") != socket.gethostname() or not isinstance(state.get("pid"), int):
        return True
    try:
        os.kill(state["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
