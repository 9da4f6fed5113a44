"""Experiment configuration: dataclasses loaded from YAML, overridden by ``--set section.key=value``.

No global flags: everything a run depends on is in one :class:`ExperimentConfig`, saved with every
checkpoint. Unknown keys, values of the wrong type and values outside a field's declared range are
errors that name the key. A field declares its range once, in its metadata (:func:`bounded` and its
shorthands); :func:`check_value` applies it to any dataclass section.

Files and ``--set`` values are read with :class:`ConfigLoader`: YAML 1.1 as PyYAML reads it, except
that ``1e-3`` is the float 0.001 (YAML 1.2) rather than the string "1e-3".
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override names a key that does not exist, or a value of the wrong type or range."""


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also resolves exponent floats without a dot or exponent sign (``1e-3``, ``5E4``)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def parse_yaml(text: str, source: str) -> Any:
    """``text`` parsed with :class:`ConfigLoader`; a syntax error names ``source`` and its line."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML{where} ({getattr(error, 'problem', None) or error})") from None


@dataclass(frozen=True)
class Bounds:
    """The numbers a field accepts: ``low <= value`` (``low < value`` when ``low_open``) and ``value <= high``."""

    low: float
    high: float | None = None
    low_open: bool = False

    def admits(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}]"


def bounded(default: float, low: float, high: float | None = None, low_open: bool = False):
    """A dataclass field whose values must lie within :class:`Bounds` ``(low, high, low_open)``."""
    return field(default=default, metadata={"bounds": Bounds(low, high, low_open)})


def positive(default: float):
    return bounded(default, 0, low_open=True)


def non_negative(default: float):
    return bounded(default, 0)


def fraction(default: float):
    """A rate or probability, in [0, 1]."""
    return bounded(default, 0, 1)


@dataclass
class DataConfig:
    data_dir: str = ""
    dataset: str = "iemocap"  # iemocap (single-label, 6 classes) | mosei (multi-label, 6 emotions)
    img_interval_ms: int = positive(500)  # one face crop every img_interval_ms, from the clip start
    audio_features: str = "log_mel"  # log_mel (recommended) | power (faithful to the official code)
    max_frames: int = non_negative(0)  # 0 = keep all sampled frames of an utterance
    max_chunks: int = non_negative(0)  # 0 = keep all 400 ms mel chunks
    batch_size: int = positive(8)
    num_workers: int = non_negative(0)


@dataclass
class ModelConfig:
    name: str = "fe2e"
    modalities: str = "tav"  # any non-empty subset of t (text), a (audio), v (visual)
    text_model: str = "albert-base-v2"  # HF id or local folder; "minilm" = the offline MiniLM package
    text_max_length: int = positive(100)
    text_random_init: bool = False  # build the text encoder from its config without pretrained weights
    cnn: str = "mesm_vgg"  # mesm_vgg (paper) | vgg11 | vgg11_bn (torchvision)
    cnn_weights: str | None = None  # torchvision weights name for vgg11/vgg11_bn, e.g. "DEFAULT"
    cnn_width: float = positive(1.0)  # channel multiplier of mesm_vgg (1 = the paper; 0.25 for CPU demos)
    d_model: int = positive(64)
    temporal_layers: int = positive(4)
    temporal_heads: int = positive(4)
    temporal_ffn: int = positive(2048)
    dropout: float = fraction(0.1)
    positional_encoding: bool = True
    # MESM only
    top_p: float = bounded(0.7, 0, 1, low_open=True)  # fraction of attention mass kept
    sparse_blocks: int = positive(3)
    attention_mode: str = "trainable"  # trainable | faithful
    # two-stage feature models (inputs="features"): d_model, temporal_* and dropout size their encoders
    aux_weight: float = non_negative(0.1)  # weight of a model's own auxiliary losses (MISA, FDMER, MICA, ConKI, CARAT, TFR-Net)
    train_missing_rate: float = fraction(0.0)  # TFR-Net: fraction of feature frames masked at random while training


@dataclass
class TrainConfig:
    epochs: int = positive(40)
    lr: float = non_negative(5e-5)
    text_lr_factor: float = non_negative(0.1)  # text encoder (and text head) lr = lr * text_lr_factor
    weight_decay: float = non_negative(0.0)
    scheduler: str = "none"  # none | cosine
    grad_clip: float = non_negative(0.0)  # 0 = no clipping
    early_stop_patience: int = non_negative(6)  # 0 = never stop early
    seed: int = bounded(0, 0, 2**32 - 1)  # numpy's seed range
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # autocast to bfloat16 on CUDA only
    progress: bool = True  # progress bars and one line per epoch on stderr
    keep_last: bool = True  # false: delete checkpoints/last.pt once the run finishes (best.pt stays)
    # fine-tuning: before the first epoch of a fresh run, copy the parameters whose names start with
    # init_prefix from this checkpoint (e.g. ConKI's adapters pretrained on the other corpus)
    init_checkpoint: str = ""
    init_prefix: str = ""


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(values: dict[str, Any], source: str = "config") -> ExperimentConfig:
    config = ExperimentConfig()
    if not isinstance(values or {}, dict):
        raise ConfigError(f"{source}: must be a mapping of sections (data, model, train), got {values!r}")
    for section_name, section_values in (values or {}).items():
        section = _section(config, section_name, source)
        if not isinstance(section_values, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping")
        for key, value in section_values.items():
            _set_field(section, section_name, key, value, source)
    return config


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read ``path`` (YAML with sections data/model/train), then apply ``section.key=value`` overrides."""
    values = parse_yaml(Path(path).read_text(encoding="utf-8"), str(path)) if path else {}
    config = config_from_dict(values, str(path or "defaults"))
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: ExperimentConfig, override: str) -> None:
    dotted, sep, raw = override.partition("=")
    section_name, dot, key = dotted.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    source = f"--set {override}"
    _set_field(_section(config, section_name, source), section_name, key, parse_yaml(raw, source), source)


def check_value(section: Any, section_name: str, key: str, value: Any, source: str) -> Any:
    """``value`` for field ``key`` of the dataclass ``section``: of the field's annotated type (an int
    is accepted for a float field and becomes a float; a bool is never a number) and within the
    field's :class:`Bounds` if it declares them. Raises ConfigError naming ``source`` and the key."""
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(f"{source}: unknown config key {section_name}.{key!r}; "
                          f"known keys: {', '.join(sorted(fields))}")
    allowed = _annotated_types(type(section), key)
    if type(value) is int and float in allowed and int not in allowed:
        value = float(value)
    if type(value) not in allowed:
        expected = "true or false" if allowed == (bool,) else " or ".join(
            "None" if kind is type(None) else kind.__name__ for kind in allowed)
        raise ConfigError(f"{source}: {section_name}.{key} must be {expected}, got {value!r}")
    bounds = fields[key].metadata.get("bounds")
    if bounds is not None and value is not None and not bounds.admits(value):
        raise ConfigError(f"{source}: {section_name}.{key} must be {bounds}, got {value!r}")
    return value


def _section(config: ExperimentConfig, name: str, source: str) -> Any:
    sections = [f.name for f in dataclasses.fields(config)]
    if name not in sections:
        raise ConfigError(f"{source}: unknown config section {name!r}; known sections: {', '.join(sections)}")
    return getattr(config, name)


def _set_field(section: Any, section_name: str, key: str, value: Any, source: str) -> None:
    setattr(section, key, check_value(section, section_name, key, value, source))


def _annotated_types(cls: type, key: str) -> tuple[type, ...]:
    """The types field ``key`` of dataclass ``cls`` admits: ``(str, NoneType)`` for ``str | None``."""
    annotation = typing.get_type_hints(cls)[key]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)
