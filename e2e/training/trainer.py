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

Runs under ``torchrun`` use DDP (:mod:`e2e.training.distributed`); rank 0 alone prints and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from data_reorg.io import remove_temporaries, write_text_atomic
from e2e.config import ConfigError, ExperimentConfig, UsageError
from e2e.data.batch import Batch
from e2e.data.bundle import DataBundle, build_datasets
from e2e.models import build_model, model_inputs, model_spec
from e2e.training import distributed
from e2e.training.checkpoint import (
    check_class_names,
    copy_pretrained,
    load_checkpoint,
    reloadable_weights,
    rng_state,
    set_rng_state,
    stored_epoch,
    write_checkpoint,
)
from e2e.training.distributed import DistContext
from e2e.training.inference import autocast, make_loader, predict, show_progress
from e2e.training.metrics import choose_thresholds, compute_metrics, is_single_label, main_metrics
from e2e.training.optim import build_optimizer, build_scheduler, freeze_text, seed_everything

logger = logging.getLogger(__name__)

RESUMABLE_KEYS = (  # config keys a resumed run may change; all of them take effect
    "train.epochs",  # train further (not under train.scheduler=cosine, whose schedule spans the epochs)
    "train.early_stop_patience",  # re-applied to the stored early-stopping state
    "train.device",
    "train.progress",
    "train.keep_last",
    "data.num_workers",
    "data.data_dir",  # the same corpus in another place (its class names are checked)
)
_BEST_KEYS = ("epoch", "model", "reloaded", "thresholds", "config", "class_names", "progress", "run_cwd")


def train(
    config: ExperimentConfig, run_dir: Path | str, resume: bool = False, datasets: DataBundle | None = None
) -> dict:
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
        data = build_datasets(config, model_inputs(config.model.name)) if datasets is None else datasets
        return _Trainer(config, run_dir, data, device, context).fit(checkpoint)
    finally:
        distributed.cleanup(context)


def _refuse_existing(run_dir: Path) -> None:
    for name in ("last.pt", "best.pt"):
        if (run_dir / "checkpoints" / name).exists():
            raise FileExistsError(
                f"{run_dir / 'checkpoints' / name} exists: pass resume=True (--resume) to "
                f"continue, or use a new run_dir"
            )


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
    changes = _config_changes(stored, config)
    refused = [change for key, change in changes.items() if key not in RESUMABLE_KEYS]
    if refused:
        raise ConfigError(
            f"{source}: cannot resume with another config: {'; '.join(refused)} (only "
            f"{', '.join(RESUMABLE_KEYS)} may change on resume; use a new run directory)"
        )
    if "train.epochs" in changes and config.train.scheduler == "cosine":
        raise ConfigError(
            f"{source}: {changes['train.epochs']}: the epochs cannot change on resume under "
            f"train.scheduler=cosine (the schedule spans the original epochs)"
        )
    if config.train.epochs < epochs_done:
        raise ConfigError(
            f"{source}: train.epochs={config.train.epochs} is below the {epochs_done} epochs already trained"
        )


def _config_changes(stored: dict, config: ExperimentConfig) -> dict[str, str]:
    """``section.key`` -> ``"section.key OLD -> NEW"`` for each value of ``config`` that ``stored``
    holds otherwise (a key that ``stored`` lacks, added to the config since, counts as its default)."""
    defaults = ExperimentConfig(model=type(config.model)()).to_dict()
    changes = {}
    for section, values in config.to_dict().items():
        for key, value in values.items():
            old = stored.get(section, {}).get(key, defaults[section][key])
            if old != value:
                changes[f"{section}.{key}"] = f"{section}.{key} {old!r} -> {value!r}"
    return changes


def _finished_results(run_dir: Path, config: ExperimentConfig) -> dict:
    """The stored results of a run whose ``last.pt`` was deleted (``train.keep_last=false``); an error if
    ``config`` asks it to train further, which needs the deleted training state."""
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    progress = _Progress(
        epoch=results["epochs_completed"],
        best_epoch=results["best_epoch"],
        since_best=results["epochs_completed"] - results["best_epoch"],
    )
    progress.apply_patience(config.train.early_stop_patience)
    if not progress.finished(config.train.epochs):
        raise UsageError(
            f"{run_dir}: the run finished after {progress.epoch} epochs and train.keep_last=false "
            f"deleted checkpoints/last.pt, so it cannot train further; use a new run directory"
        )
    logger.warning(
        "%s: the run is finished (train.keep_last=false deleted checkpoints/last.pt); nothing to resume", run_dir
    )
    return results


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
    def __init__(
        self, config: ExperimentConfig, run_dir: Path, data: DataBundle, device: torch.device, context: DistContext
    ):
        self.config, self.run_dir, self.data, self.device, self.context = config, run_dir, data, device, context
        self.class_names = list(data.class_names)
        self.single_label = is_single_label(config.data.dataset)
        seed_everything(config.train.seed)
        self.core = build_model(config.model, self.class_names)
        freeze_text(self.core, config.train)
        self.reloaded = reloadable_weights(self.core, config, self.class_names)
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
        loader = make_loader(
            self.data.train,
            self.data.collate_fn,
            self.config,
            train_config.seed + epoch,
            shuffle=sampler is None,
            sampler=sampler,
        )
        self.model.train()
        total, steps = 0.0, 0
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{train_config.epochs} train",
            leave=False,
            disable=not show_progress(self.config, self.context),
        )
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
        if show_progress(self.config, self.context):
            tqdm.write(line, file=sys.stderr)
        else:
            logger.info(line)

    def _epoch_line(self, epoch: int, loss: float, valid: dict) -> str:
        metrics = ", ".join(f"{name} {valid[name]:.4f}" for name in main_metrics(self.config.data.dataset))
        best = " (best)" if self.progress.best_epoch == epoch else ""
        return f"epoch {epoch}/{self.config.train.epochs}: loss {loss:.4f}, valid {metrics}{best}"

    def _save(self, checkpoint: dict, improved: bool) -> None:
        """The commit protocol of the module docstring: last.pt, then best.pt from the same state."""
        write_checkpoint(self.checkpoints / "last.pt", checkpoint)
        if improved:
            self._write_best(checkpoint)

    def _write_best(self, checkpoint: dict) -> None:
        write_checkpoint(self.checkpoints / "best.pt", {key: checkpoint[key] for key in _BEST_KEYS})

    def _repair_best(self) -> None:
        """Rebuild best.pt when a kill came between the renames of last.pt and best.pt of the best epoch."""
        best, wanted = self.checkpoints / "best.pt", self.progress.best_epoch
        stored = stored_epoch(best)
        if wanted == 0 or stored == wanted:
            return
        if self.progress.epoch != wanted:
            state = "is missing or unreadable" if stored is None else f"holds epoch {stored}"
            raise UsageError(
                f"{best} {state}, but {self.checkpoints / 'last.pt'} names epoch {wanted} as the best "
                f"and holds epoch {self.progress.epoch}, so best.pt cannot be rebuilt"
            )
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
            "rng": rng_state(),
            "progress": dataclasses.asdict(self.progress),
            "thresholds": thresholds,
            "config": self.config.to_dict(),
            "class_names": self.class_names,
            "run_cwd": os.getcwd(),
        }

    def _restore(self, checkpoint: dict) -> None:
        """Continue from a loaded last.pt; the (resumable) settings of ``self.config`` apply from now on."""
        source = self.checkpoints / "last.pt"
        check_class_names(checkpoint["class_names"], self.class_names, source)
        self.core.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint["scheduler"] is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.progress = _Progress(**checkpoint["progress"])
        self.progress.apply_patience(self.config.train.early_stop_patience)
        set_rng_state(checkpoint["rng"])
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
        if model_spec(config.model.name).sparse_traces:  # sparse-attention settings belong with every number
            results.update(attention_mode=config.model.attention_mode, top_p=config.model.top_p)
        return results


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    batch: Batch,
    config: ExperimentConfig,
    device: torch.device,
) -> float:
    """One optimisation step on ``batch`` (already on ``device``); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(config, device):
        output = model(batch)
    loss = loss_fn(output.logits.float(), batch.labels.float())
    if output.aux_loss is not None:
        loss = loss + output.aux_loss.float()
    loss.backward()
    if config.train.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
    optimizer.step()
    return loss.item()


def _json_safe(value):
    """nan/inf → None, so results.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value
