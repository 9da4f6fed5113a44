"""Make the CPU-only PyTorch stack importable; a no-op where the real ops load.

Two problems on CPU-only machines (see README, "CPU stack"):

* torchvision 0.28 on PyPI is a CUDA build: its compiled ``nms`` op does not load on a CPU torch,
  and ``import torchvision`` fails. facenet-pytorch (``batched_nms``) and transformers model imports
  depend on it. If ``torchvision::nms`` does not resolve we define the op schema ourselves and register a
  pure-torch greedy NMS as its CPU kernel, then mark torchvision's ops as available.
* spconv's CPU build asserts CUDA in backward when it asks for the current CUDA stream; we make that
  query return the null stream when CUDA is unavailable.

This module must be imported before torchvision, facenet-pytorch or transformers in every process:
``e2e/__init__.py`` imports it, so any ``import e2e...`` (pytest, DataLoader workers, subprocesses) does.
"""

from __future__ import annotations

import importlib

import torch

_NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_library = None  # keeps the torch.library registration alive


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of boxes kept by greedy NMS, highest score first (torchvision.ops.nms semantics)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    boxes = boxes.float()
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order]
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    ix1 = torch.maximum(x1[:, None], x1[None, :])
    iy1 = torch.maximum(y1[:, None], y1[None, :])
    ix2 = torch.minimum(x2[:, None], x2[None, :])
    iy2 = torch.minimum(y2[:, None], y2[None, :])
    inter = (ix2 - ix1).clamp(min=0) * (iy2 - iy1).clamp(min=0)
    iou = inter / (areas[:, None] + areas[None, :] - inter).clamp(min=1e-12)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    overlaps = (iou > iou_threshold).cpu()
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def _torchvision_nms_loads() -> bool:
    try:
        _ = torch.ops.torchvision.nms  # resolving the op is the test: it raises where it does not load
        return True
    except (AttributeError, RuntimeError):
        return False


def _register_torchvision_nms() -> None:
    global _library
    _library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        _library.define(name + _NMS_SCHEMA)
        _library.impl(name, greedy_nms, "CPU")


def _patch_torchvision() -> None:
    try:
        import torchvision  # noqa: F401  (may already work: a CPU or matching CUDA build)
    except RuntimeError:
        if _torchvision_nms_loads():
            raise
        _register_torchvision_nms()
        import torchvision  # noqa: F811

        torchvision.extension._has_ops = lambda: True
        return
    if not _torchvision_nms_loads():
        _register_torchvision_nms()
        torchvision.extension._has_ops = lambda: True


def _patch_spconv_streams() -> None:
    """spconv's CPU build asks torch for a CUDA stream in backward; answer 0 (the null stream)."""
    if torch.cuda.is_available():
        return
    for module_name in ("spconv.pytorch.cppcore", "spconv.pytorch.ops", "spconv.pytorch.hash"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return
        if hasattr(module, "get_current_stream"):
            module.get_current_stream = lambda: 0


_patch_torchvision()
_patch_spconv_streams()
