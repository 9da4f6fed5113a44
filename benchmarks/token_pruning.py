"""Text-queried top-p token pruning, pruned vs unpruned encoder: forward + backward time and FLOPs on CPU.

Both encoders are the real :class:`~e2e.models.layers.hf_encoders.HFEncoder` on the same random-weight ViT
(built from a ``ViTConfig``, saved with ``save_pretrained`` and loaded by path, as a user's folder would be)
with the same weights: the unpruned one runs every layer on all tokens; the pruned one (MESM's scoring of
every patch against the text CLS, top-p nucleus, real gather) runs the layers after ``--prune-layers`` on the
kept tokens only. Attention mode ``trainable`` (the scorer is in the graph, as in training); training mode.

One step = forward on a packed batch of ``--images`` face crops with a random N(0, 1) text CLS each, then
backward of the squared output sum. ``--warmup`` untimed steps, then ``--repeats`` interleaved repetitions
(alternating order); the median of each. FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` on one
forward + backward of each (the pruned count includes the scorer). Freshly initialised scorers give near
uniform attention, so p = 0.5 keeps about half the patches; a trained scorer is peakier and keeps fewer.

Prints one JSON object; targets: time_ratio <= 0.7, flops_ratio <= 0.6.
    python benchmarks/token_pruning.py [--top-p 0.5] [--prune-layers 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/...` from a checkout

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import e2e  # noqa: E402,F401  (the compat shim, before transformers' vision classes)
from e2e.models.layers.hf_encoders import EncoderOptions, HFEncoder  # noqa: E402

TEXT_DIM = 384


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-p", type=float, default=0.5)
    parser.add_argument("--prune-layers", default="1")
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def build_encoders(args: argparse.Namespace, folder: Path) -> tuple[HFEncoder, HFEncoder]:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        image_size=args.image_size,
        patch_size=args.patch_size,
    )
    ViTModel(config).save_pretrained(folder)
    plain = HFEncoder(EncoderOptions(str(folder), "model.visual_encoder"), "visual", TEXT_DIM)
    pruned = HFEncoder(
        EncoderOptions(
            str(folder),
            "model.visual_encoder",
            prune_layers=args.prune_layers,
            top_p=args.top_p,
            attention_mode="trainable",
        ),
        "visual",
        TEXT_DIM,
    )
    pruned.load_state_dict(plain.state_dict(), strict=False)
    return plain.train(), pruned.train()


def step(encoder: HFEncoder, images: torch.Tensor, text: torch.Tensor) -> list:
    features, traces = encoder(images, text)
    features.square().sum().backward()
    encoder.zero_grad(set_to_none=True)
    return traces


def flops(encoder: HFEncoder, images: torch.Tensor, text: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        step(encoder, images, text)
    return counter.get_total_flops()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(args.images, 3, args.image_size, args.image_size, generator=generator)
    text = torch.randn(args.images, TEXT_DIM, generator=generator)
    with tempfile.TemporaryDirectory() as folder:
        plain, pruned = build_encoders(args, Path(folder) / "vit")
    for _ in range(args.warmup):
        step(plain, images, text)
        traces = step(pruned, images, text)
    times: dict[str, list[float]] = {"unpruned": [], "pruned": []}
    for repeat in range(args.repeats):
        order = [("unpruned", plain), ("pruned", pruned)]
        for name, encoder in order if repeat % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            step(encoder, images, text)
            times[name].append(time.perf_counter() - started)
    unpruned_ms, pruned_ms = (1000 * statistics.median(times[name]) for name in ("unpruned", "pruned"))
    unpruned_flops, pruned_flops = flops(plain, images, text), flops(pruned, images, text)
    kept = [trace.keep.sum().item() / trace.keep.numel() for trace in traces]
    print(
        json.dumps(
            {
                "encoder": f"ViT {args.layers} layers, hidden {args.hidden}, {args.heads} heads, "
                f"{args.image_size}px / patch {args.patch_size} ({(args.image_size // args.patch_size) ** 2} + 1 "
                f"tokens), random weights",
                "images": args.images,
                "top_p": args.top_p,
                "prune_layers": args.prune_layers,
                "attention_mode": "trainable",
                "threads": args.threads,
                "kept_token_fraction": kept,
                "unpruned_ms": round(unpruned_ms, 2),
                "pruned_ms": round(pruned_ms, 2),
                "time_ratio": round(pruned_ms / unpruned_ms, 3),
                "unpruned_gflops": round(unpruned_flops / 1e9, 3),
                "pruned_gflops": round(pruned_flops / 1e9, 3),
                "flops_ratio": round(pruned_flops / unpruned_flops, 3),
                "targets": {"time_ratio": 0.7, "flops_ratio": 0.6},
                "loadavg_1min": os.getloadavg()[0],
                "torch": torch.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
