"""Experiment configuration: dataclasses loaded from YAML, overridden by ``--set section.key=value``.

No global flags: everything a run depends on is in one :class:`ExperimentConfig`, saved with every
checkpoint. Unknown keys are errors that name the key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override names a key that does not exist, or a value of the wrong type."""


@dataclass
class DataConfig:
    data_dir: str = ""
    dataset: str = "iemocap"  # iemocap (single-label, 6 classes) | mosei (multi-label, 6 emotions)
    img_interval_ms: int = 500  # one face crop every img_interval_ms, from the clip start
    audio_features: str = "log_mel"  # log_mel (recommended) | power (faithful to the official code)
    max_frames: int = 0  # 0 = keep all sampled frames of an utterance
    max_chunks: int = 0  # 0 = keep all 400 ms mel chunks
    batch_size: int = 8
    num_workers: int = 0


@dataclass
class ModelConfig:
    name: str = "fe2e"
    modalities: str = "tav"  # any non-empty subset of t (text), a (audio), v (visual)
    text_model: str = "albert-base-v2"  # HF id or local folder; "minilm" = the offline MiniLM package
    text_max_length: int = 100
    text_random_init: bool = False  # build the text encoder from its config without pretrained weights
    cnn: str = "mesm_vgg"  # mesm_vgg (paper) | vgg11 | vgg11_bn (torchvision)
    cnn_weights: str | None = None  # torchvision weights name for vgg11/vgg11_bn, e.g. "DEFAULT"
    cnn_width: float = 1.0  # channel multiplier of mesm_vgg (1 = the paper; 0.25 for CPU demos)
    d_model: int = 64
    temporal_layers: int = 4
    temporal_heads: int = 4
    temporal_ffn: int = 2048
    dropout: float = 0.1
    positional_encoding: bool = True
    # MESM only
    top_p: float = 0.7
    sparse_blocks: int = 3
    attention_mode: str = "trainable"  # trainable | faithful
    # two-stage feature models (inputs="features"): d_model, temporal_* and dropout size their encoders
    aux_weight: float = 0.1  # weight of a model's own auxiliary losses (MISA, FDMER, MICA, ConKI, CARAT, TFR-Net)
    train_missing_rate: float = 0.0  # TFR-Net: fraction of feature frames masked at random while training


@dataclass
class TrainConfig:
    epochs: int = 40
    lr: float = 5e-5
    text_lr_factor: float = 0.1  # text encoder (and text head) lr = lr * text_lr_factor
    weight_decay: float = 0.0
    scheduler: str = "none"  # none | cosine
    grad_clip: float = 0.0  # 0 = no clipping
    early_stop_patience: int = 6
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # autocast to bfloat16 on CUDA only
    progress: bool = True
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
    for section_name, section_values in (values or {}).items():
        if not hasattr(config, section_name):
            raise ConfigError(f"{source}: unknown config section {section_name!r}")
        section = getattr(config, section_name)
        if not isinstance(section_values, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping")
        for key, value in section_values.items():
            _set_field(section, section_name, key, value, source)
    return config


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    """Read ``path`` (YAML with sections data/model/train), then apply ``section.key=value`` overrides."""
    values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else {}
    config = config_from_dict(values, str(path or "defaults"))
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: ExperimentConfig, override: str) -> None:
    dotted, sep, raw = override.partition("=")
    section_name, dot, key = dotted.strip().partition(".")
    if not sep or not dot:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    if not hasattr(config, section_name):
        raise ConfigError(f"override {override!r}: unknown config section {section_name!r}")
    _set_field(getattr(config, section_name), section_name, key, yaml.safe_load(raw), f"--set {override}")


def _set_field(section: Any, section_name: str, key: str, value: Any, source: str) -> None:
    names = {f.name: f for f in dataclasses.fields(section)}
    if key not in names:
        raise ConfigError(f"{source}: unknown config key {section_name}.{key!r}; "
                          f"known keys: {', '.join(sorted(names))}")
    default = getattr(section, key)
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ConfigError(f"{source}: {section_name}.{key} must be true or false, got {value!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if default is not None and value is not None and not isinstance(value, type(default)):
        raise ConfigError(f"{source}: {section_name}.{key} must be {type(default).__name__}, got {value!r}")
    setattr(section, key, value)
