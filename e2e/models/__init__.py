"""Models: importing this package imports every model module in it, and each registers its model with
:mod:`e2e.models.registry` (one model per file, as in timm; shared blocks in :mod:`e2e.models.layers`)."""

import importlib
import pkgutil

from e2e.models.registry import (
    available_models,
    build_model,
    check_task,
    config_from_dict,
    load_config,
    model_inputs,
    model_options,
    model_spec,
    models_for_task,
    register_model,
    shipped_models,
    split_options,
    switch_model,
    with_changes,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("fidelity", "layers", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "available_models",
    "build_model",
    "check_task",
    "config_from_dict",
    "load_config",
    "model_inputs",
    "model_options",
    "model_spec",
    "models_for_task",
    "register_model",
    "shipped_models",
    "split_options",
    "switch_model",
    "with_changes",
]
