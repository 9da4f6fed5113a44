"""The three splits a run trains on, as the trainer needs them (:class:`DataBundle`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from e2e.config import SOURCE_CLIPS, ExperimentConfig
from e2e.data.batch import Batch

SPLITS = ("train", "valid", "test")


@dataclass
class DataBundle:
    """Everything :func:`train` needs from the data side; tests build one from in-memory datasets."""

    train: Dataset
    valid: Dataset
    test: Dataset
    class_names: Sequence[str]
    collate_fn: Callable[[list], Batch]
    # (C,) positive labels per class in train; None for a regression task (sentiment, vad)
    train_positives: Sequence[float] | torch.Tensor | None
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> count
    # split -> what was read with a fallback (kept, not dropped), e.g. -inf audio set to 0: results.json shows it
    fallbacks: dict[str, dict[str, int]] = field(default_factory=dict)

    def pos_weight(self) -> torch.Tensor | None:
        """neg/pos per class on train (a class without positives counts as having one); None for a
        regression task."""
        if self.train_positives is None:
            return None
        positives = torch.as_tensor(self.train_positives, dtype=torch.float32)
        return (len(self.train) - positives) / positives.clamp(min=1)


def build_datasets(config: ExperimentConfig, inputs: str) -> DataBundle:
    """The three splits of ``config.data.data_dir``: :class:`e2e.data.dataset.EmotionDataset` for models that
    read raw inputs (``inputs="raw"``), :class:`e2e.data.feature_dataset.FeatureDataset` (standardised with
    train's statistics) for models that read the two-stage features (``inputs="features"``); those of a
    ``data.source`` feature file (:mod:`e2e.data.benchmark_files`) where the config names one."""
    if config.data.source != SOURCE_CLIPS:
        from e2e.data.benchmark_files import build_file_datasets

        return build_file_datasets(config)
    from e2e.data.dataset import EmotionDataset, label_counts  # heavy (media stack); only for real data

    data_dir = config.data.data_dir
    if inputs == "features":
        from e2e.data.feature_dataset import FeatureDataset

        train_split = FeatureDataset(data_dir, "train", config)
        splits = {
            "train": train_split,
            **{split: FeatureDataset(data_dir, split, config, train_split.statistics) for split in ("valid", "test")},
        }
    else:
        from e2e.data.text import load_tokenizer

        tokenizer = load_tokenizer(config.model.text_model)
        splits = {split: EmotionDataset(data_dir, split, config, tokenizer) for split in SPLITS}
    return DataBundle(
        **splits,
        class_names=list(splits["train"].class_names),
        collate_fn=splits["train"].collator(),
        train_positives=label_counts(splits["train"]),
        skipped={
            split: {reason: len(ids) for reason, ids in sorted(dataset.skipped.items())}
            for split, dataset in splits.items()
        },
    )
