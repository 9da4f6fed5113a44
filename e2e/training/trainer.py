"""Training and evaluation protocol of the MESM paper.

Each epoch: train → valid (per-class thresholds chosen on valid) → test with those thresholds. The
run's result is the test metrics of the epoch with the best valid score; training stops early after
``early_stop_patience`` epochs without improvement.

The task (``data.task``) decides the loss and the score (:func:`e2e.training.metrics.selection_metric`):
``emotion`` trains ``BCEWithLogitsLoss(pos_weight = neg/pos per class on train)`` and selects on mean
valid F1; the regression tasks train an L1 loss on the raw targets (MulT's and MMSA's choice for
sentiment; for vad the mean over the three dimensions, on their 1-5 annotation scale, not normalised)
and select on the lowest valid MAE (``sentiment``) or the highest mean valid CCC (``vad``); they have
no thresholds (null in checkpoints and results) and no pos_weight.

A run directory holds ``config.yaml``, ``results.json``, ``tb/`` (TensorBoard) and
``checkpoints/{best,last}.pt``. Checkpoints hold only tensors and plain Python values, so they load
with ``torch.load(..., weights_only=True)``:

* ``best.pt`` holds what eval, predict and visualize need: the best epoch's model weights, its
  thresholds, the loss's ``pos_weight`` (the emotion argmax removes its prior, see
  :mod:`e2e.training.metrics`), the config, class names, epoch, early-stopping state and the directory
  the run was made in (``run_cwd``, against which a relative ``data.data_dir`` is resolved);
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
from e2e.config import REGRESSION_TASKS, ConfigError, ExperimentConfig, UsageError
from e2e.data.batch import Batch
from e2e.data.bundle import DataBundle, build_datasets
from e2e.data.encoder_features import with_encoder_dims
from e2e.models import build_model, model_inputs, model_spec
from e2e.models.layers.sparse import KeptSites
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
from e2e.training.metrics import Scoring, main_metrics, selection_metric
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
_BEST_KEYS = ("epoch", "model", "reloaded", "thresholds", "pos_weight", "config", "class_names", "progress", "run_cwd")


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
    if model_inputs(config.model.name) == "features":  # the sizes of the feature encoders' cache, recorded
        config = with_encoder_dims(config)
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
    best_score: float = -math.inf  # the selection metric's valid value in the best epoch
    best_epoch: int = 0
    since_best: int = 0  # epochs without improvement
    stopped_early: bool = False
    best: dict = field(default_factory=dict)  # valid, test, thresholds of the best epoch

    def record(
        self,
        epoch: int,
        valid: dict,
        test: dict,
        thresholds: list[float] | None,
        patience: int,
        selection: tuple[str, bool],
    ) -> bool:
        """Account for a finished epoch; True when it is the new best by ``selection`` = (valid metric,
        higher is better)."""
        self.epoch = epoch
        score = valid[selection[0]]
        improved = self._improves(score, selection[1])
        if improved:
            self.best_score, self.best_epoch, self.since_best = score, epoch, 0
            self.best = {"valid": valid, "test": test, "thresholds": thresholds}
        else:
            self.since_best += 1
        self.apply_patience(patience)
        return improved

    def _improves(self, score: float, higher_is_better: bool) -> bool:
        """The first epoch always counts; after it a nan score never improves and any score beats a nan best."""
        if self.best_epoch == 0:
            return True
        if math.isnan(score):
            return False
        if math.isnan(self.best_score):
            return True
        return score > self.best_score if higher_is_better else score < self.best_score

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
        pos_weight = data.pos_weight()
        self.pos_weight = None if pos_weight is None else [float(w) for w in pos_weight]
        self.scoring = Scoring(
            config.data.task, config.data.dataset, tuple(self.class_names), _tuple_or_none(self.pos_weight)
        )
        seed_everything(config.train.seed)
        self.core = build_model(config.model, self.class_names)
        freeze_text(self.core, config.train)
        self.reloaded = reloadable_weights(self.core, config, self.class_names)
        self.core.to(device)
        self.optimizer = build_optimizer(self.core, config.train)
        self.scheduler = build_scheduler(self.optimizer, config.train)
        self.model = distributed.wrap_model(self.core, context, device)
        self.loss_fn = task_loss(config.data.task, pos_weight, device)
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
        results = {**self._results(), **self._task_results()}
        if self.context.is_main:
            write_text_atomic(self.run_dir / "results.json", json.dumps(json_safe(results), indent=2) + "\n")
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
        valid_outputs, valid_labels = self._predict(self.data.valid, f"epoch {epoch + 1} valid")
        thresholds = self.scoring.thresholds(valid_outputs, valid_labels)
        valid = self._metrics(valid_outputs, valid_labels, thresholds)
        kept_sites = KeptSites() if model_spec(self.config.model.name).sparse_traces else None
        observe = kept_sites.observe if kept_sites is not None else None
        test = self._metrics(*self._predict(self.data.test, f"epoch {epoch + 1} test", observe), thresholds)
        if kept_sites is not None:  # this rank's share of the test split
            test["kept_fraction"] = kept_sites.fractions()
        if self.scheduler is not None:
            self.scheduler.step()
        improved = self.progress.record(
            epoch + 1, valid, test, thresholds, self.config.train.early_stop_patience, self._selection
        )
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

    def _predict(self, dataset: Dataset, desc: str, observe=None) -> tuple[np.ndarray, np.ndarray]:
        return predict(
            self.model, dataset, self.data.collate_fn, self.config, self.device, self.context, desc, observe=observe
        )

    def _metrics(self, outputs: np.ndarray, labels: np.ndarray, thresholds: list[float] | None) -> dict:
        return self.scoring.metrics(outputs, labels, thresholds)

    @property
    def _selection(self) -> tuple[str, bool]:
        return selection_metric(self.config.data.task)

    @property
    def _main_metrics(self) -> tuple[str, ...]:
        return main_metrics(self.config.data.dataset, self.config.data.task)

    def _task_results(self) -> dict:
        """What results.json records of the task: its name, headline metrics, the early-stopping metric
        and the loss's pos_weight (None for a regression task)."""
        metric, higher_is_better = self._selection
        return {
            "task": self.config.data.task,
            "main_metrics": list(self._main_metrics),
            "selection": {"metric": metric, "higher_is_better": higher_is_better},
            "pos_weight": self.pos_weight,
        }

    def _log(self, writer, epoch: int, loss: float, valid: dict, test: dict) -> None:
        writer.add_scalar("train/loss", loss, epoch)
        writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], epoch)
        for name in dict.fromkeys((*self._main_metrics, self._selection[0])):
            writer.add_scalar(f"valid/{name}", valid[name], epoch)
            writer.add_scalar(f"test/{name}", test[name], epoch)
        writer.flush()
        line = self._epoch_line(epoch, loss, valid)
        if show_progress(self.config, self.context):
            tqdm.write(line, file=sys.stderr)
        else:
            logger.info(line)

    def _epoch_line(self, epoch: int, loss: float, valid: dict) -> str:
        metrics = ", ".join(f"{name} {valid[name]:.4f}" for name in self._main_metrics)
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
            "pos_weight": self.pos_weight,
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
            "best_epoch": self.progress.best_epoch,
            "epochs_completed": self.progress.epoch,
            "stopped_early": self.progress.stopped_early,
            "class_names": self.class_names,
            "thresholds": best.get("thresholds"),
            "valid": best.get("valid"),
            "test": best.get("test"),
            "skipped": self.data.skipped,
            "fallbacks": self.data.fallbacks,
            "config": config.to_dict(),
        }
        spec = model_spec(config.model.name)
        # which preset this run is and how it differs from the paper's: recorded with every number
        no_table = {"preset": None, "deviations": None}
        results.update(spec.fidelity.record(config.to_dict()) if spec.fidelity else no_table)
        if spec.sparse_traces:  # sparse-attention settings belong with every number
            results.update(
                attention_mode=config.model.attention_mode,
                top_p=config.model.top_p,
                kept_fraction=(best.get("test") or {}).get("kept_fraction"),
            )
        return results


def task_loss(task: str, pos_weight: torch.Tensor | None, device: torch.device) -> nn.Module:
    """Emotion: BCE with logits and ``pos_weight``; a regression task: L1 on the raw targets (mean over
    utterances and targets)."""
    if task in REGRESSION_TASKS:
        return nn.L1Loss()
    if pos_weight is None:
        raise UsageError(f"data.task={task!r} trains a weighted BCE, but the data gives no pos_weight")
    return nn.BCEWithLogitsLoss(pos_weight=pos_weight.to(device))


def _tuple_or_none(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


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


def json_safe(value):
    """nan/inf → None, so results.json (and ``e2e eval``'s output) is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
