"""The inference loop: a model's outputs (logits, or a regression task's predictions) over a dataset,
and a checkpoint's metrics on a split."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from e2e.config import ExperimentConfig, UsageError
from e2e.data.batch import Batch, ModelOutput
from e2e.data.bundle import SPLITS, DataBundle, build_datasets
from e2e.models import model_inputs
from e2e.training import distributed
from e2e.training.checkpoint import check_class_names, load_checkpoint, model_from_checkpoint
from e2e.training.distributed import DistContext
from e2e.training.metrics import Scoring

SINGLE_PROCESS = DistContext()  # no DDP: this process sees the whole dataset

logger = logging.getLogger(__name__)


def evaluate_checkpoint(
    ckpt_path: Path | str,
    split: str = "test",
    data_dir: Path | str | None = None,
    datasets: DataBundle | None = None,
    device: str | None = None,
) -> dict:
    """Metrics of a checkpoint on ``split`` at the thresholds stored in it (never re-tuned), with the
    ``pos_weight`` stored in it for the emotion argmax (see :mod:`e2e.training.metrics`).

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
    scoring = Scoring(
        config.data.task, config.data.dataset, tuple(data.class_names), _stored_pos_weight(checkpoint, data, ckpt_path)
    )

    def evaluate(split: str = "test", transform: Callable[[Batch], Batch] | None = None) -> dict:
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        outputs, labels = predict(model, getattr(data, split), data.collate_fn, config, target, transform=transform)
        return scoring.metrics(outputs, labels, checkpoint["thresholds"])

    return evaluate


def _stored_pos_weight(checkpoint: dict, data: DataBundle, source: Path | str) -> tuple[float, ...] | None:
    """The checkpoint's ``pos_weight``; one saved before it was stored was trained with the pos_weight of
    its data's train split, recomputed here (with a warning, as the data may have changed since)."""
    if "pos_weight" in checkpoint:
        stored = checkpoint["pos_weight"]
        return None if stored is None else tuple(stored)
    recomputed = data.pos_weight()
    logger.warning(
        "%s: stores no pos_weight (saved before it was); using the train split's, %s",
        source,
        None if recomputed is None else [round(w, 4) for w in recomputed.tolist()],
    )
    return None if recomputed is None else tuple(recomputed.tolist())


def predict(
    model: nn.Module,
    dataset: Dataset,
    collate_fn: Callable,
    config: ExperimentConfig,
    device: torch.device,
    context: DistContext = SINGLE_PROCESS,
    desc: str = "eval",
    transform: Callable[[Batch], Batch] | None = None,
    observe: Callable[[Batch, ModelOutput], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, labels), each (N, C), for the whole ``dataset`` in its order: the model's raw outputs
    (logits for emotion, whose sigmoid saturates; the predictions for a regression task) in float32.

    ``transform`` edits every batch before the model sees it (the missing-input sweep); ``observe`` is
    called with every batch and the model's output (the kept-site fractions of MESM's sparse blocks).

    Under DDP each rank predicts its round-robin shard with the unwrapped model (no collectives per
    batch, so uneven shards cannot hang) and the shards are gathered on every rank.
    """
    model = distributed.unwrap_model(model).eval()
    loader = make_loader(distributed.shard(dataset, context), collate_fn, config, config.train.seed)
    outputs, labels = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not show_progress(config, context)):
            if transform is not None:
                batch = transform(batch)
            with autocast(config, device):
                output = model(batch.to(device))
            if observe is not None:
                observe(batch, output)
            outputs.append(output.logits.float().cpu())
            labels.append(batch.labels.float())
    outputs, labels = torch.cat(outputs).numpy(), torch.cat(labels).numpy()
    return distributed.gather_shards(outputs, context), distributed.gather_shards(labels, context)


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
