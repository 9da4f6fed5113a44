"""Model registry: ``@register_model("name", inputs=...)`` on a builder ``(ModelConfig, class_names) -> nn.Module``.

``class_names`` are the dataset's classes in label order (their number sizes the output; EmoEmbs also
embeds their names).

Every registered model takes a :class:`e2e.batch.Batch` and returns a :class:`e2e.batch.ModelOutput`.
``inputs`` says which half of the batch it reads: ``raw`` (tokens, face crops, mel chunks: the
end-to-end models) or ``features`` (the cached two-stage feature sequences: the baselines). The data
side builds the matching dataset from it.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from e2e.config import ModelConfig

INPUT_KINDS = ("raw", "features")
_BUILDERS: dict[str, Callable[[ModelConfig, Sequence[str]], nn.Module]] = {}
_INPUTS: dict[str, str] = {}


def register_model(name: str, inputs: str = "raw"):
    if inputs not in INPUT_KINDS:
        raise ValueError(f"model {name!r}: inputs must be one of {', '.join(INPUT_KINDS)}, got {inputs!r}")

    def decorator(builder):
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name], _INPUTS[name] = builder, inputs
        return builder

    return decorator


def build_model(config: ModelConfig, class_names: Sequence[str]) -> nn.Module:
    _check_known(config.name)
    return _BUILDERS[config.name](config, list(class_names))


def model_inputs(name: str) -> str:
    """``raw`` or ``features``: what the model ``name`` reads from a batch."""
    _check_known(name)
    return _INPUTS[name]


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def _check_known(name: str) -> None:
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(available_models())}")
