"""Models: importing this package imports every module in it, and each module registers its model(s)
with :mod:`e2e.models.registry` (one model per file, as in timm)."""
import importlib
import pkgutil

from e2e.models.registry import available_models, build_model, model_inputs, register_model

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["available_models", "build_model", "model_inputs", "register_model"]
