"""Models: importing this package registers every model with :mod:`e2e.models.registry`."""
from e2e.models.registry import available_models, build_model, register_model
from e2e.models import fe2e, mesm  # noqa: F401  (register "fe2e" and "mesm")

__all__ = ["available_models", "build_model", "register_model"]
