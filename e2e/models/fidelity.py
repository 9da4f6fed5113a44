"""Fidelity tables: how a model's ``paper`` and ``improved`` presets relate to its paper.

A model named after a paper registers a :class:`FidelityTable` (``register_model(..., fidelity=...)``):
one :class:`Setting` per choice that changes results, with the paper's / official implementation's
value and where it is written, the value of our ``paper`` preset (the official one unless a row says
why not) and of our ``improved`` preset. Rows without a config key record behaviour fixed in code
(an official defect we do not repeat, say).

The table is the reference a run is compared with: :meth:`FidelityTable.record` names the preset a
config is (``paper``, ``improved`` or ``custom``) and lists every keyed setting whose value differs
from the ``paper`` preset; the trainer writes that into ``results.json``. ``docs/fidelity/<model>.md``
is :meth:`FidelityTable.markdown`, and a test checks the shipped configs against the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SAME = object()  # "as in the column before"


@dataclass(frozen=True)
class PerDataset:
    """A value that depends on ``data.dataset`` (a paper's per-dataset table), e.g.
    ``PerDataset({"iemocap": 0.25, "mosei": 0.1})``."""

    values: dict[str, Any]

    def of(self, dataset: str) -> Any:
        if dataset not in self.values:
            raise KeyError(f"no value for dataset {dataset!r} (has {', '.join(sorted(self.values))})")
        return self.values[dataset]

    def __str__(self) -> str:
        return ", ".join(f"{dataset}: {_cell(value)}" for dataset, value in self.values.items())


def _for(value: Any, dataset: str) -> Any:
    return value.of(dataset) if isinstance(value, PerDataset) else value


@dataclass(frozen=True)
class Setting:
    """One row. ``official``: the paper's / official code's value, in our config's terms where ``key`` is
    set; ``paper`` / ``improved`` default to the column before; ``why`` explains every difference."""

    setting: str
    official: Any
    source: str
    key: str | None = None
    paper: Any = _SAME
    improved: Any = _SAME
    why: str = ""

    @property
    def paper_value(self) -> Any:
        return self.official if self.paper is _SAME else self.paper

    @property
    def improved_value(self) -> Any:
        return self.paper_value if self.improved is _SAME else self.improved


@dataclass(frozen=True)
class FidelityTable:
    model: str
    reference: str  # the paper and its official code
    settings: tuple[Setting, ...]

    def keyed(self) -> list[Setting]:
        return [setting for setting in self.settings if setting.key is not None]

    def preset(self, name: str, dataset: str) -> dict[str, Any]:
        """The dotted config keys and values of preset ``paper`` or ``improved`` on ``dataset``."""
        if name not in ("paper", "improved"):
            raise ValueError(f"preset must be 'paper' or 'improved', got {name!r}")
        return {s.key: _for(s.paper_value if name == "paper" else s.improved_value, dataset) for s in self.keyed()}

    def covers(self, dataset: str) -> bool:
        """Whether every per-dataset value of the table has one for ``dataset``."""
        values = [value for s in self.keyed() for value in (s.paper_value, s.improved_value)]
        return all(dataset in value.values for value in values if isinstance(value, PerDataset))

    def record(self, config: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """What ``results.json`` keeps: the preset ``config`` (an ``ExperimentConfig.to_dict()``) matches and
        its deviations from the ``paper`` preset of its ``data.dataset``,
        ``{key: {"paper": value, "value": value}}``."""
        dataset = config["data"]["dataset"]
        if not self.covers(dataset):  # e.g. MOSI read from a feature file: no preset of the table is for it
            return {"preset": None, "deviations": None}
        paper = self.preset("paper", dataset)
        values = {key: _lookup(config, key) for key in paper}
        deviations = {
            key: {"paper": value, "value": values[key]}
            for key, value in paper.items()
            if not _equal(values[key], value)
        }
        if not deviations:
            name = "paper"
        elif all(_equal(values[key], value) for key, value in self.preset("improved", dataset).items()):
            name = "improved"
        else:
            name = "custom"
        return {"preset": name, "deviations": deviations}

    def markdown(self) -> str:
        """The table as ``docs/fidelity/<model>.md`` holds it."""
        lines = [
            f"# Fidelity: {self.model}",
            "",
            f"Reference: {self.reference}.",
            "",
            "Generated from the model's registered table (`e2e models --fidelity "
            f"{self.model}`); `configs/<dataset>/{self.model}.yaml` is the `paper` preset and "
            f"`configs/<dataset>/{self.model}-improved.yaml` the `improved` one. A key in backticks is a "
            "config setting; a row without one is fixed in code.",
            "",
            "| setting | key | paper / official | source | our `paper` | our `improved` | why |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in self.settings:
            key = f"`{s.key}`" if s.key else "(code)"
            cells = (s.setting, key, _cell(s.official), s.source, _cell(s.paper_value), _cell(s.improved_value), s.why)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


UNREAD = "not read (see source)"
OURS = "our choice where the paper's value could not be read; to be checked against the paper"


def unread_setting(setting: str, source: str, key: str, value: Any) -> Setting:
    """A row whose paper value could not be read (``source`` says why): our ``value`` in both presets."""
    return Setting(setting, UNREAD, source, key, paper=value, why=OURS)


def bf16_setting(setting: str, official: Any, source: str, why: str) -> Setting:
    """The ``train.bf16`` row: fp32 in the paper / official code (``official`` as the table words it), so
    off in the ``paper`` preset; bf16 autocast on CUDA in the ``improved`` one, for the reason ``why``."""
    return Setting(setting, official, source, "train.bf16", paper=False, improved=True, why=why)


def _lookup(config: dict[str, dict[str, Any]], key: str) -> Any:
    section, _, name = key.partition(".")
    try:
        return config[section][name]
    except KeyError:
        raise KeyError(f"fidelity key {key!r} is not a setting of this config") from None


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(b)))
    return a == b


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("|", "\\|")
