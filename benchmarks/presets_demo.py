"""The `paper` and `improved` presets of every model side by side on the demo corpus.

Each run trains ``configs/iemocap/<model>.yaml`` (paper) or ``<model>-improved.yaml`` with only what the
demo must change, so the presets differ exactly in their documented settings: for FE2E / MESM the
offline MiniLM text encoder and the demo configs' CPU-sized network, epochs and learning rates; for the
feature models the MiniLM feature cache and an epoch cap (their papers' own sizes and learning rates
stay; ConKI trains without its knowledge pretraining). Finished runs
(``OUT/<model>-<preset>/results.json``) are reused.

Prints one JSON object: per run the preset ``results.json`` records, its deviations from the paper
preset beyond the demo's, the test metrics (per-class Acc / F1, 6-way accuracy) and MESM's kept-site
fractions.
    python benchmarks/presets_demo.py [--data build/demo] [--out build/presets] [--seed 0] [--models fe2e,mesm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/...` from a checkout

from demo_corpus import ensure_demo  # noqa: E402  (beside this script)

# configs/demo/{fe2e,mesm}.yaml's sizes and budget (see their comments), applied over either preset
END_TO_END_DEMO = {
    "model.text_model": "minilm",
    "model.text_max_length": 32,
    "model.cnn_width": 0.25,
    "model.temporal_layers": 1,
    "model.temporal_ffn": 128,
    "data.batch_size": 8,
    "train.epochs": 6,
    "train.lr": 3.0e-4,
    "train.text_lr_factor": 0.1666667,
}
FEATURES_DEMO = {"model.text_model": "minilm", "model.text_max_length": 32, "train.epochs": 10}
PRESETS = ("paper", "improved")


def demo_size(model: str) -> dict:
    from e2e.models import model_inputs

    return END_TO_END_DEMO if model_inputs(model) == "raw" else FEATURES_DEMO


def train_run(corpus: Path, model: str, preset: str, seed: int, out: Path) -> dict:
    from e2e.cli import main

    folder = out / f"{model}-{preset}"
    results = folder / "results.json"
    if not results.is_file():
        config = REPO / "configs" / "iemocap" / (f"{model}.yaml" if preset == "paper" else f"{model}-improved.yaml")
        changes = {**demo_size(model), "data.data_dir": corpus, "train.seed": seed, "train.progress": "false"}
        args = ["train", "--config", str(config), "--out", str(folder)]
        for key, value in changes.items():
            args += ["--set", f"{key}={value}"]
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            if main(args) != 0:
                raise SystemExit(f"{folder.name}: e2e train failed")
    return json.loads(results.read_text(encoding="utf-8"))


def summary(model: str, preset: str, results: dict) -> dict:
    test = results["test"]
    return {
        "model": model,
        "preset": preset,
        "recorded_preset": results["preset"],
        "preset_deviations": sorted(key for key in results["deviations"] if key not in demo_size(model)),
        "acc": round(test["acc"], 4),
        "f1": round(test["f1"], 4),
        "multiclass_acc": round(test["multiclass_acc"], 4),
        "best_epoch": results["best_epoch"],
        "kept_fraction": results.get("kept_fraction"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=REPO / "build" / "demo", help="demo corpus root, built when missing"
    )
    parser.add_argument("--out", type=Path, default=REPO / "build" / "presets", help="run folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="preprocess worker processes, if the cache is built")
    parser.add_argument("--models", default="", help="comma-separated (default: every shipped model)")
    args = parser.parse_args()
    from e2e.data.feature_cache import extract_features
    from e2e.models import shipped_models

    models = [name for name in args.models.split(",") if name] or shipped_models()
    corpus, problems = ensure_demo(args.data.resolve(), args.jobs)
    problems += len(extract_features(corpus, "minilm", 500, 32, progress=False).problems)
    if problems:
        raise SystemExit(f"{problems} utterances could not be preprocessed")
    rows = [summary(m, p, train_run(corpus, m, p, args.seed, args.out.resolve())) for m in models for p in PRESETS]
    demo = {"end_to_end": END_TO_END_DEMO, "features": FEATURES_DEMO}
    print(json.dumps({"data": str(corpus), "seed": args.seed, "demo_size": demo, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
