"""Train/valid/test assignment: seeded random, published lists, or held-out groups.

Every mode is a pure function of the kept ids (and their groups), so the same inputs and seed give the
same split on any machine: ids are sorted before a seeded ``random.Random`` shuffles them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources

from data_reorg.manifest import SPLITS, Drop

SHIPPED_LISTS = {"mesm_iemocap", "mesm_mosei", "mosei_sdk_folds"}
DEFAULT_RATIOS = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class SplitSpec:
    """How to split. ``mode``: random | list | group.

    * random: ``ratios`` of the sorted ids shuffled with ``seed``;
    * list: ids looked up in a shipped list set (``list_name``), by utterance id or by ``group``
      when ``by_group`` (MOSEI SDK folds list video ids);
    * group: ``test_groups`` / ``valid_groups`` held out, the rest train (IEMOCAP sessions).
    """

    mode: str = "random"
    seed: int = 0
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    list_name: str | None = None
    by_group: bool = False
    test_groups: tuple[str, ...] = ()
    valid_groups: tuple[str, ...] = ()


@dataclass
class SplitResult:
    assignment: dict[str, str] = field(default_factory=dict)
    drops: list[Drop] = field(default_factory=list)
    missing_from_corpus: list[str] = field(default_factory=list)


def random_split_spec(seed: int, ratios: Sequence[float] | str = DEFAULT_RATIOS) -> SplitSpec:
    """The ``random`` policy. ``ratios`` may be the CLI's comma-separated text: it is read only here,
    so a bad value is an error only where a random split needs it."""
    return SplitSpec("random", seed, parse_ratios(ratios))


def parse_ratios(ratios: Sequence[float] | str) -> tuple[float, float, float]:
    """(train, valid, test) from three numbers or their comma-separated text; ValueError otherwise."""
    try:
        values = tuple(float(part) for part in (ratios.split(",") if isinstance(ratios, str) else ratios))
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3:
        raise ValueError(f"--ratios must be three comma-separated numbers, got {ratios!r}")
    return values


def load_split_lists(name: str) -> dict[str, list[str]]:
    """The shipped list set ``name`` as {split: ids}; ids stay strings (``81406`` is a video id)."""
    if name not in SHIPPED_LISTS:
        raise ValueError(f"unknown split list set {name!r}; shipped: {sorted(SHIPPED_LISTS)}")
    folder = resources.files("data_reorg") / "split_lists" / name
    return {split: (folder / f"{split}.txt").read_text(encoding="ascii").split() for split in SPLITS}


def assign_splits(spec: SplitSpec, groups: dict[str, str]) -> SplitResult:
    """Assign each id of ``groups`` (id -> group) to a split, or drop it with a reason."""
    if spec.mode == "random":
        return _random_split(sorted(groups), spec.seed, spec.ratios)
    if spec.mode == "list":
        return _list_split(groups, spec)
    if spec.mode == "group":
        return _group_split(groups, spec)
    raise ValueError(f"unknown split mode {spec.mode!r}")


def _random_split(ids: list[str], seed: int, ratios: tuple[float, float, float]) -> SplitResult:
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers, got {ratios}")
    total = sum(ratios)
    shuffled = list(ids)
    random.Random(seed).shuffle(shuffled)
    n_train = round(len(ids) * ratios[0] / total)
    n_valid = round(len(ids) * ratios[1] / total)
    result = SplitResult()
    for position, item in enumerate(shuffled):
        split = "train" if position < n_train else "valid" if position < n_train + n_valid else "test"
        result.assignment[item] = split
    return result


def _list_split(groups: dict[str, str], spec: SplitSpec) -> SplitResult:
    lists = load_split_lists(spec.list_name)
    lookup = {key: split for split, keys in lists.items() for key in keys}
    result = SplitResult()
    for item in sorted(groups):
        key = groups[item] if spec.by_group else item
        if key in lookup:
            result.assignment[item] = lookup[key]
        else:
            unit = f"video {key}" if spec.by_group else "utterance"
            result.drops.append(Drop(item, f"{unit} is in no {spec.list_name} split list"))
    present = set(groups.values()) if spec.by_group else set(groups)
    result.missing_from_corpus = sorted(set(lookup) - present)
    return result


def _group_split(groups: dict[str, str], spec: SplitSpec) -> SplitResult:
    overlap = set(spec.test_groups) & set(spec.valid_groups)
    if overlap:
        raise ValueError(f"groups {sorted(overlap)} cannot be both test and valid")
    result = SplitResult()
    for item in sorted(groups):
        group = groups[item]
        result.assignment[item] = (
            "test" if group in spec.test_groups else "valid" if group in spec.valid_groups else "train"
        )
    return result
