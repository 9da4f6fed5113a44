"""Dataset over the two-stage feature cache (:mod:`e2e.data.feature_cache`), for models registered with
``inputs="features"``.

It keeps exactly the utterances :class:`e2e.data.dataset.EmotionDataset` keeps (same manifest, label and
face/mel cache checks), so feature models and end-to-end models are scored on the same items; an item
whose feature file is missing, unreadable or stale is skipped as ``missing_features``.

Every modality is standardised per feature dimension with the mean and std of the *train* split
(:class:`FeatureStatistics`): build the train dataset first and hand its ``statistics`` to valid and
test, as :func:`e2e.training.trainer.build_datasets` does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from e2e.config import ConfigError, ExperimentConfig
from e2e.data.batch import FEATURE_FIELDS, Batch
from e2e.data.dataset import EmotionDataset, even_subsample
from e2e.data.encoder_features import features_command, with_encoder_dims
from e2e.data.feature_cache import check_face_size, feature_path, feature_source, is_valid_features

ARRAYS = {"t": "text", "a": "audio", "v": "visual"}  # modality -> array name in the cache file
STD_FLOOR = 1e-5


@dataclass(frozen=True)
class FeatureStatistics:
    """Per-dimension mean and std of every modality over a (train) split."""

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]


class FeatureDataset(EmotionDataset):
    """Items: ``id``, ``text``, ``label`` (C,) and the standardised ``t``/``a``/``v`` sequences (L, D).

    ``statistics`` None standardises with this split's own statistics (only right for train).
    """

    def __init__(
        self, data_dir: Path | str, split: str, config: ExperimentConfig, statistics: FeatureStatistics | None = None
    ):
        self.text_model, self.feature_max_length = config.model.text_model, config.model.text_max_length
        self.encoders = (config.model.feature_audio_encoder, config.model.feature_visual_encoder)
        located = replace(config, data=replace(config.data, data_dir=str(data_dir)))
        self.build_command = features_command(located)
        _check_recorded_dims(located)
        super().__init__(data_dir, split, config, tokenizer=None)
        self.statistics = statistics if statistics is not None else self._compute_statistics()

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        sequences = self._raw_sequences(item.cache)
        limits = {"a": self.max_chunks, "v": self.max_frames}
        result = {"id": item.id, "text": item.text, "label": item.label}
        for modality, sequence in sequences.items():
            sequence = sequence[even_subsample(len(sequence), limits.get(modality, 0))]
            result[modality] = (sequence - self.statistics.mean[modality]) / self.statistics.std[modality]
        return result

    def collator(self):
        return collate_features

    def _check_face_size(self, config: ExperimentConfig) -> None:
        check_face_size(config.data.face_size, config.model.feature_visual_encoder)

    def _input_file(self, row: dict) -> Path:
        return feature_path(
            self.data_dir, self.text_model, self.img_interval_ms, row["id"], *self.encoders, self.face_size
        )

    def _check_inputs(self, row: dict) -> tuple[str, str] | None:
        """The face/mel cache checks first (the same items as the end-to-end models), then the features."""
        problem = super()._check_inputs(row)
        if problem is not None:
            return problem
        path = self._input_file(row)
        source = feature_source(row, self.text_model, self.feature_max_length, *self.encoders, self.face_size)
        if not is_valid_features(path, source):
            return "missing_features", (
                f"{path} is missing, unreadable or built with other settings; run `{self.build_command}`"
            )
        return None

    @staticmethod
    def _raw_sequences(path: Path) -> dict[str, torch.Tensor]:
        with np.load(path) as archive:
            return {modality: torch.from_numpy(archive[name].astype(np.float32)) for modality, name in ARRAYS.items()}

    def _compute_statistics(self) -> FeatureStatistics:
        sums: dict[str, torch.Tensor] = {}
        squares: dict[str, torch.Tensor] = {}
        counts = dict.fromkeys(ARRAYS, 0)
        for item in self.items:
            for modality, sequence in self._raw_sequences(item.cache).items():
                sequence = sequence.double()
                sums[modality] = sums.get(modality, 0) + sequence.sum(0)
                squares[modality] = squares.get(modality, 0) + sequence.square().sum(0)
                counts[modality] += len(sequence)
        mean = {m: sums[m] / counts[m] for m in ARRAYS}
        std = {m: (squares[m] / counts[m] - mean[m].square()).clamp(min=0).sqrt().clamp(min=STD_FLOOR) for m in ARRAYS}
        return FeatureStatistics({m: v.float() for m, v in mean.items()}, {m: v.float() for m, v in std.items()})


def _check_recorded_dims(config: ExperimentConfig) -> None:
    """With feature encoders, ``model.input_dims`` must be their cache's sizes (:func:`with_encoder_dims`,
    which raises naming the command to run when the cache is empty), or the model is built for others."""
    recorded = with_encoder_dims(config).model.input_dims
    if recorded != config.model.input_dims:
        raise ConfigError(
            f"model.input_dims is {config.model.input_dims!r}, the encoder features have sizes {recorded}: "
            f"load the config with e2e.data.encoder_features.with_encoder_dims (or set model.input_dims={recorded})"
        )


def collate_features(items: list[dict]) -> Batch:
    """Pack every modality's sequences along dim 0 with per-utterance lengths (see :mod:`e2e.data.batch`)."""
    packed = {}
    for modality, name in FEATURE_FIELDS.items():
        packed[name] = torch.cat([item[modality] for item in items])
        packed[name.replace("_features", "_feature_lengths")] = torch.tensor(
            [len(item[modality]) for item in items], dtype=torch.long
        )
    return Batch(ids=[item["id"] for item in items], labels=torch.stack([item["label"] for item in items]), **packed)
