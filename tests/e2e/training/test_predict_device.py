"""``e2e predict --device D`` runs the model, its batch and MTCNN on D: a real tiny MESM checkpoint on a
generated video, with the devices recorded at the model's forward and at the face cropper."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
import torch

import e2e  # noqa: F401  (compat shim first)
from e2e.data.batch import Batch
from e2e.data.faces import FaceCropper
from e2e.models import load_config
from e2e.models.registry import build_model
from e2e.training import predict

CLASSES = ["ang", "exc", "fru", "hap", "neu", "sad"]
OVERRIDES = ["model.text_model=tiny-bert", "model.cnn_width=0.25", "data.data_dir=unused"]


class StopForward(Exception):
    """Raised by the recording hook to end a forward that could not finish on the device (meta)."""


def tensor_devices(batch: Batch) -> set[torch.device]:
    return {value.device for value in vars(batch).values() if isinstance(value, torch.Tensor)}


def record_devices(model: torch.nn.Module, seen: dict, stop: bool = False) -> None:
    """A forward pre-hook storing the devices of the model's parameters and of its batch."""

    def hook(module, args):
        seen["parameters"] = {parameter.device for parameter in module.parameters()}
        seen["batch"] = tensor_devices(args[0])
        if stop:
            raise StopForward

    model.register_forward_pre_hook(hook)


@pytest.fixture(scope="module")
def mesm_checkpoint(tmp_path_factory) -> Path:
    """An untrained MESM (the demo config, tiny text encoder) saved as ``best.pt`` is."""
    config = load_config("configs/demo/mesm.yaml", OVERRIDES)
    torch.manual_seed(0)
    model = build_model(config.model, CLASSES)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    state = {"config": config.to_dict(), "model": model.state_dict(), "class_names": CLASSES}
    torch.save({**state, "thresholds": [0.5] * len(CLASSES), "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> tuple[Path, Path]:
    """A 1.2 s, 10 fps video of the astronaut photo (a face MTCNN finds) and a separate 16 kHz wav."""
    from skimage import data

    folder = tmp_path_factory.mktemp("talk")
    video, audio = folder / "talk.mp4", folder / "talk.wav"
    frame = cv2.cvtColor(cv2.resize(data.astronaut(), (256, 256)), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    for _ in range(12):
        writer.write(frame)
    writer.release()
    soundfile.write(audio, np.random.default_rng(0).normal(0, 0.1, 19200).astype(np.float32), 16000)
    return video, audio


def test_predict_runs_model_batch_and_mtcnn_on_the_requested_device(mesm_checkpoint, talk, monkeypatch):
    seen, cropper_devices = {}, []
    real_load, real_cropper_init = predict.model_from_checkpoint, FaceCropper.__init__

    def load_and_record(checkpoint, source):
        config, model = real_load(checkpoint, source)
        record_devices(model, seen)
        return config, model

    def cropper_init(self, device="cpu", batch_size=32):
        cropper_devices.append(torch.device(device))
        real_cropper_init(self, device, batch_size)
        cropper_devices.append(next(self.mtcnn.parameters()).device)

    monkeypatch.setattr(predict, "model_from_checkpoint", load_and_record)
    monkeypatch.setattr(FaceCropper, "__init__", cropper_init)
    video, audio = talk
    result = predict.predict_video(mesm_checkpoint, video, "I can't believe it", device="cpu", audio=audio)
    assert seen["parameters"] == seen["batch"] == {torch.device("cpu")}
    assert cropper_devices == [torch.device("cpu")] * 2
    assert result.class_names == CLASSES and result.frames == 3 and result.faces_found == 3
    assert all(0.0 <= probability <= 1.0 for probability in result.probabilities)


def test_run_model_moves_model_and_batch_to_another_device(mesm_checkpoint):
    """From CPU to ``meta`` (the second device a CPU machine has): parameters and every batch tensor
    are on it when the forward starts, whatever device either was on before."""
    checkpoint = predict.load_checkpoint(mesm_checkpoint)
    config, model = predict.model_from_checkpoint(checkpoint, mesm_checkpoint)
    seen = {}
    record_devices(model, seen, stop=True)
    batch = predict.collate(
        [
            {
                "id": "u",
                "text": "hello there",
                "label": torch.zeros(len(CLASSES)),
                "faces": torch.zeros(2, 3, 48, 48),
                "audio": torch.zeros(3, 1, 128, 32),
            }
        ],
        predict.load_tokenizer(config.model.text_model),
        config.model.text_max_length,
    )
    assert tensor_devices(batch) == {torch.device("cpu")}
    with pytest.raises(StopForward):
        predict.run_model(model, batch, torch.device("meta"), config)
    assert seen["parameters"] == seen["batch"] == {torch.device("meta")}
    assert not model.training


def test_bare_cuda_resolves_to_an_indexed_gpu(monkeypatch):
    """``--device cuda`` (and ``auto``) name one GPU, the local rank's under torchrun: DDP and
    ``torch.cuda.set_device`` need an index (a bare ``cuda`` put every rank on GPU 0)."""
    from e2e.config import ConfigError
    from e2e.training.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda", gpu_index=1) == resolve_device("auto", gpu_index=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", gpu_index=0) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"device 'cuda': this machine has 2 CUDA device\(s\)"):
        resolve_device("cuda", gpu_index=2)


def test_a_regression_checkpoint_predicts_its_targets(tmp_path, talk):
    """A vad checkpoint has no thresholds: predict returns the three raw outputs, no sigmoid, no decisions."""
    targets = ["valence", "activation", "dominance"]
    config = load_config("configs/demo/fe2e.yaml", [*OVERRIDES, "data.task=vad"])
    torch.manual_seed(0)
    model = build_model(config.model, targets)
    with torch.no_grad():
        for head in model.heads.values():
            head.bias.fill_(7.0)  # far outside a sigmoid's range: a probability would show
    path = tmp_path / "best.pt"
    state = {"config": config.to_dict(), "model": model.state_dict(), "class_names": targets}
    torch.save({**state, "thresholds": None, "epoch": 1}, path)
    video, audio = talk
    result = predict.predict_video(path, video, "I can't believe it", device="cpu", audio=audio)
    assert result.class_names == targets and result.probabilities is None and result.decisions is None
    assert len(result.values) == 3 and all(value > 1.0 for value in result.values)
    assert result.format().splitlines()[0].split() == ["target", "value"]
