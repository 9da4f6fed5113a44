"""Options several commands share, declared once, and the argument types they need."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_reorg.executors import ExecutorSpec
from data_reorg.executors.options import add_executor_arguments, executor_spec
from e2e.config import REPO_CONFIGS, DataConfig, UsageError, parse_override, resolve_config_path


def add_config(parser: argparse.ArgumentParser, required: bool = True, help: str = "YAML config file") -> None:
    parser.add_argument(
        "--config",
        type=config_path,
        required=required,
        help=f"{help} (relative paths also resolve from the project's {REPO_CONFIGS.parent.name}/ folder)",
    )


def override_task(overrides: list[str]) -> str:
    """The ``data.task`` the last ``--set data.task=...`` names, else the default (what ``--models all``
    is filtered by)."""
    tasks = [parse_override(override)[0].get("data", {}).get("task") for override in overrides]
    return str(next((task for task in reversed(tasks) if task is not None), DataConfig.task))


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable)",
    )


def add_out(parser: argparse.ArgumentParser, help: str = "output folder", required: bool = True) -> None:
    parser.add_argument("--out", type=Path, required=required, default=None, help=help)


def add_device(parser: argparse.ArgumentParser, what: str = "device") -> None:
    parser.add_argument(
        "--device", default="auto", help=f"{what}: auto (CUDA when available, like train.device), cpu, cuda or cuda:N"
    )


def add_data_dir(parser: argparse.ArgumentParser, required: bool = True, positional: bool = False) -> None:
    """``--data-dir DIR`` (alias ``--data``); with ``positional`` also ``DATA_DIR`` as the first argument."""
    if positional:
        parser.add_argument("data_dir_arg", nargs="?", type=Path, default=None, metavar="DATA_DIR")
    parser.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        type=Path,
        default=None,
        required=required and not positional,
        help="a reorganized corpus (data-reorg output)",
    )


def data_dir(args: argparse.Namespace) -> Path:
    """The data directory given positionally or as ``--data-dir``; a usage error if neither or both differ."""
    positional, option = getattr(args, "data_dir_arg", None), args.data_dir
    if positional and option and positional != option:
        raise UsageError(f"two data directories given: {positional} and --data-dir {option}")
    if not (positional or option):
        raise UsageError("no data directory given: pass DATA_DIR or --data-dir DIR")
    return positional or option


def add_seeds(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--seeds", type=seeds, default=seeds(default), help="comma-separated seeds")


def add_jobs(parser: argparse.ArgumentParser, help: str = "runs trained in parallel processes") -> None:
    parser.add_argument("--jobs", type=int, default=1, help=help)


def add_dispatch(parser: argparse.ArgumentParser, help: str = "runs trained in parallel processes") -> None:
    """``--jobs N`` (this machine's pool) and ``--executor local|slurm|ray`` with its resources per run."""
    add_jobs(parser, help)
    add_executor_arguments(parser)


def dispatch(args: argparse.Namespace) -> ExecutorSpec:
    """Where the runs train; the engine's own logs (SLURM's) go to ``OUT/executor_logs``."""
    return executor_spec(args, workers=args.jobs, log_dir=args.out / "executor_logs")


def seeds(text: str) -> list[int]:
    try:
        return [int(seed) for seed in text.split(",") if seed.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None


def config_path(text: str) -> Path:
    return resolve_config_path(Path(text))
