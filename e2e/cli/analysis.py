"""``e2e flops`` (feature-extraction FLOPs, MESM vs FE2E) and ``e2e visualize`` (MESM's kept sites)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from e2e.cli.options import add_config, add_data_dir, add_out, add_overrides
from e2e.data.bundle import SPLITS


def register(commands) -> None:
    flops = commands.add_parser("flops", help="feature-extraction FLOPs per utterance, MESM vs FE2E")
    add_config(flops)
    add_overrides(flops)
    flops.add_argument("--batch", type=int, default=8)
    flops.add_argument("--split", default="test", choices=SPLITS)
    flops.add_argument("--max-utterances", type=int, default=0, help="0 = the whole split")
    flops.add_argument("--ckpt", type=Path, default=None, help="measure a trained model's kept sites")
    flops.add_argument("--json", type=Path, default=None, help="write the full report (per layer) here")
    flops.set_defaults(handler=run_flops)

    visualize = commands.add_parser("visualize", help="MESM kept sites over faces and mel chunks, per block")
    visualize.add_argument("--ckpt", type=Path, required=True)
    visualize.add_argument("--ids", nargs="+", required=True)
    add_out(visualize, help="folder for the attention-map images and density.json")
    add_data_dir(visualize, required=False)
    visualize.set_defaults(handler=run_visualize)


def run_flops(args: argparse.Namespace) -> int:
    from data_reorg.io import write_text_atomic
    from e2e.analysis.flops import measure_flops
    from e2e.models import load_config
    from e2e.reporting.tables import format_flops_table
    from e2e.training.checkpoint import load_checkpoint

    state = load_checkpoint(args.ckpt)["model"] if args.ckpt else None
    report = measure_flops(
        load_config(args.config, args.overrides),
        split=args.split,
        max_utterances=args.max_utterances,
        batch_size=args.batch,
        state_dict=state,
    )
    print(format_flops_table(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def run_visualize(args: argparse.Namespace) -> int:
    from e2e.reporting.attention_maps import visualize

    result = visualize(args.ckpt, args.ids, args.out, data_dir=args.data_dir)
    print("\n".join(str(image) for image in result["images"]))
    print(f"{args.out / 'density.json'}: mean fraction of sites kept per block {result['density']['mean']}")
    return 0
