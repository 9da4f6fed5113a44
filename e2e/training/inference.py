"""The inference loop: probabilities of a model over a dataset, and a checkpoint's metrics on a split."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from e2e.config import ExperimentConfig, UsageError
from e2e.data.batch import Batch
from e2e.data.bundle import SPLITS, DataBundle, build_datasets
from e2e.models import model_inputs
from e2e.training import distributed
from e2e.training.checkpoint import check_class_names, load_checkpoint, model_from_checkpoint
from e2e.training.distributed import DistContext
from e2e.training.metrics import compute_metrics, is_single_label

SINGLE_PROCESS = DistContext()  # no DDP: this process sees the whole dataset


def evaluate_checkpoint(
    ckpt_path: Path | str,
    split: str = "test",
    data_dir: Path | str | None = None,
    datasets: DataBundle | None = None,
    device: str | None = None,
) -> dict:
    """Metrics of a checkpoint on ``split`` at the thresholds stored in it (never re-tuned).

    The model and data settings come from the checkpoint's config; ``data_dir`` and ``device``
    (default: the stored ``train.device``) override it, ``datasets`` replaces the data entirely.
    """
    return checkpoint_evaluator(ckpt_path, data_dir, datasets, device)(split)


def checkpoint_evaluator(
    ckpt_path: Path | str,
    data_dir: Path | str | None = None,
    datasets: DataBundle | None = None,
    device: str | None = None,
) -> Callable[..., dict]:
    """Load a checkpoint and its data once; the returned ``evaluate(split="test", transform=None)`` gives
    the metrics at the stored thresholds, each batch passed through ``transform`` first if given.
    Arguments as in :func:`evaluate_checkpoint`."""
    checkpoint = load_checkpoint(ckpt_path)
    config, model = model_from_checkpoint(checkpoint, ckpt_path)
    if data_dir is not None:
        config.data.data_dir = str(data_dir)
    if device is not None:
        config.train.device = device
    target = distributed.resolve_device(config.train.device)
    if datasets is None and not Path(config.data.data_dir).is_dir():
        raise FileNotFoundError(
            f"{ckpt_path}: the run's data directory {config.data.data_dir} does not exist here; pass --data-dir"
        )
    data = build_datasets(config, model_inputs(config.model.name)) if datasets is None else datasets
    check_class_names(checkpoint["class_names"], data.class_names, ckpt_path)
    model = model.to(target)

    def evaluate(split: str = "test", transform: Callable[[Batch], Batch] | None = None) -> dict:
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        probs, labels = predict(model, getattr(data, split), data.collate_fn, config, target, transform=transform)
        return compute_metrics(
            probs, labels, checkpoint["thresholds"], data.class_names, is_single_label(config.data.dataset)
        )

    return evaluate


def predict(
    model: nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    config: ExperimentConfig,
    device: torch.device,
    context: DistContext = SINGLE_PROCESS,
    desc: str = "eval",
    transform: Callable[[Batch], Batch] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels), each (N, C), for the whole ``dataset`` in its order.

    ``transform`` edits every batch before the model sees it (the missing-input sweep).

    Under DDP each rank predicts its round-robin shard with the unwrapped model (no collectives per
    batch, so uneven shards cannot hang) and the shards are gathered on every rank.
    """
    model = distributed.unwrap_model(model).eval()
    loader = make_loader(distributed.shard(dataset, context), collate_fn, config, config.train.seed)
    probs, labels = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not show_progress(config, context)):
            if transform is not None:
                batch = transform(batch)
            with autocast(config, device):
                logits = model(batch.to(device)).logits
            probs.append(torch.sigmoid(logits.float()).cpu())
            labels.append(batch.labels.float())
    probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    return distributed.gather_shards(probs, context), distributed.gather_shards(labels, context)


def make_loader(
    dataset: Dataset, collate_fn: Callable, config: ExperimentConfig, seed: int, shuffle: bool = False, sampler=None
) -> DataLoader:
    """A DataLoader with its own seeded generator, so shuffling and worker seeds never touch (or
    depend on) the global RNG."""
    return DataLoader(
        dataset,
        batch_size=config.data.batch_size,
        shuffle=shuffle,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=config.data.num_workers,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(seed),
    )


def _seed_worker(worker_id: int) -> None:
    """DataLoader gives each worker torch seed ``base_seed + worker_id``; derive python/numpy from it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def autocast(config: ExperimentConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.train.bf16)


def show_progress(config: ExperimentConfig, context: DistContext) -> bool:
    return config.train.progress and context.is_main
