"""Seeding, optimiser and scheduler of a run."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from e2e.config import TrainConfig, UsageError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def freeze_text(model: nn.Module, train_config: TrainConfig) -> None:
    """``text_lr_factor = 0`` freezes ``model.text_parameters()`` (when the model has it)."""
    if train_config.text_lr_factor == 0 and hasattr(model, "text_parameters"):
        for parameter in model.text_parameters():
            parameter.requires_grad_(False)


def build_optimizer(model: nn.Module, train_config: TrainConfig) -> torch.optim.Adam:
    """Adam over the trainable parameters (frozen ones get no state); ``model.text_parameters()``
    (when the model has it) at ``lr * text_lr_factor``, ``model.encoder_parameters()`` (pretrained audio /
    visual encoders, when the model has them) at ``lr * model.encoder_lr_factor``."""
    text_ids = {id(p) for p in model.text_parameters()} if hasattr(model, "text_parameters") else set()
    encoder_ids = {id(p) for p in model.encoder_parameters()} if hasattr(model, "encoder_parameters") else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) not in text_ids | encoder_ids], "lr": train_config.lr},
        {"params": [p for p in trainable if id(p) in text_ids], "lr": train_config.lr * train_config.text_lr_factor},
        {
            "params": [p for p in trainable if id(p) in encoder_ids],
            "lr": train_config.lr * getattr(model, "encoder_lr_factor", 1.0),
        },
    ]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise UsageError("nothing to train: every parameter is frozen (train.text_lr_factor=0 with text only?)")
    return torch.optim.Adam(groups, weight_decay=train_config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, train_config: TrainConfig):
    """``cosine``: anneal each group's lr to 0 over ``epochs``, stepped once per epoch; ``none``: None."""
    if train_config.scheduler == "none":
        return None
    if train_config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_config.epochs)
    raise UsageError(f"train.scheduler must be none or cosine, got {train_config.scheduler!r}")
