"""Deterministic shards of a corpus pass (``data-reorg``, ``e2e preprocess``, ``e2e features``).

``--shard K/N`` (K counted from 1) processes the items whose stable key hashes to K: the first 8 bytes
of the key's SHA-256 modulo N, plus one, so every machine, Python version and run agrees. The key is
the item's id for the caches and the source video's path relative to the corpus root for
``data-reorg`` (every clip of a source is cut in one decoding pass, so a source is never split).

A shard writes only its own per-item files (atomically, as a plain run does) and, instead of the
shared outputs (manifest, reports, ``problems.jsonl``), one record ``shards/<K>-of-<N>.json`` listing
the items it could not process, each with the fingerprint of the input it tried. The merge reads
the per-item outputs and these records and writes the shared outputs exactly as one plain run
would; an item that is in neither (its shard has not run or did not finish) stops the merge with
the ids it misses. A plain run needs no merge: it reuses every finished item and does the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_reorg.executors import ExecutorSpec, make_executor
from data_reorg.io import write_text_atomic

SHARDS_FOLDER = "shards"
log = logging.getLogger("data_reorg")


class ShardsIncomplete(RuntimeError):
    """The merge found items that no shard has finished or recorded as failed."""


class ShardsFailed(RuntimeError):
    """Some shard tasks failed as a whole (each named with its error); the others' items are kept."""


@dataclass(frozen=True)
class Shard:
    index: int  # K, 1 <= K <= count
    count: int  # N

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: expected K/N with 1 <= K <= N (K counts from 1)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index

    def record_path(self, folder: Path | str) -> Path:
        return Path(folder) / SHARDS_FOLDER / f"{self.index}-of-{self.count}.json"


def shard_of(key: str, count: int) -> int:
    """The shard (1..count) of ``key``: stable across machines and runs (never Python's salted ``hash``)."""
    return 1 + int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard; a ValueError says what is expected."""
    index, slash, count = str(text).strip().partition("/")
    if not slash or not index.isdigit() or not count.isdigit():
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 1/4 (K counts from 1)")
    return Shard(int(index), int(count))


def shard_argument(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def all_shards(count: int) -> list[Shard]:
    return [Shard(index, count) for index in range(1, count + 1)]


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shard K/N``, ``--shards N`` and ``--merge``, in their own help group."""
    group = parser.add_argument_group("shards (split one pass over several machines)")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--shard",
        type=shard_argument,
        default=None,
        metavar="K/N",
        help="process only shard K of N (K from 1), for your own scheduler; then run once with --merge",
    )
    choice.add_argument(
        "--merge", action="store_true", help="write the shared outputs from the finished shards (processes nothing)"
    )
    choice.add_argument(
        "--shards",
        type=_positive,
        default=None,
        metavar="N",
        help="submit N shard tasks through --executor, then merge (default with slurm/ray: --jobs)",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


def dispatched_shards(args: argparse.Namespace) -> int | None:
    """How many shard tasks the command submits through its executor; None: run here as before."""
    if args.shards is not None:
        return args.shards
    return max(1, args.jobs) if args.executor != "local" else None


def write_record(shard: Shard, folder: Path | str, items: int, failed: list[dict]) -> Path:
    """Write the record of one finished shard: its item count and failures (each with ``fingerprint``)."""
    path = shard.record_path(folder)
    record = {"shard": str(shard), "items": items, "failed": sorted(failed, key=lambda row: row["id"])}
    write_text_atomic(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def recorded_failures(folder: Path | str) -> dict[tuple[str, str], dict]:
    """(id, fingerprint) -> failure row (without its fingerprint) from every shard record in ``folder``."""
    failures: dict[tuple[str, str], dict] = {}
    for path in sorted((Path(folder) / SHARDS_FOLDER).glob("*-of-*.json")):
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))["failed"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("%s is unreadable (%s): ignored", path, error)
            continue
        for row in rows:
            row = dict(row)
            failures.setdefault((row["id"], row.pop("fingerprint")), row)
    return failures


def merge_failures(pending: Iterable[tuple[str, str]], folder: Path | str, what: str) -> dict[str, dict]:
    """The recorded failure row of every pending (id, fingerprint); ShardsIncomplete names the ids that
    no shard has recorded (their shard has not run, has not finished, or ran on other inputs)."""
    failures = recorded_failures(folder)
    found, missing = {}, []
    for item, fingerprint in pending:
        if (item, fingerprint) in failures:
            found[item] = failures[item, fingerprint]
        else:
            missing.append(item)
    if missing:
        raise ShardsIncomplete(
            f"cannot merge {what}: {len(missing)} items are finished by no shard (e.g. {', '.join(missing[:5])}); "
            f"run their shards (or the command without --merge) first"
        )
    return found


def run_shards(spec: ExecutorSpec, fn: Callable[[Any], Any], tasks: Sequence[Any], names: Sequence[str]) -> list:
    """``fn(task)`` of every shard task through the executor of ``spec``; their values, in order.

    Raises ShardsFailed naming each failed shard with its error and log tail, after all have ended.
    """
    outcomes = make_executor(spec).map(fn, list(tasks), list(names))
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed:
        lines = [f"{outcome.name}: {outcome.error}" + _indented(outcome.log_tail) for outcome in failed]
        raise ShardsFailed(
            f"{len(failed)} of {len(outcomes)} shards failed (their finished items are kept; rerun the same "
            "command to do only what is missing):\n" + "\n".join(lines)
        )
    return [outcome.value for outcome in outcomes]


def _indented(text: str) -> str:
    return "".join(f"\n    {line}" for line in text.splitlines()[-5:]) if text else ""
