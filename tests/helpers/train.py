"""A tiny registered model and a learnable in-memory dataset for trainer tests.

Run as a script (``python -m torch.distributed.run ... tests/helpers/train.py RUN_DIR``) it trains
:func:`make_config`'s run into RUN_DIR, which the DDP test uses.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

import e2e  # noqa: F401  (compat shim first)
from e2e.config import ExperimentConfig, ModelConfig
from e2e.data.batch import Batch, ModelOutput
from e2e.data.bundle import DataBundle
from e2e.models import available_models, model_options, register_model
from e2e.training.checkpoint import load_checkpoint
from e2e.training.trainer import train

MODEL_NAME = "tiny_test_model"
PRETRAINED_TEXT_MODEL = "tiny_pretrained_text_model"  # TinyModel whose embedding is "pretrained"
PRETRAINED_SEED = 1234  # the pretrained embedding: the same in every build, whatever the global seed
CLASSES = {
    "iemocap": ["ang", "exc", "fru", "hap", "neu", "sad"],
    "mosei": ["anger", "disgust", "fear", "happy", "sad", "surprise"],
}
SIZES = {"train": 48, "valid": 24, "test": 24}
NOISE_TOKENS = 20  # token ids 1..C mark the classes; C+1..C+NOISE_TOKENS are noise; 0 is padding


class TinyModel(nn.Module):
    """Bag of token embeddings (the "text" part) plus mean face/audio intensities, with dropout so the
    torch RNG matters for exact resumption, and a small aux loss."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.embedding = nn.Embedding(num_classes + NOISE_TOKENS + 1, 16, padding_idx=0)
        self.text_head = nn.Linear(16, num_classes)
        self.media_head = nn.Linear(4, num_classes)
        self.dropout = nn.Dropout(0.2)

    def forward(self, batch: Batch) -> ModelOutput:
        mask = batch.text_attention_mask.unsqueeze(-1).float()
        text = (self.embedding(batch.text_input_ids) * mask).sum(1) / mask.sum(1)
        faces = _per_utterance_mean(batch.faces.mean((2, 3)), batch.face_lengths)
        audio = _per_utterance_mean(batch.audio.mean((2, 3)), batch.audio_lengths)
        logits = self.text_head(self.dropout(text)) + self.media_head(torch.cat([faces, audio], 1))
        return ModelOutput(logits, aux_loss=1e-3 * logits.pow(2).mean())

    def text_parameters(self) -> list[nn.Parameter]:
        return [*self.embedding.parameters(), *self.text_head.parameters()]


def _per_utterance_mean(packed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    owner = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    sums = torch.zeros(len(lengths), packed.shape[1]).index_add_(0, owner, packed)
    return sums / lengths.unsqueeze(1)


def pretrained_text_model(config: ModelConfig, class_names: list[str]) -> TinyModel:
    """A TinyModel whose embedding comes from fixed "pretrained" values, like a text encoder loaded from
    its files; its text head stays random."""
    model = TinyModel(len(class_names))
    weights = torch.randn(model.embedding.weight.shape, generator=torch.Generator().manual_seed(PRETRAINED_SEED))
    with torch.no_grad():
        model.embedding.weight.copy_(weights)
    return model


@dataclass
class TinyConfig(ModelConfig):
    name: str = MODEL_NAME


@dataclass
class PretrainedTextConfig(ModelConfig):
    name: str = PRETRAINED_TEXT_MODEL


if MODEL_NAME not in available_models():  # the module may be imported twice (test file, script)
    register_model(MODEL_NAME, options=TinyConfig)(lambda config, class_names: TinyModel(len(class_names)))
    register_model(PRETRAINED_TEXT_MODEL, options=PretrainedTextConfig)(pretrained_text_model)


class SyntheticEmotions(Dataset):
    """Items whose tokens name their classes (plus noise): learnable in a few epochs."""

    def __init__(self, size: int, num_classes: int, single_label: bool, seed: int):
        generator = torch.Generator().manual_seed(seed)
        if single_label:
            labels = torch.eye(num_classes)[torch.randint(num_classes, (size,), generator=generator)]
        else:
            labels = (torch.rand(size, num_classes, generator=generator) < 0.3).float()
        self.items = [self._item(f"utt{seed}_{i}", labels[i], generator) for i in range(size)]

    @staticmethod
    def _item(item_id: str, label: torch.Tensor, generator: torch.Generator) -> dict:
        num_classes = len(label)
        noise = num_classes + 1 + torch.randint(NOISE_TOKENS, (3,), generator=generator)
        tokens = torch.cat([label.nonzero().flatten() + 1, noise])
        num_frames = 1 + int(torch.randint(2, (1,), generator=generator))
        return {
            "id": item_id,
            "label": label,
            "tokens": tokens,
            "faces": torch.randn(num_frames, 3, 48, 48, generator=generator),
            "audio": torch.randn(1, 1, 128, 32, generator=generator),
        }

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def collate(items: list[dict]) -> Batch:
    token_ids = nn.utils.rnn.pad_sequence([item["tokens"] for item in items], batch_first=True)
    return Batch(
        ids=[item["id"] for item in items],
        labels=torch.stack([item["label"] for item in items]),
        text_input_ids=token_ids,
        text_attention_mask=(token_ids != 0).long(),
        faces=torch.cat([item["faces"] for item in items]),
        face_lengths=torch.tensor([len(item["faces"]) for item in items]),
        audio=torch.cat([item["audio"] for item in items]),
        audio_lengths=torch.tensor([len(item["audio"]) for item in items]),
    )


class SimulatedKill(Exception):
    pass


class CrashAfter:
    """A collate_fn that raises after ``calls`` batches: simulates a run killed mid-epoch."""

    def __init__(self, calls: int):
        self.calls = self.limit = calls

    def __call__(self, items: list[dict]) -> Batch:
        if self.calls == 0:
            raise SimulatedKill(f"killed after {self.limit} batches")
        self.calls -= 1
        return collate(items)


def make_bundle(dataset: str = "iemocap") -> DataBundle:
    classes = CLASSES[dataset]
    splits = {
        split: SyntheticEmotions(size, len(classes), dataset == "iemocap", seed)
        for seed, (split, size) in enumerate(SIZES.items())
    }
    positives = torch.stack([item["label"] for item in splits["train"].items]).sum(0)
    return DataBundle(
        **splits,
        class_names=classes,
        collate_fn=collate,
        train_positives=positives,
        skipped={split: {} for split in SIZES},
    )


def make_config(dataset: str = "iemocap", model: str = MODEL_NAME, **train_overrides) -> ExperimentConfig:
    config = ExperimentConfig(model=model_options(model)())
    config.data.dataset, config.data.batch_size = dataset, 8
    settings = {
        "epochs": 3,
        "lr": 0.05,
        "device": "cpu",
        "progress": False,
        "early_stop_patience": 0,
        **train_overrides,
    }
    for key, value in settings.items():
        setattr(config.train, key, value)
    return config


def assert_same_state(run_dir: Path, reference_dir: Path) -> None:
    """The two runs' last.pt hold the same model, optimizer, scheduler, early-stopping and RNG state."""
    ours = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    theirs = load_checkpoint(reference_dir / "checkpoints" / "last.pt")
    assert_same_model(ours, theirs)
    for index, state in theirs["optimizer"]["state"].items():
        assert all(torch.equal(ours["optimizer"]["state"][index][key], value) for key, value in state.items())
    assert ours["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]
    assert ours["scheduler"] == theirs["scheduler"] and ours["progress"] == theirs["progress"]
    assert torch.equal(ours["rng"]["torch"], theirs["rng"]["torch"])


def assert_same_model(ours: dict, theirs: dict) -> None:
    assert ours["model"].keys() == theirs["model"].keys()
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name


if __name__ == "__main__":
    torch.set_num_threads(1)
    train(make_config(), sys.argv[1], datasets=make_bundle())
