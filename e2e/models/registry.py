"""Model registry: ``@register_model("name")`` on a builder ``(ModelConfig, num_classes) -> nn.Module``.

Every registered model takes a :class:`e2e.batch.Batch` and returns a :class:`e2e.batch.ModelOutput`.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from e2e.config import ModelConfig

_BUILDERS: dict[str, Callable[[ModelConfig, int], nn.Module]] = {}


def register_model(name: str):
    def decorator(builder):
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def build_model(config: ModelConfig, num_classes: int) -> nn.Module:
    if config.name not in _BUILDERS:
        raise KeyError(f"unknown model {config.name!r}; registered: {', '.join(available_models())}")
    return _BUILDERS[config.name](config, num_classes)


def available_models() -> list[str]:
    return sorted(_BUILDERS)
