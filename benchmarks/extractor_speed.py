"""Feature-extractor cost, MESM vs FE2E: forward + backward time and peak memory of the per-frame CNNs.

Only the visual and acoustic CNNs are measured (``model.cnns["v"]`` and ``model.cnns["a"]``, built by
the real :class:`~e2e.models.fe2e.FE2E` and :class:`~e2e.models.mesm.MESM` constructors with a stub text
encoder, so no text model is loaded). FE2E's CNN is the dense paper VGG (``MesmVGG``); MESM's is
:class:`~e2e.models.layers.sparse.SparseCNN`, which takes each frame's text CLS as its second argument.
Both run in training mode (BatchNorm batch statistics, as in the train loop), in float32 (no autocast,
also on CUDA), on one packed batch:

* ``--data DIR``: real face crops and log-mel chunks read from the feature cache (``*.npz``, see
  :mod:`e2e.data.preprocess`) under DIR, e.g. ``build/demo/iemocap``, taken utterance by utterance in file
  order until ``--faces`` crops and ``--chunks`` chunks are collected;
* without it: random N(0, 1) tensors (the real inputs are normalised to about that scale), 8 utterances.

The per-frame text CLS is random N(0, 1) of size ``--text-dim`` (768 = ALBERT-base, the paper's) and
requires grad, as in the full model. Attention weights are freshly initialised, so top-p keeps about
``top_p`` of each frame's sites; a trained model's peakier attention would keep fewer. The fraction of
the dense sites every sparse block convolves is reported as ``mesm_kept_sites``.

Time: ``--warmup`` untimed steps each, then ``--repeats`` interleaved repetitions (FE2E, MESM, with the
order alternating between repetitions); the median of each. One step = forward of both CNNs, backward
of a fixed random gradient through both outputs at once (into the weights and, for MESM, the text
CLS), so that, as in the full model, both modalities' saved activations are alive when backward starts.

Peak memory: one separate step per model under ``torch.profiler`` with ``profile_memory=True``. Every
allocation and free of PyTorch's CPU allocator is recorded in order; the peak is the highest running
sum of those events during the step, i.e. the high-water mark of live tensor bytes (activations saved
for backward, gradients, temporaries) above what existed before the step (weights and inputs).
Memory that oneDNN/MKL allocate outside PyTorch's allocator (small scratch buffers) is not included.
On CUDA the peak is ``torch.cuda.max_memory_allocated`` minus the allocation at the start of the step.
(tracemalloc does not see torch's allocations, and ``ru_maxrss`` mixes in allocator caching and the
first-call setup of oneDNN rather than the live working set.)

Shared CPUs: with other processes on the cores, torch's OpenMP threads wait on each other, which hurts
MESM's many small parallel regions (per-offset gathers and ``index_add_``) far more than FE2E's few large
convolutions; MESM steps then vary by 10x and the ratio means nothing. ``loadavg_1min`` (before, after;
this process included) shows whether the machine was busy; ``--threads 1`` is far less sensitive.

Prints one JSON object; target: ratio (= mesm_ms / fe2e_ms) <= 0.75.
    python benchmarks/extractor_speed.py [--data build/demo/iemocap] [--top-p 0.5] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/...` from a checkout

import torch  # noqa: E402
from torch import nn  # noqa: E402

import e2e  # noqa: E402,F401  (the compat shim, before torchvision / spconv)
from e2e.models.fe2e import FE2E, FE2EConfig  # noqa: E402
from e2e.models.mesm import MESM, MESMConfig  # noqa: E402

MODALITIES = ("v", "a")


class _TextStub(nn.Module):
    """Stands in for the text encoder: the models only read ``hidden_size`` when building the CNNs."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size


def build_extractors(name: str, args) -> nn.ModuleDict:
    stub = _TextStub(args.text_dim)
    if name == "mesm":
        config = MESMConfig(
            modalities="tav",
            cnn="mesm_vgg",
            cnn_width=args.cnn_width,
            top_p=args.top_p,
            sparse_blocks=args.sparse_blocks,
            attention_mode=args.attention_mode,
        )
        model = MESM(config, 6, text_encoder=stub, backend=args.backend)
    else:
        model = FE2E(FE2EConfig(modalities="tav", cnn="mesm_vgg", cnn_width=args.cnn_width), 6, text_encoder=stub)
    return model.cnns.to(args.device).train()


def random_inputs(args) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{modality: (packed frames, per-utterance lengths)} of random tensors, 8 utterances each."""
    generator = torch.Generator().manual_seed(0)
    inputs = {}
    for modality, count, shape in (("v", args.faces, (3, 48, 48)), ("a", args.chunks, (1, 128, 32))):
        utterances = min(8, count)
        lengths = torch.full((utterances,), count // utterances, dtype=torch.long)
        lengths[: count % utterances] += 1
        inputs[modality] = (torch.randn(count, *shape, generator=generator), lengths)
    return inputs


def cached_inputs(data: Path, args) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Real crops (normalised as in training) and log-mel chunks from the feature cache under ``data``."""
    import numpy as np

    from e2e.data.dataset import normalise_faces
    from e2e.data.mel import mel_chunks

    files = sorted(data.rglob("*.npz"))
    if not files:
        raise SystemExit(f"{data}: no cache files (*.npz); run `e2e preprocess {data}` first")
    wanted = {"v": args.faces, "a": args.chunks}
    parts: dict[str, list[torch.Tensor]] = {"v": [], "a": []}
    for path in files:
        with np.load(path) as archive:
            faces, mel = archive["faces"], archive["mel"]
        for modality, frames in (
            ("v", partial(normalise_faces, faces)),
            ("a", partial(mel_chunks, torch.from_numpy(mel), log=True)),
        ):
            missing = wanted[modality] - sum(len(part) for part in parts[modality])
            if missing > 0:
                parts[modality].append(frames()[:missing])
        if all(sum(len(part) for part in parts[m]) >= wanted[m] for m in MODALITIES):
            break
    inputs = {}
    for modality in MODALITIES:
        got = sum(len(part) for part in parts[modality])
        if got < wanted[modality]:
            raise SystemExit(
                f"{data}: only {got} {'face crops' if modality == 'v' else 'mel chunks'} "
                f"in the cache, {wanted[modality]} wanted"
            )
        inputs[modality] = (
            torch.cat(parts[modality]),
            torch.tensor([len(part) for part in parts[modality]], dtype=torch.long),
        )
    return inputs


class Workload:
    """One model's extractors with fixed inputs, text and output gradients on ``device``."""

    def __init__(self, name: str, args, inputs: dict, text: torch.Tensor):
        self.name, self.device = name, torch.device(args.device)
        self.cnns = build_extractors(name, args)
        self.inputs = {m: (frames.to(self.device), lengths) for m, (frames, lengths) in inputs.items()}
        # each frame gets the CLS of its own utterance, as MESM._extract does; a leaf that needs grad
        self.text = {
            m: text[: len(lengths)].repeat_interleave(lengths, dim=0).to(self.device).requires_grad_()
            for m, (_, lengths) in inputs.items()
        }
        self.kept: dict[str, list[float]] = {}  # MESM: fraction of dense sites each sparse block kept
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            shapes = {m: self._features(m, record=True).shape for m in MODALITIES}
        self.grads = {m: torch.randn(shape, generator=generator).to(self.device) for m, shape in shapes.items()}

    def _features(self, modality: str, record: bool = False) -> torch.Tensor:
        frames = self.inputs[modality][0]
        if self.name == "mesm":
            output = self.cnns[modality](frames, self.text[modality])
            if record:
                self.kept[modality] = [round(trace.keep.float().mean().item(), 4) for trace in output.traces]
            return output.features
        return self.cnns[modality](frames)

    def step(self) -> None:
        self.cnns.zero_grad(set_to_none=True)
        for modality in MODALITIES:
            self.text[modality].grad = None
        # as in the model: both modalities' activations are alive when backward starts
        features = [self._features(modality) for modality in MODALITIES]
        torch.autograd.backward(features, [self.grads[modality] for modality in MODALITIES])

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed_step(self) -> float:
        self.sync()
        started = time.perf_counter()
        self.step()
        self.sync()
        return time.perf_counter() - started

    def peak_bytes(self) -> int:
        """High-water mark of live tensor bytes during one step, above the level at its start."""
        self.cnns.zero_grad(set_to_none=True)
        for modality in MODALITIES:
            self.text[modality].grad = None
        if self.device.type == "cuda":
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            self.step()
            self.sync()
            return torch.cuda.max_memory_allocated(self.device) - before
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            self.step()
        # "[memory]" events: + bytes per allocation, - bytes per free, of the CPU allocator
        events = sorted(
            (event.start_ns(), event.nbytes())
            for event in prof.profiler.kineto_results.events()
            if event.name() == "[memory]" and str(event.device_type()).endswith("CPU")
        )
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
        return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--top-p", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="corpus or cache folder with preprocessed *.npz files (default: random inputs)",
    )
    parser.add_argument("--faces", type=int, default=32, help="face crops in the packed batch")
    parser.add_argument("--chunks", type=int, default=32, help="mel chunks in the packed batch")
    parser.add_argument("--cnn-width", type=float, default=1.0, help="channel multiplier (1 = the paper)")
    parser.add_argument("--sparse-blocks", type=int, default=3)
    parser.add_argument("--attention-mode", default="trainable", choices=("trainable", "faithful"))
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "spconv"),
        help="MESM's sparse backend (auto: spconv on CUDA, pure torch on CPU)",
    )
    parser.add_argument("--text-dim", type=int, default=768, help="text CLS size (768 = ALBERT-base)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    inputs = cached_inputs(args.data, args) if args.data else random_inputs(args)
    utterances = max(len(lengths) for _, lengths in inputs.values())
    text = torch.randn(utterances, args.text_dim, generator=torch.Generator().manual_seed(2))
    workloads = {name: Workload(name, args, inputs, text) for name in ("fe2e", "mesm")}

    peaks = {name: work.peak_bytes() for name, work in workloads.items()}
    for work in workloads.values():
        for _ in range(args.warmup):
            work.step()
    times: dict[str, list[float]] = {name: [] for name in workloads}
    for repeat in range(args.repeats):
        order = ("fe2e", "mesm") if repeat % 2 == 0 else ("mesm", "fe2e")
        for name in order:
            times[name].append(workloads[name].timed_step())

    fe2e_ms, mesm_ms = (statistics.median(times[name]) * 1e3 for name in ("fe2e", "mesm"))
    fe2e_mb, mesm_mb = (peaks[name] / 2**20 for name in ("fe2e", "mesm"))
    print(
        json.dumps(
            {
                "fe2e_ms": round(fe2e_ms, 1),
                "mesm_ms": round(mesm_ms, 1),
                "ratio": round(mesm_ms / fe2e_ms, 3),
                "fe2e_peak_mb": round(fe2e_mb, 1),
                "mesm_peak_mb": round(mesm_mb, 1),
                "memory_ratio": round(mesm_mb / fe2e_mb, 3),
                "top_p": args.top_p,
                "threads": torch.get_num_threads(),
                "device": args.device,
                "cnn_width": args.cnn_width,
                "attention_mode": args.attention_mode,
                "faces": args.faces,
                "chunks": args.chunks,
                "inputs": str(args.data) if args.data else "random",
                "repeats": args.repeats,
                "mesm_kept_sites": workloads["mesm"].kept,
                "fe2e_ms_all": [round(t * 1e3, 1) for t in times["fe2e"]],
                "mesm_ms_all": [round(t * 1e3, 1) for t in times["mesm"]],
                "target": "ratio <= 0.75",
                "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
