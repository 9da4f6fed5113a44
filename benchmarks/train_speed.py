"""Training throughput of FE2E and MESM on the demo corpus: utterances per second of the train loop.

The demo corpus is built when ``--data DIR`` has none (``data-reorg demo DIR``) and its feature cache
is completed (``e2e.data.preprocess``; a no-op when the cache is complete). Each model is configured by
``configs/demo/<model>.yaml`` with ``data.data_dir = DIR/iemocap`` (``--paper-width``: ``cnn_width`` 1,
the paper's channels, instead of the demo's 0.25) and built as the trainer builds it: the model
registry, :func:`e2e.training.optim.build_optimizer`, ``BCEWithLogitsLoss`` with the train split's
``pos_weight``, bf16 autocast on CUDA. The loop is the trainer's train step (zero_grad, forward, loss +
aux loss, backward, optional grad clipping, optimizer step) over a shuffled DataLoader of the train
split; no evaluation. Both models see the same batch sequence.

The two models alternate batch by batch (order swapped each round), so a change in machine load hits
both alike. ``--warmup`` batches each are not timed; then batches run until ``--samples`` utterances
each have been trained on (epochs repeat as needed, reshuffled with seed + epoch, as the trainer does).
``<model>_samples_per_s`` = utterances / wall time of the loop, data loading (``data.num_workers`` = 0,
the demo setting: in the main process) and collation included; ``<model>_step_samples_per_s`` counts
the train steps only.

Prints one JSON object.
    python benchmarks/train_speed.py [--data build/demo] [--samples 256] [--paper-width]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/...` from a checkout

import torch  # noqa: E402
from demo_corpus import ensure_demo  # noqa: E402  (beside this script)
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import e2e  # noqa: E402,F401  (the compat shim, before torchvision / transformers)
from e2e.config import ExperimentConfig  # noqa: E402
from e2e.data.bundle import DataBundle, build_datasets  # noqa: E402
from e2e.models import load_config  # noqa: E402
from e2e.training import distributed  # noqa: E402
from e2e.training.optim import build_optimizer, seed_everything  # noqa: E402
from e2e.training.trainer import train_step  # noqa: E402

MODELS = ("fe2e", "mesm")


class Runner:
    """One model, its optimizer and loss, stepping through its own (seeded) train loader."""

    def __init__(self, config: ExperimentConfig, data: DataBundle, device: torch.device):
        import e2e.models  # noqa: F401  (registers the models)
        from e2e.models.registry import build_model

        self.config, self.data, self.device = config, data, device
        seed_everything(config.train.seed)
        self.model = build_model(config.model, data.class_names).to(device).train()
        self.optimizer = build_optimizer(self.model, config.train)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=data.pos_weight().to(device))
        self.epoch, self.batches = 0, iter(())
        self.samples = self.seconds = self.step_seconds = 0.0

    def _next_batch(self):
        for _ in range(2):
            try:
                return next(self.batches)
            except StopIteration:  # a new epoch, shuffled with seed + epoch as the trainer does
                generator = torch.Generator().manual_seed(self.config.train.seed + self.epoch)
                self.batches = iter(
                    DataLoader(
                        self.data.train,
                        batch_size=self.config.data.batch_size,
                        shuffle=True,
                        collate_fn=self.data.collate_fn,
                        num_workers=self.config.data.num_workers,
                        generator=generator,
                    )
                )
                self.epoch += 1
        raise RuntimeError("the train split is empty")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, timed: bool) -> None:
        """Load one batch and train on it (the trainer's ``_step``); accumulate times when ``timed``."""
        started = time.perf_counter()
        batch = self._next_batch().to(self.device)
        self._sync()
        step_started = time.perf_counter()
        train_step(self.model, self.optimizer, self.loss_fn, batch, self.config, self.device)
        self._sync()
        ended = time.perf_counter()
        if timed:
            self.samples += len(batch)
            self.seconds += ended - started
            self.step_seconds += ended - step_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / "build" / "demo",
        help="demo corpus root (holds iemocap/); built when missing (default: build/demo)",
    )
    parser.add_argument("--samples", type=int, default=256, help="timed utterances per model")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per model")
    parser.add_argument("--paper-width", action="store_true", help="cnn_width 1.0 (the paper) instead of 0.25")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--jobs", type=int, default=1, help="preprocess worker processes, if the cache is built")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    corpus, problems = ensure_demo(args.data.resolve(), args.jobs)
    if problems:
        print(f"warning: {problems} utterances could not be preprocessed", file=sys.stderr)
    device = distributed.resolve_device(args.device)
    overrides = [f"data.data_dir={corpus}", f"train.device={args.device}", "train.progress=false"]
    if args.paper_width:
        overrides.append("model.cnn_width=1.0")
    configs = {name: load_config(REPO / "configs" / "demo" / f"{name}.yaml", overrides) for name in MODELS}
    fe2e, mesm = configs["fe2e"], configs["mesm"]
    if fe2e.data != mesm.data or fe2e.model.text_model != mesm.model.text_model:
        raise SystemExit("configs/demo/{fe2e,mesm}.yaml differ in their data settings or text model")
    data = build_datasets(configs["fe2e"], "raw")  # same split, cache and tokenizer for both models
    runners = {name: Runner(configs[name], data, device) for name in MODELS}

    for _ in range(args.warmup):
        for runner in runners.values():
            runner.step(timed=False)
    rounds = 0
    while min(runner.samples for runner in runners.values()) < args.samples:
        for name in MODELS if rounds % 2 == 0 else MODELS[::-1]:
            if runners[name].samples < args.samples:
                runners[name].step(timed=True)
        rounds += 1

    result = {f"{name}_samples_per_s": round(runner.samples / runner.seconds, 2) for name, runner in runners.items()}
    result.update(
        {
            "batch_size": configs["fe2e"].data.batch_size,
            "cnn_width": configs["fe2e"].model.cnn_width,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "ratio": round(result["mesm_samples_per_s"] / result["fe2e_samples_per_s"], 3),
            "top_p": configs["mesm"].model.top_p,
            "train_utterances": len(data.train),
            "samples": {name: int(runner.samples) for name, runner in runners.items()},
            "epochs_started": {name: runner.epoch for name, runner in runners.items()},
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    )
    result.update(
        {
            f"{name}_step_samples_per_s": round(runner.samples / runner.step_seconds, 2)
            for name, runner in runners.items()
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
