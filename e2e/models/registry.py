"""Model registry: the only list of models. ``@register_model("name", options=Options, ...)`` on a builder
``(options, class_names) -> nn.Module``.

Like timm's ``default_cfgs`` and transformers' ``config_class``, each model file declares its options
class (a :class:`~e2e.config.ModelConfig` subclass with its paper's defaults) and registers it with
the model, together with what the rest of the toolkit must know about it:

* ``inputs``: which half of a :class:`~e2e.data.batch.Batch` it reads, ``raw`` (tokens, face crops,
  mel chunks: the end-to-end models) or ``features`` (the cached two-stage feature sequences);
* ``sparse_traces``: its outputs carry per sparse block the kept sites and attention weights
  (``extras["sparse_masks"]`` / ``extras["attention"]``), used by FLOPs counts and attention maps;
* ``pretrain_prefix``: parameters (name prefix) pretrained on another corpus before fine-tuning
  (ConKI's knowledge adapters), or ``""``;
* ``tasks``: the ``data.task`` values it can train on (``emotion``, ``sentiment``, ``vad``);
* ``fidelity``: its :class:`~e2e.models.fidelity.FidelityTable` (the paper's settings, our ``paper`` and
  ``improved`` presets), or None where none is written yet.

``class_names`` are the dataset's classes in label order, or a regression task's targets
(``("sentiment",)``, ``("valence", "activation", "dominance")``): their number sizes the output;
EmoEmbs also embeds their names. Every model takes a ``Batch`` and returns a :class:`~e2e.data.batch.ModelOutput`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from e2e import config as config_module
from e2e.config import ConfigError, ExperimentConfig, ModelConfig
from e2e.models.fidelity import FidelityTable

INPUT_KINDS = ("raw", "features")
TASKS = ("emotion", "sentiment", "vad")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[[ModelConfig, list[str]], nn.Module]
    options: type[ModelConfig]
    inputs: str = "raw"
    sparse_traces: bool = False
    pretrain_prefix: str = ""
    tasks: tuple[str, ...] = ("emotion",)
    fidelity: FidelityTable | None = None


_SPECS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    options: type[ModelConfig],
    inputs: str = "raw",
    sparse_traces: bool = False,
    pretrain_prefix: str = "",
    tasks: Sequence[str] = ("emotion",),
    fidelity: FidelityTable | None = None,
):
    if inputs not in INPUT_KINDS:
        raise ValueError(f"model {name!r}: inputs must be one of {', '.join(INPUT_KINDS)}, got {inputs!r}")
    if not tasks or set(tasks) - set(TASKS):
        raise ValueError(f"model {name!r}: tasks must be a non-empty subset of {', '.join(TASKS)}, got {tasks!r}")
    if options.name != name:
        raise ValueError(f"model {name!r}: its options class {options.__name__} has name default {options.name!r}")

    def decorator(builder):
        if name in _SPECS:
            raise ValueError(f"model {name!r} is registered twice")
        _SPECS[name] = ModelSpec(name, builder, options, inputs, sparse_traces, pretrain_prefix, tuple(tasks), fidelity)
        return builder

    return decorator


def model_spec(name: str) -> ModelSpec:
    """What is registered for model ``name``; a ConfigError naming the registered models if none."""
    if name not in _SPECS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(available_models())}")
    return _SPECS[name]


def model_options(name: str) -> type[ModelConfig]:
    return model_spec(name).options


def model_inputs(name: str) -> str:
    """``raw`` or ``features``: what the model ``name`` reads from a batch."""
    return model_spec(name).inputs


def available_models() -> list[str]:
    """Every registered model, including any registered from outside the package (a user's, a test's)."""
    return sorted(_SPECS)


def shipped_models() -> list[str]:
    """The models this package ships (registered by a module of :mod:`e2e.models`): what ``all`` means."""
    return sorted(name for name, spec in _SPECS.items() if spec.builder.__module__.startswith("e2e.models."))


def build_model(config: ModelConfig, class_names: Sequence[str]) -> nn.Module:
    spec = model_spec(config.name)
    if not isinstance(config, spec.options):
        raise TypeError(f"model {config.name!r} is built from {spec.options.__name__}, got {type(config).__name__}")
    return spec.builder(config, list(class_names))


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """A config file (layered over its ``base:`` files) plus ``--set`` overrides, checked against the
    chosen model's registered options and tasks; see :mod:`e2e.config`. A ``data.source`` file is read
    to record its feature sizes (``model.input_dims``, :func:`e2e.data.benchmark_files.with_file_dims`)."""
    source = str(path or "config")
    config = check_task(config_module.load_config(path, overrides, model_options), source)
    if config.data.source == config_module.SOURCE_CLIPS:
        return config
    from e2e.data.benchmark_files import with_file_dims  # reads the file; only for file sources

    return with_file_dims(config, source, model_inputs(config.model.name))


def models_for_task(task: str) -> list[str]:
    """The registered models that can train on ``data.task`` = ``task``."""
    return [name for name in available_models() if task in _SPECS[name].tasks]


def check_task(config: ExperimentConfig, source: str) -> ExperimentConfig:
    """``config``, or a ConfigError naming ``source``, the model, its tasks and the models that do
    support ``data.task``."""
    spec, task = model_spec(config.model.name), config.data.task
    if task not in spec.tasks:
        raise ConfigError(
            f"{source}: model {spec.name!r} does not support data.task={task!r} (it supports "
            f"{', '.join(spec.tasks)}); models for {task}: {', '.join(models_for_task(task)) or 'none'}"
        )
    return config


def config_from_dict(values: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """A config from one mapping (a checkpoint's or ``results.json``'s ``config``), checked the same way."""
    return check_task(config_module.build_config([(values, source)], model_options), source)


def with_changes(config: ExperimentConfig, changes: dict[str, Any], source: str) -> ExperimentConfig:
    """``config`` with dotted keys changed (``{"model.top_p": 0.5}``): typed values, checked as if loaded."""
    layer: dict[str, dict[str, Any]] = {}
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        layer.setdefault(section, {})[key] = value
    return check_task(
        config_module.build_config([(config.to_dict(), "config"), (layer, source)], model_options), source
    )


def split_options(name: str, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``values`` (a model section) split into the options model ``name`` has and the sorted names of
    the others."""
    known = {option.name for option in dataclasses.fields(model_options(name))}
    return {key: value for key, value in values.items() if key in known}, sorted(set(values) - known)


def switch_model(config: ExperimentConfig, name: str, source: str) -> ExperimentConfig:
    """``config`` for model ``name``: the model options both models have carry over, the others are
    left behind (MESM's ``top_p`` for its FE2E reference); data and train settings are kept."""
    carried, _ = split_options(name, dataclasses.asdict(config.model))
    values = {**config.to_dict(), "model": {**carried, "name": name}}
    return check_task(config_module.build_config([(values, source)], model_options), source)
