"""Checkpoint I/O: load a checkpoint (rebuilding the frozen weights it leaves out), rebuild its model,
copy pretrained parameters, and the RNG states a resumed run restores. See :mod:`e2e.training.trainer`
for what ``best.pt`` and ``last.pt`` hold."""

from __future__ import annotations

import hashlib
import logging
import pickle
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from data_reorg.io import atomic_path
from e2e.config import ExperimentConfig, ModelConfig, UsageError
from e2e.models import build_model, config_from_dict, split_options

logger = logging.getLogger(__name__)


def stored_config(values: dict, source: Path | str) -> ExperimentConfig:
    """The config a checkpoint stores. One saved before each model had its own options (one flat
    ``model`` section for all models) holds keys its model does not have; they are left out, with a
    warning naming them, so older runs still evaluate, predict and resume."""
    model = values.get("model", {})
    kept, unused = split_options(model.get("name", ModelConfig.name), model)
    if unused:
        logger.warning(
            "%s: model %r has no option %s; left out (a config from before per-model options)",
            source,
            model.get("name"),
            ", ".join(unused),
        )
    return config_from_dict({**values, "model": kept}, str(source))


def model_from_checkpoint(checkpoint: dict, source: Path | str) -> tuple[ExperimentConfig, nn.Module]:
    """A loaded checkpoint's config and its model with the trained weights, on CPU, in eval mode.

    A relative ``data.data_dir`` is resolved against the directory the run was made in.
    """
    config = stored_config(checkpoint["config"], source)
    if config.data.data_dir and checkpoint.get("run_cwd"):
        config.data.data_dir = str(Path(checkpoint["run_cwd"], config.data.data_dir))
    model = build_model(config.model, checkpoint["class_names"])
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
    config = stored_config(checkpoint["config"], path)
    state = build_model(config.model, checkpoint["class_names"]).state_dict()
    reloaded = checkpoint["reloaded"]
    if _digest(state, reloaded["names"]) != reloaded["sha256"]:
        raise UsageError(
            f"{path}: the frozen weights that model.text_model={config.model.text_model!r} gives "
            f"here differ from those the run was trained with (other model files?)"
        )
    return {name: state[name] for name in reloaded["names"]}


def reloadable_weights(model: nn.Module, config: ExperimentConfig, class_names: Sequence[str]) -> dict | None:
    """``{"names", "sha256"}`` of the frozen tensors of ``model`` that building it from ``config``
    reproduces (pretrained weights: equal in a build under another seed), None when there are none."""
    frozen = [name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad]
    if not frozen:
        return None
    rng = rng_state()
    torch.manual_seed(config.train.seed + 1)
    probe = build_model(config.model, class_names).state_dict()
    set_rng_state(rng)
    own = model.state_dict()
    names = [name for name in frozen if torch.equal(own[name], probe[name])]
    return {"names": names, "sha256": _digest(own, names)} if names else None


def _digest(state: dict[str, torch.Tensor], names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def copy_pretrained(model: nn.Module, checkpoint_path: Path | str, prefix: str) -> list[str]:
    """Copy the parameters and buffers named ``prefix...`` from a checkpoint into ``model``; returns their names.

    Every copied tensor must exist in ``model`` with the same shape. Nothing matching ``prefix`` is an
    error: a fine-tuning run must not silently start from scratch.
    """
    stored = load_checkpoint(checkpoint_path)["model"]
    own = model.state_dict()
    names = [name for name in stored if name.startswith(prefix)]
    if not names:
        raise UsageError(f"{checkpoint_path}: no parameters start with {prefix!r} (train.init_prefix)")
    for name in names:
        if name not in own or own[name].shape != stored[name].shape:
            got = tuple(own[name].shape) if name in own else "missing"
            raise UsageError(f"{checkpoint_path}: {name} {tuple(stored[name].shape)} does not fit this model ({got})")
    model.load_state_dict({name: stored[name] for name in names}, strict=False)
    logger.info("copied %d tensors under %r from %s", len(names), prefix, checkpoint_path)
    return names


def write_checkpoint(path: Path, checkpoint: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def stored_epoch(path: Path) -> int | None:
    """The epoch a checkpoint holds (its tensors are mapped, not read); None if missing or unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError):
        return None


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as weights_only-loadable values."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_class_names(stored: Sequence[str], current: Sequence[str], source: Path | str) -> None:
    if list(stored) != list(current):
        raise UsageError(f"{source}: checkpoint classes {list(stored)} differ from the data's {list(current)}")
