"""Training and evaluation protocol of the MESM paper.

Each epoch: train → valid (per-class thresholds chosen on valid) → test with those thresholds. The
run's result is the test metrics of the epoch with the best mean valid F1; training stops early after
``early_stop_patience`` epochs without improvement.

A run directory holds ``config.yaml``, ``results.json``, ``tb/`` (TensorBoard) and
``checkpoints/{best,last}.pt``. Checkpoints hold only tensors and plain Python values, so they load
with ``torch.load(..., weights_only=True)``:

* ``best.pt`` holds what eval, predict and visualize need: the best epoch's model weights, its
  thresholds, the config, class names, epoch, early-stopping state and the directory the run was made
  in (``run_cwd``, against which a relative ``data.data_dir`` is resolved);
* ``last.pt`` holds the same for the latest epoch plus everything needed to continue bit-exactly on
  CPU: optimizer, scheduler and RNG states. Shuffling does not depend on saved generator state: each
  epoch's DataLoader generator is seeded with ``seed + epoch``. ``train.keep_last=false`` deletes it
  once the run has finished; resuming such a run returns its results.

Commit protocol: each epoch renames a complete ``last.pt`` into place first (the epoch's commit point;
it records the best epoch), then, if the epoch is the new best, ``best.pt`` from the same state. So at
every instant either ``best.pt`` holds the epoch that ``last.pt`` names as best, or a kill came
between the two renames and ``last.pt`` is itself that epoch: resuming then rebuilds ``best.pt`` from
it, and deletes the temporaries a kill left in ``checkpoints/``. ``results.json`` is written after the
last epoch and deleted when a resumed run trains further, so it always describes ``best.pt``.

``train.text_lr_factor = 0`` freezes the text encoder and text head: no gradients (so no part of
gradient clipping either) and no optimizer state. Frozen tensors that building the model from the
config reproduces (pretrained weights, not random ones) are left out of checkpoints, which record
their names and digest instead; :func:`load_checkpoint` rebuilds and verifies them.

A resumed run's config may differ from its checkpoint's only in :data:`RESUMABLE_KEYS`; they take
effect (more epochs, another patience, device, workers or data location) and ``config.yaml`` records
them. Anything else, ``train.lr`` included, is refused with the list of differing keys.

Training prints one line per epoch (loss, main valid metrics, ``(best)``) on stderr, next to the
progress bars; ``train.progress=false`` turns both off (the line then goes to the log at INFO).

Runs under ``torchrun`` use DDP (:mod:`e2e.distributed`); rank 0 alone prints and writes files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data_reorg.io import atomic_path, remove_temporaries, write_text_atomic
from e2e import distributed
from e2e.batch import Batch
from e2e.config import ConfigError, ExperimentConfig, ModelConfig, TrainConfig, config_from_dict
from e2e.distributed import DistContext
from e2e.metrics import choose_thresholds, compute_metrics, is_single_label, main_metrics
from e2e.models.registry import available_models, build_model, model_inputs

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
RESUMABLE_KEYS = (  # config keys a resumed run may change; all of them take effect
    "train.epochs",  # train further (not under train.scheduler=cosine, whose schedule spans the epochs)
    "train.early_stop_patience",  # re-applied to the stored early-stopping state
    "train.device", "train.progress", "train.keep_last", "data.num_workers",
    "data.data_dir",  # the same corpus in another place (its class names are checked)
)
_BEST_KEYS = ("epoch", "model", "reloaded", "thresholds", "config", "class_names", "progress", "run_cwd")


@dataclass
class DataBundle:
    """Everything :func:`train` needs from the data side; tests build one from in-memory datasets."""

    train: Dataset
    valid: Dataset
    test: Dataset
    class_names: Sequence[str]
    collate_fn: Callable[[list], Batch]
    train_positives: Sequence[float] | torch.Tensor  # (C,) positive labels per class in train
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> count

    def pos_weight(self) -> torch.Tensor:
        """neg/pos per class on train; a class without positives counts as having one."""
        positives = torch.as_tensor(self.train_positives, dtype=torch.float32)
        return (len(self.train) - positives) / positives.clamp(min=1)


def build_datasets(config: ExperimentConfig) -> DataBundle:
    """The three splits of ``config.data.data_dir``: :class:`e2e.data.EmotionDataset` for models that
    read raw inputs, :class:`e2e.feature_data.FeatureDataset` (standardised with train's statistics)
    for models registered with ``inputs="features"``."""
    from e2e.data import EmotionDataset, label_counts  # heavy (media stack); only for real data

    data_dir = config.data.data_dir
    if _model_inputs(config.model.name) == "features":
        from e2e.feature_data import FeatureDataset

        train_split = FeatureDataset(data_dir, "train", config)
        splits = {"train": train_split, **{split: FeatureDataset(data_dir, split, config, train_split.statistics)
                                           for split in ("valid", "test")}}
    else:
        from e2e.features.text import load_tokenizer

        tokenizer = load_tokenizer(config.model.text_model)
        splits = {split: EmotionDataset(data_dir, split, config, tokenizer) for split in SPLITS}
    return DataBundle(
        **splits,
        class_names=list(splits["train"].class_names),
        collate_fn=splits["train"].collator(),
        train_positives=label_counts(splits["train"]),
        skipped={split: {reason: len(ids) for reason, ids in sorted(dataset.skipped.items())}
                 for split, dataset in splits.items()},
    )


def train(config: ExperimentConfig, run_dir: Path | str, resume: bool = False,
          datasets: DataBundle | None = None) -> dict:
    """Train per ``config``, writing into ``run_dir``; returns the contents of ``results.json``.

    ``resume`` continues from ``run_dir/checkpoints/last.pt`` (raises if absent; returns the results of
    a run that finished with ``train.keep_last=false``) with a config that differs from the
    checkpoint's in :data:`RESUMABLE_KEYS` only; without it, a run directory that already holds a
    checkpoint is refused rather than overwritten.
    """
    run_dir = Path(run_dir)
    device = distributed.resolve_device(config.train.device, distributed.local_rank())
    checkpoint = None
    if resume:
        checkpoint = _resume_checkpoint(run_dir, config)
        if "optimizer" not in checkpoint:  # best.pt: last.pt went with train.keep_last=false
            return _finished_results(run_dir, config)
    else:
        _refuse_existing(run_dir)
    context = distributed.init_distributed(device)
    try:
        data = build_datasets(config) if datasets is None else datasets
        return _Trainer(config, run_dir, data, device, context).fit(checkpoint)
    finally:
        distributed.cleanup(context)


def _refuse_existing(run_dir: Path) -> None:
    for name in ("last.pt", "best.pt"):
        if (run_dir / "checkpoints" / name).exists():
            raise FileExistsError(f"{run_dir / 'checkpoints' / name} exists: pass resume=True (--resume) to "
                                  f"continue, or use a new run_dir")


def _resume_checkpoint(run_dir: Path, config: ExperimentConfig) -> dict:
    """``last.pt``, or ``best.pt`` of a run that finished with ``train.keep_last=false``, once
    :func:`_check_resume_config` accepts ``config`` for it."""
    last, best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
    path = best if not last.exists() and (run_dir / "results.json").exists() else last
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: {last} does not exist")
    checkpoint = load_checkpoint(path)
    _check_resume_config(checkpoint["config"], config, checkpoint["progress"]["epoch"], path)
    return checkpoint


def _check_resume_config(stored: dict, config: ExperimentConfig, epochs_done: int, source: Path | str) -> None:
    """Raise ConfigError unless ``config`` differs from a checkpoint's ``stored`` config only in
    :data:`RESUMABLE_KEYS`, and asks for no fewer epochs than ``epochs_done``."""
    changes = _config_changes(stored, config.to_dict())
    refused = [change for key, change in changes.items() if key not in RESUMABLE_KEYS]
    if refused:
        raise ConfigError(f"{source}: cannot resume with another config: {'; '.join(refused)} (only "
                          f"{', '.join(RESUMABLE_KEYS)} may change on resume; use a new run directory)")
    if "train.epochs" in changes and config.train.scheduler == "cosine":
        raise ConfigError(f"{source}: {changes['train.epochs']}: the epochs cannot change on resume under "
                          f"train.scheduler=cosine (the schedule spans the original epochs)")
    if config.train.epochs < epochs_done:
        raise ConfigError(f"{source}: train.epochs={config.train.epochs} is below the {epochs_done} epochs "
                          f"already trained")


def _config_changes(stored: dict, current: dict) -> dict[str, str]:
    """``section.key`` -> ``"section.key OLD -> NEW"`` for each value of ``current`` that ``stored``
    holds otherwise (a key that ``stored`` lacks, added to the config since, counts as its default)."""
    defaults = ExperimentConfig().to_dict()
    changes = {}
    for section, values in current.items():
        for key, value in values.items():
            old = stored.get(section, {}).get(key, defaults[section][key])
            if old != value:
                changes[f"{section}.{key}"] = f"{section}.{key} {old!r} -> {value!r}"
    return changes


def _finished_results(run_dir: Path, config: ExperimentConfig) -> dict:
    """The stored results of a run whose ``last.pt`` was deleted (``train.keep_last=false``); an error if
    ``config`` asks it to train further, which needs the deleted training state."""
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    progress = _Progress(epoch=results["epochs_completed"], best_epoch=results["best_epoch"],
                         since_best=results["epochs_completed"] - results["best_epoch"])
    progress.apply_patience(config.train.early_stop_patience)
    if not progress.finished(config.train.epochs):
        raise ValueError(f"{run_dir}: the run finished after {progress.epoch} epochs and train.keep_last=false "
                         f"deleted checkpoints/last.pt, so it cannot train further; use a new run directory")
    logger.warning("%s: the run is finished (train.keep_last=false deleted checkpoints/last.pt); nothing to resume",
                   run_dir)
    return results


def evaluate_checkpoint(ckpt_path: Path | str, split: str = "test", data_dir: Path | str | None = None,
                        datasets: DataBundle | None = None, device: str | None = None) -> dict:
    """Metrics of a checkpoint on ``split`` at the thresholds stored in it (never re-tuned).

    The model and data settings come from the checkpoint's config; ``data_dir`` and ``device``
    (default: the stored ``train.device``) override it, ``datasets`` replaces the data entirely.
    """
    return checkpoint_evaluator(ckpt_path, data_dir, datasets, device)(split)


def checkpoint_evaluator(ckpt_path: Path | str, data_dir: Path | str | None = None,
                         datasets: DataBundle | None = None,
                         device: str | None = None) -> Callable[..., dict]:
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
        raise FileNotFoundError(f"{ckpt_path}: the run's data directory {config.data.data_dir} does not exist "
                                f"here; pass --data-dir")
    data = build_datasets(config) if datasets is None else datasets
    _check_class_names(checkpoint["class_names"], data.class_names, ckpt_path)
    model = model.to(target)

    def evaluate(split: str = "test", transform: Callable[[Batch], Batch] | None = None) -> dict:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        probs, labels = predict(model, getattr(data, split), data.collate_fn, config, target, transform=transform)
        return compute_metrics(probs, labels, checkpoint["thresholds"], data.class_names,
                               is_single_label(config.data.dataset))

    return evaluate


def model_from_checkpoint(checkpoint: dict, source: Path | str) -> tuple[ExperimentConfig, nn.Module]:
    """A loaded checkpoint's config and its model with the trained weights, on CPU, in eval mode.

    A relative ``data.data_dir`` is resolved against the directory the run was made in.
    """
    config = config_from_dict(checkpoint["config"], str(source))
    if config.data.data_dir and checkpoint.get("run_cwd"):
        config.data.data_dir = str(Path(checkpoint["run_cwd"], config.data.data_dir))
    model = _build_model(config.model, checkpoint["class_names"])
    model.load_state_dict(checkpoint["model"])
    return config, model.eval()


def load_checkpoint(path: Path | str) -> dict:
    """A checkpoint with its complete model state: the frozen tensors it leaves out (``reloaded``) are
    rebuilt from its config and must match the digest it stores."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("reloaded"):
        checkpoint["model"] = {**checkpoint["model"], **_reload(checkpoint, path)}
    return checkpoint


def _reload(checkpoint: dict, path: Path | str) -> dict[str, torch.Tensor]:
    config = config_from_dict(checkpoint["config"], str(path))
    state = _build_model(config.model, checkpoint["class_names"]).state_dict()
    reloaded = checkpoint["reloaded"]
    if _digest(state, reloaded["names"]) != reloaded["sha256"]:
        raise ValueError(f"{path}: the frozen weights that model.text_model={config.model.text_model!r} gives "
                         f"here differ from those the run was trained with (other model files?)")
    return {name: state[name] for name in reloaded["names"]}


def _reloadable(model: nn.Module, config: ExperimentConfig, class_names: Sequence[str]) -> dict | None:
    """``{"names", "sha256"}`` of the frozen tensors of ``model`` that building it from ``config``
    reproduces (pretrained weights: equal in a build under another seed), None when there are none."""
    frozen = [name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad]
    if not frozen:
        return None
    rng = _rng_state()
    torch.manual_seed(config.train.seed + 1)
    probe = _build_model(config.model, class_names).state_dict()
    _set_rng_state(rng)
    own = model.state_dict()
    names = [name for name in frozen if torch.equal(own[name], probe[name])]
    return {"names": names, "sha256": _digest(own, names)} if names else None


def _digest(state: dict[str, torch.Tensor], names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


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
    (when the model has it) at ``lr * text_lr_factor``."""
    text_ids = {id(p) for p in model.text_parameters()} if hasattr(model, "text_parameters") else set()
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in text_ids], "lr": train_config.lr},
              {"params": [p for p in trainable if id(p) in text_ids],
               "lr": train_config.lr * train_config.text_lr_factor}]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen (train.text_lr_factor=0 with text only?)")
    return torch.optim.Adam(groups, weight_decay=train_config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, train_config: TrainConfig):
    """``cosine``: anneal each group's lr to 0 over ``epochs``, stepped once per epoch; ``none``: None."""
    if train_config.scheduler == "none":
        return None
    if train_config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_config.epochs)
    raise ValueError(f"train.scheduler must be none or cosine, got {train_config.scheduler!r}")


def predict(model: nn.Module, dataset: Dataset, collate_fn: Callable, config: ExperimentConfig,
            device: torch.device, context: DistContext = DistContext(), desc: str = "eval",
            transform: Callable[[Batch], Batch] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels), each (N, C), for the whole ``dataset`` in its order.

    ``transform`` edits every batch before the model sees it (the missing-input sweep).

    Under DDP each rank predicts its round-robin shard with the unwrapped model (no collectives per
    batch, so uneven shards cannot hang) and the shards are gathered on every rank.
    """
    model = distributed.unwrap_model(model).eval()
    loader = _loader(distributed.shard(dataset, context), collate_fn, config, config.train.seed)
    probs, labels = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not _progress(config, context)):
            if transform is not None:
                batch = transform(batch)
            with _autocast(config, device):
                logits = model(batch.to(device)).logits
            probs.append(torch.sigmoid(logits.float()).cpu())
            labels.append(batch.labels.float())
    probs, labels = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    return distributed.gather_shards(probs, context), distributed.gather_shards(labels, context)


@dataclass
class _Progress:
    """Early-stopping state; stored in every checkpoint so a resumed run decides exactly as before."""

    epoch: int = 0  # completed epochs
    best_score: float = -math.inf  # mean valid F1 of the best epoch
    best_epoch: int = 0
    since_best: int = 0  # epochs without improvement
    stopped_early: bool = False
    best: dict = field(default_factory=dict)  # valid, test, thresholds of the best epoch

    def record(self, epoch: int, valid: dict, test: dict, thresholds: list[float], patience: int) -> bool:
        """Account for a finished epoch; True when it is the new best."""
        self.epoch = epoch
        improved = valid["f1"] > self.best_score
        if improved:
            self.best_score, self.best_epoch, self.since_best = valid["f1"], epoch, 0
            self.best = {"valid": valid, "test": test, "thresholds": thresholds}
        else:
            self.since_best += 1
        self.apply_patience(patience)
        return improved

    def apply_patience(self, patience: int) -> None:
        """Stop after ``patience`` epochs without improvement; ``patience <= 0``: never stop."""
        self.stopped_early = 0 < patience <= self.since_best

    def finished(self, epochs: int) -> bool:
        return self.stopped_early or self.epoch >= epochs


class _Trainer:
    def __init__(self, config: ExperimentConfig, run_dir: Path, data: DataBundle, device: torch.device,
                 context: DistContext):
        self.config, self.run_dir, self.data, self.device, self.context = config, run_dir, data, device, context
        self.class_names = list(data.class_names)
        self.single_label = is_single_label(config.data.dataset)
        seed_everything(config.train.seed)
        self.core = _build_model(config.model, self.class_names)
        freeze_text(self.core, config.train)
        self.reloaded = _reloadable(self.core, config, self.class_names)
        self.core.to(device)
        self.optimizer = build_optimizer(self.core, config.train)
        self.scheduler = build_scheduler(self.optimizer, config.train)
        self.model = distributed.wrap_model(self.core, context, device)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=data.pos_weight().to(device))
        self.progress = _Progress()
        self.checkpoints = run_dir / "checkpoints"

    def fit(self, checkpoint: dict | None) -> dict:
        """Train from scratch, or on from ``checkpoint`` (a loaded ``last.pt``)."""
        if checkpoint is not None:
            self._restore(checkpoint)
        elif self.config.train.init_checkpoint:
            copy_pretrained(self.core, self.config.train.init_checkpoint, self.config.train.init_prefix)
        writer = self._start_outputs(resumed=checkpoint is not None)
        try:
            while not self.progress.finished(self.config.train.epochs):
                self._run_epoch(self.progress.epoch, writer)
        finally:
            if writer is not None:
                writer.close()
        results = self._results()
        if self.context.is_main:
            write_text_atomic(self.run_dir / "results.json", json.dumps(_json_safe(results), indent=2) + "\n")
            if not self.config.train.keep_last:
                (self.checkpoints / "last.pt").unlink(missing_ok=True)
        distributed.barrier(self.context)
        return results

    def _start_outputs(self, resumed: bool):
        """On rank 0 (None elsewhere): clear what a kill left behind (temporaries, a stale best.pt, a
        results.json that further training outdates), write config.yaml, open the TensorBoard writer."""
        if not self.context.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter  # slow import; rank 0 only

        self.checkpoints.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.checkpoints)
        remove_temporaries(self.run_dir, ("config.yaml", "results.json"))
        if resumed:
            self._repair_best()
        if not self.progress.finished(self.config.train.epochs):
            (self.run_dir / "results.json").unlink(missing_ok=True)
        write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        return SummaryWriter(str(self.run_dir / "tb"))

    def _run_epoch(self, epoch: int, writer) -> None:
        loss = self._train_epoch(epoch)
        valid_probs, valid_labels = self._predict(self.data.valid, f"epoch {epoch + 1} valid")
        thresholds = [float(t) for t in choose_thresholds(valid_probs, valid_labels)]
        valid = self._metrics(valid_probs, valid_labels, thresholds)
        test = self._metrics(*self._predict(self.data.test, f"epoch {epoch + 1} test"), thresholds)
        if self.scheduler is not None:
            self.scheduler.step()
        improved = self.progress.record(epoch + 1, valid, test, thresholds, self.config.train.early_stop_patience)
        if self.context.is_main:
            self._save(self._checkpoint(thresholds), improved)
            self._log(writer, epoch + 1, loss, valid, test)

    def _train_epoch(self, epoch: int) -> float:
        """One pass over train; returns the mean loss (averaged over ranks)."""
        train_config = self.config.train
        sampler = distributed.train_sampler(self.data.train, self.context, train_config.seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = _loader(self.data.train, self.data.collate_fn, self.config, train_config.seed + epoch,
                         shuffle=sampler is None, sampler=sampler)
        self.model.train()
        total, steps = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{train_config.epochs} train", leave=False,
                   disable=not _progress(self.config, self.context))
        for batch in bar:
            loss = self._step(batch.to(self.device))
            total, steps = total + loss, steps + 1
            bar.set_postfix(loss=f"{loss:.4f}")
        return distributed.mean_across_ranks(total / max(steps, 1), self.context)

    def _step(self, batch: Batch) -> float:
        return train_step(self.model, self.optimizer, self.loss_fn, batch, self.config, self.device)

    def _predict(self, dataset: Dataset, desc: str) -> tuple[np.ndarray, np.ndarray]:
        return predict(self.model, dataset, self.data.collate_fn, self.config, self.device, self.context, desc)

    def _metrics(self, probs: np.ndarray, labels: np.ndarray, thresholds: list[float]) -> dict:
        return compute_metrics(probs, labels, thresholds, self.class_names, self.single_label)

    def _log(self, writer, epoch: int, loss: float, valid: dict, test: dict) -> None:
        writer.add_scalar("train/loss", loss, epoch)
        writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], epoch)
        for name in dict.fromkeys((*main_metrics(self.config.data.dataset), "f1")):
            writer.add_scalar(f"valid/{name}", valid[name], epoch)
            writer.add_scalar(f"test/{name}", test[name], epoch)
        writer.flush()
        line = self._epoch_line(epoch, loss, valid)
        if _progress(self.config, self.context):
            tqdm.write(line, file=sys.stderr)
        else:
            logger.info(line)

    def _epoch_line(self, epoch: int, loss: float, valid: dict) -> str:
        metrics = ", ".join(f"{name} {valid[name]:.4f}" for name in main_metrics(self.config.data.dataset))
        best = " (best)" if self.progress.best_epoch == epoch else ""
        return f"epoch {epoch}/{self.config.train.epochs}: loss {loss:.4f}, valid {metrics}{best}"

    def _save(self, checkpoint: dict, improved: bool) -> None:
        """The commit protocol of the module docstring: last.pt, then best.pt from the same state."""
        _write_checkpoint(self.checkpoints / "last.pt", checkpoint)
        if improved:
            self._write_best(checkpoint)

    def _write_best(self, checkpoint: dict) -> None:
        _write_checkpoint(self.checkpoints / "best.pt", {key: checkpoint[key] for key in _BEST_KEYS})

    def _repair_best(self) -> None:
        """Rebuild best.pt when a kill came between the renames of last.pt and best.pt of the best epoch."""
        best, wanted = self.checkpoints / "best.pt", self.progress.best_epoch
        stored = _stored_epoch(best)
        if wanted == 0 or stored == wanted:
            return
        if self.progress.epoch != wanted:
            state = "is missing or unreadable" if stored is None else f"holds epoch {stored}"
            raise ValueError(f"{best} {state}, but {self.checkpoints / 'last.pt'} names epoch {wanted} as the best "
                             f"and holds epoch {self.progress.epoch}, so best.pt cannot be rebuilt")
        logger.warning("%s: rebuilt from last.pt (epoch %d), which a kill had left ahead of it", best, wanted)
        self._write_best(self._checkpoint(self.progress.best["thresholds"]))

    def _checkpoint(self, thresholds: list[float]) -> dict:
        left_out = set(self.reloaded["names"]) if self.reloaded else set()
        return {
            "epoch": self.progress.epoch,
            "model": {name: value for name, value in self.core.state_dict().items() if name not in left_out},
            "reloaded": self.reloaded,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": _rng_state(),
            "progress": dataclasses.asdict(self.progress),
            "thresholds": thresholds,
            "config": self.config.to_dict(),
            "class_names": self.class_names,
            "run_cwd": os.getcwd(),
        }

    def _restore(self, checkpoint: dict) -> None:
        """Continue from a loaded last.pt; the (resumable) settings of ``self.config`` apply from now on."""
        source = self.checkpoints / "last.pt"
        _check_class_names(checkpoint["class_names"], self.class_names, source)
        self.core.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint["scheduler"] is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.progress = _Progress(**checkpoint["progress"])
        self.progress.apply_patience(self.config.train.early_stop_patience)
        _set_rng_state(checkpoint["rng"])
        logger.info("resumed from %s after epoch %d", source, self.progress.epoch)

    def _results(self) -> dict:
        config, best = self.config, self.progress.best
        results = {
            "model": config.model.name,
            "dataset": config.data.dataset,
            "main_metrics": list(main_metrics(config.data.dataset)),
            "best_epoch": self.progress.best_epoch,
            "epochs_completed": self.progress.epoch,
            "stopped_early": self.progress.stopped_early,
            "class_names": self.class_names,
            "thresholds": best.get("thresholds"),
            "valid": best.get("valid"),
            "test": best.get("test"),
            "skipped": self.data.skipped,
            "config": config.to_dict(),
        }
        if "mesm" in config.model.name:  # sparse-attention settings belong with every MESM number
            results.update(attention_mode=config.model.attention_mode, top_p=config.model.top_p)
        return results


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, batch: Batch,
               config: ExperimentConfig, device: torch.device) -> float:
    """One optimisation step on ``batch`` (already on ``device``); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with _autocast(config, device):
        output = model(batch)
    loss = loss_fn(output.logits.float(), batch.labels.float())
    if output.aux_loss is not None:
        loss = loss + output.aux_loss.float()
    loss.backward()
    if config.train.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
    optimizer.step()
    return loss.item()


def copy_pretrained(model: nn.Module, checkpoint_path: Path | str, prefix: str) -> list[str]:
    """Copy the parameters and buffers named ``prefix...`` from a checkpoint into ``model``; returns their names.

    Every copied tensor must exist in ``model`` with the same shape. Nothing matching ``prefix`` is an
    error: a fine-tuning run must not silently start from scratch.
    """
    stored = load_checkpoint(checkpoint_path)["model"]
    own = model.state_dict()
    names = [name for name in stored if name.startswith(prefix)]
    if not names:
        raise ValueError(f"{checkpoint_path}: no parameters start with {prefix!r} (train.init_prefix)")
    for name in names:
        if name not in own or own[name].shape != stored[name].shape:
            got = tuple(own[name].shape) if name in own else "missing"
            raise ValueError(f"{checkpoint_path}: {name} {tuple(stored[name].shape)} does not fit this model ({got})")
    model.load_state_dict({name: stored[name] for name in names}, strict=False)
    logger.info("copied %d tensors under %r from %s", len(names), prefix, checkpoint_path)
    return names


def _write_checkpoint(path: Path, checkpoint: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _stored_epoch(path: Path) -> int | None:
    """The epoch a checkpoint holds (its tensors are mapped, not read); None if missing or unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError):
        return None


def _build_model(model_config: ModelConfig, class_names: Sequence[str]) -> nn.Module:
    _register_models(model_config.name)
    return build_model(model_config, class_names)


def _model_inputs(name: str) -> str:
    _register_models(name)
    return model_inputs(name)


def _register_models(name: str) -> None:
    if name not in available_models():
        import e2e.models  # noqa: F401  (registers the project's models; heavy, so only when needed)


def _loader(dataset: Dataset, collate_fn: Callable, config: ExperimentConfig, seed: int,
            shuffle: bool = False, sampler=None) -> DataLoader:
    """A DataLoader with its own seeded generator, so shuffling and worker seeds never touch (or
    depend on) the global RNG."""
    return DataLoader(dataset, batch_size=config.data.batch_size, shuffle=shuffle, sampler=sampler,
                      collate_fn=collate_fn, num_workers=config.data.num_workers,
                      worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(seed))


def _seed_worker(worker_id: int) -> None:
    """DataLoader gives each worker torch seed ``base_seed + worker_id``; derive python/numpy from it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _autocast(config: ExperimentConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.train.bf16)


def _progress(config: ExperimentConfig, context: DistContext) -> bool:
    return config.train.progress and context.is_main


def _rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as weights_only-loadable values."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_class_names(stored: Sequence[str], current: Sequence[str], source: Path | str) -> None:
    if list(stored) != list(current):
        raise ValueError(f"{source}: checkpoint classes {list(stored)} differ from the data's {list(current)}")


def _json_safe(value):
    """nan/inf → None, so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value
