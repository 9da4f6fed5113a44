"""End-to-end multimodal emotion recognition (FE2E, MESM and baselines) from reorganized clips."""

from e2e import compat  # noqa: F401  (must run before torchvision / facenet-pytorch / transformers)

__version__ = "0.1.0"
