"""Optional DistributedDataParallel support for ``torchrun`` launches.

Without torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) everything here is a single-process
no-op (a multi-task SLURM step, ``srun`` of N tasks, gets it from SLURM's variables), so the trainer
calls these helpers unconditionally. Evaluation is sharded round-robin (rank r takes items r, r+W, ...)
and gathered back into dataset order, so metrics always cover the full split exactly once
(``DistributedSampler`` would pad the split with repeated items).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Subset

from e2e.config import ConfigError

_ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module created the process group, so it destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    adopt_slurm_environment()
    return all(key in os.environ for key in _ENV_KEYS)


def local_rank() -> int:
    adopt_slurm_environment()
    return int(os.environ.get("LOCAL_RANK", 0))


def adopt_slurm_environment() -> None:
    """In a SLURM job step of several tasks (``srun -n N``) without torchrun's variables, set them from
    SLURM's, so that the tasks form one process group: RANK, WORLD_SIZE, LOCAL_RANK from SLURM_PROCID,
    SLURM_STEP_NUM_TASKS, SLURM_LOCALID; MASTER_ADDR the step's first node (unless set), MASTER_PORT
    derived from the job id, the same in every task (unless set)."""
    if any(key in os.environ for key in _ENV_KEYS) or int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) <= 1:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_STEP_NUM_TASKS"]
    os.environ["LOCAL_RANK"] = os.environ["SLURM_LOCALID"]
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ["SLURM_JOB_ID"]) % 20000))
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_STEP_NODELIST") or os.environ["SLURM_JOB_NODELIST"]
        hosts = subprocess.run(  # SLURM's own expansion of "node[01-04]"
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True, timeout=60
        )
        os.environ["MASTER_ADDR"] = hosts.stdout.split()[0]


def resolve_device(spec: str, gpu_index: int = 0) -> torch.device:
    """The one device resolver of every command: ``auto`` → ``cuda:<gpu_index>`` (the local rank under
    torchrun) when CUDA is available, else CPU; a bare ``cuda`` → ``cuda:<gpu_index>`` too (so that
    every torchrun process gets its own GPU, and DDP and ``torch.cuda.set_device`` an index);
    anything else as given.

    A spec that is no device, or a CUDA device this machine does not have, is a :class:`ConfigError`
    whose one line says what to use instead.
    """
    if spec == "auto":
        spec = f"cuda:{gpu_index}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {spec!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", gpu_index)
        _check_cuda(spec, device)
    return device


def _check_cuda(spec: str, device: torch.device) -> None:
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {spec!r}: CUDA is not available on this machine; use cpu or auto "
            f"(--device cpu, or --set train.device=cpu for e2e train)"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")


def init_distributed(device: torch.device) -> DistContext:
    """Join torchrun's process group (nccl on CUDA, gloo on CPU) unless one exists already; a
    single-process context without torchrun or with one process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext()
    owns_group = not dist.is_initialized()
    if owns_group:
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)  # bound to this rank's GPU
        else:
            dist.init_process_group("gloo")
    return DistContext(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), owns_group
    )


def cleanup(context: DistContext) -> None:
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def wrap_model(model: nn.Module, context: DistContext, device: torch.device) -> nn.Module:
    """DDP-wrap for multi-process runs.

    ``find_unused_parameters`` is on because some configurations leave parameters without gradients
    (MESM's attention in faithful mode, unused modality branches).
    """
    if not context.enabled:
        return model
    return ddp_model(model, device)


def ddp_model(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` (already on ``device``) in DDP, in the current process group: one GPU per process."""
    if device.type == "cuda" and device.index is None:
        raise ValueError("DDP on CUDA needs an indexed device (cuda:N); see resolve_device")
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def train_sampler(dataset: Dataset, context: DistContext, seed: int) -> DistributedSampler | None:
    if not context.enabled:
        return None
    return DistributedSampler(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed)


def shard(dataset: Dataset, context: DistContext) -> Dataset:
    """This rank's round-robin share of an evaluation split."""
    if not context.enabled:
        return dataset
    return Subset(dataset, range(context.rank, len(dataset), context.world_size))


def gather_shards(part: np.ndarray, context: DistContext) -> np.ndarray:
    """Inverse of :func:`shard`: every rank gets the full array back in dataset order."""
    if not context.enabled:
        return part
    parts: list = [None] * context.world_size
    dist.all_gather_object(parts, part)
    full = np.empty((sum(len(p) for p in parts),) + part.shape[1:], dtype=part.dtype)
    for rank, rows in enumerate(parts):
        full[rank :: context.world_size] = rows
    return full


def mean_across_ranks(value: float, context: DistContext) -> float:
    if not context.enabled:
        return value
    values: list = [None] * context.world_size
    dist.all_gather_object(values, value)  # object collectives work on both gloo and nccl
    return sum(values) / context.world_size
