"""``e2e``: preprocess reorganized clips, train and evaluate models, predict on a new video.

    e2e preprocess DATA_DIR [--jobs N] [--device cuda]
    e2e features DATA_DIR [--text-model minilm] [--text-max-length 100]
    e2e train --config configs/iemocap/mesm.yaml [--set key=value ...] --out RUN_DIR [--resume]
    e2e eval --ckpt RUN_DIR/checkpoints/best.pt [--split test]
    e2e predict --ckpt CKPT VIDEO (--text "..." | --transcript FILE) [--start S --end E] [--audio WAV]
    e2e flops --config CFG [--set ...] [--batch N] [--json FILE]
    e2e visualize --ckpt CKPT --ids ID... --out DIR
    e2e sweep top-p --config CFG --values 0.1:1.0:0.1 --seeds 0,1,2 --out DIR [--jobs N]
    e2e sweep modalities --config configs/demo --models fe2e,mesm --seeds 0,1,2 --out DIR
    e2e sweep missing --data DATA_DIR --models all --rates 0.0:0.9:0.1 --out DIR [--config-dir configs/demo]
    e2e benchmark --data DATA_DIR --models all --seeds 0,1,2 --out DIR [--config-dir configs/demo]
    e2e report RUN_DIR... [--out DIR] | e2e table RUN_DIR... | e2e models
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from data_reorg.io import DiskFullError
from data_reorg.media import MediaError
from data_reorg.workers import WorkerDied
from e2e.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args) or 0
    except (ConfigError, MediaError, DiskFullError, WorkerDied, FileNotFoundError, FileExistsError, ValueError,
            KeyError) as error:
        print(f"e2e: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    preprocess = commands.add_parser("preprocess", help="cache face crops and mel spectrograms")
    preprocess.add_argument("data_dir", type=Path)
    preprocess.add_argument("--img-interval-ms", type=int, default=500)
    preprocess.add_argument("--jobs", type=int, default=1)
    preprocess.add_argument("--device", default="cpu", help="MTCNN device: cpu, cuda, cuda:N")
    preprocess.add_argument("--no-progress", action="store_true")
    preprocess.set_defaults(handler=_preprocess)

    features = commands.add_parser("features", help="cache the two-stage features of the feature models")
    features.add_argument("data_dir", type=Path)
    features.add_argument("--text-model", default="minilm", help="HF id or local folder (the config's text_model)")
    features.add_argument("--img-interval-ms", type=int, default=500)
    features.add_argument("--text-max-length", type=int, default=100)
    features.add_argument("--device", default="cpu")
    features.add_argument("--no-progress", action="store_true")
    features.set_defaults(handler=_features)

    train = commands.add_parser("train", help="train a model (DDP under torchrun)")
    train.add_argument("--config", type=Path, required=True)
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint at its stored thresholds")
    evaluate.add_argument("--ckpt", type=Path, required=True)
    evaluate.add_argument("--split", default="test", choices=("train", "valid", "test"))
    evaluate.add_argument("--data-dir", type=Path, default=None)
    evaluate.add_argument("--device", default="cpu")
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="per-emotion probabilities for a new video")
    predict.add_argument("--ckpt", type=Path, required=True)
    predict.add_argument("video", type=Path)
    text = predict.add_mutually_exclusive_group(required=True)
    text.add_argument("--text")
    text.add_argument("--transcript", type=Path, help="file holding the transcript")
    predict.add_argument("--start", type=float, default=None, help="seconds into VIDEO")
    predict.add_argument("--end", type=float, default=None, help="seconds into VIDEO")
    predict.add_argument("--audio", type=Path, default=None,
                         help="audio file on the video's timeline (default: the video's own audio track; for a "
                              "clip DATA/video/<id>.mp4 of a reorganized folder without one, DATA/audio/<id>.wav)")
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(handler=_predict)

    table = commands.add_parser("table", help="markdown table of finished runs' test metrics")
    table.add_argument("run_dirs", type=Path, nargs="+")
    table.add_argument("--split", default="test", choices=("valid", "test"))
    table.set_defaults(handler=_table)

    flops = commands.add_parser("flops", help="feature-extraction FLOPs per utterance, MESM vs FE2E")
    flops.add_argument("--config", type=Path, required=True)
    flops.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    flops.add_argument("--batch", type=int, default=8)
    flops.add_argument("--split", default="test", choices=("train", "valid", "test"))
    flops.add_argument("--max-utterances", type=int, default=0, help="0 = the whole split")
    flops.add_argument("--ckpt", type=Path, default=None, help="measure a trained model's kept sites")
    flops.add_argument("--json", type=Path, default=None, help="write the full report (per layer) here")
    flops.set_defaults(handler=_flops)

    visualize = commands.add_parser("visualize", help="MESM kept sites over faces and mel chunks, per block")
    visualize.add_argument("--ckpt", type=Path, required=True)
    visualize.add_argument("--ids", nargs="+", required=True)
    visualize.add_argument("--out", type=Path, required=True)
    visualize.add_argument("--data-dir", type=Path, default=None)
    visualize.set_defaults(handler=_visualize)

    sweep = commands.add_parser("sweep", help="top-p and modality sweeps (each point its own run)")
    sweeps = sweep.add_subparsers(dest="sweep", required=True)
    top_p = sweeps.add_parser("top-p", help="MESM per top-p value and seed, FE2E as reference (Figure 5)")
    top_p.add_argument("--config", type=Path, required=True)
    top_p.add_argument("--values", default="0.1:1.0:0.1", help="start:stop:step (inclusive) or a,b,c")
    top_p.add_argument("--flops-utterances", type=int, default=8, help="test utterances for GFLOPs")
    modalities = sweeps.add_parser("modalities", help="T, A, V, TA, TV, AV, TAV per model (Table 5)")
    modalities.add_argument("--config", type=Path, required=True,
                            help="a folder of <model>.yaml files, or one YAML used for every model")
    modalities.add_argument("--models", default="fe2e,mesm")
    missing = sweeps.add_parser("missing", help="test metrics against the fraction of missing inputs, per model")
    _add_benchmark_arguments(missing)
    missing.add_argument("--rates", default="0.0:0.9:0.1", help="start:stop:step (inclusive) or a,b,c")
    missing.add_argument("--modes", default="elements,modalities",
                         help="elements (frames, chunks, tokens) and/or modalities (whole modalities)")
    missing.set_defaults(handler=_sweep_missing)
    for parser_ in (top_p, modalities):
        parser_.add_argument("--seeds", default="0")
        parser_.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
        parser_.add_argument("--out", type=Path, required=True)
        parser_.add_argument("--jobs", type=int, default=1, help="points trained in parallel processes")
    top_p.set_defaults(handler=_sweep_top_p)
    modalities.set_defaults(handler=_sweep_modalities)

    benchmark = commands.add_parser("benchmark", help="every model on the same clips and splits: one mean±std table")
    _add_benchmark_arguments(benchmark)
    benchmark.set_defaults(handler=_benchmark)

    report = commands.add_parser("report", help="mean±std tables (markdown + CSV) over finished runs")
    report.add_argument("run_dirs", type=Path, nargs="+")
    report.add_argument("--out", type=Path, default=None, help="folder for report.md and report.csv")
    report.set_defaults(handler=_report)

    models = commands.add_parser("models", help="list registered models")
    models.set_defaults(handler=_models)
    return parser


def _add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="a reorganized corpus (data-reorg output)")
    parser.add_argument("--models", default="fe2e,mesm,lf_lstm,lf_trans,emoembs,mult",
                        help="comma-separated registered models, or 'all' (the twelve)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="folder of <model>.yaml files (default: configs/<dataset of DATA>)")
    parser.add_argument("--knowledge-data", type=Path, default=None,
                        help="the other reorganized corpus, where ConKI pretrains its adapters")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")


def _benchmark_inputs(args: argparse.Namespace) -> dict:
    """The arguments shared by ``benchmark`` and ``sweep missing``, resolved."""
    from e2e.benchmark import dataset_of, parse_models

    config_dir = args.config_dir or Path("configs") / dataset_of(args.data)
    return dict(data_dir=args.data, models=parse_models(args.models), seeds=_seeds(args.seeds),
                config_dir=config_dir, out=args.out, overrides=args.overrides,
                knowledge_data=args.knowledge_data, jobs=args.jobs)


def _benchmark(args: argparse.Namespace) -> int:
    from e2e.benchmark import benchmark

    summary = benchmark(**_benchmark_inputs(args))
    print((args.out / "report.md").read_text(encoding="utf-8"))
    metric = summary["metric"]
    for name, entry in summary["models"].items():
        verdict = "beats" if entry["beats_majority"] else "does NOT beat"
        print(f"{name}: test {metric} {100 * entry[metric]:.1f}, F1 {100 * entry['f1']:.1f} -> {verdict} the "
              f"majority baseline ({100 * summary['majority'][metric]:.1f}, F1 {100 * summary['majority']['f1']:.1f})")
    return 0


def _sweep_missing(args: argparse.Namespace) -> int:
    from e2e.robustness import sweep_missing
    from e2e.sweep import parse_values

    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    csv = sweep_missing(**_benchmark_inputs(args), rates=parse_values(args.rates), modes=modes)
    print(f"{csv}\n{args.out / 'missing.png'}")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from e2e.preprocess import preprocess

    return _print_cache_summary(preprocess(args.data_dir, args.img_interval_ms, args.jobs, _device(args.device),
                                           not args.no_progress))


def _device(spec: str) -> str:
    """``spec`` checked by the one device resolver before any data or model is loaded."""
    from e2e.distributed import resolve_device

    return str(resolve_device(spec))


def _print_cache_summary(summary) -> int:
    """One line per cache build, the problems on stderr; exit status 1 when every item failed."""
    print(f"{summary.cache_dir}: {summary.total} utterances, {summary.built} built, {summary.reused} reused, "
          f"{len(summary.problems)} problems ({summary.seconds:.1f} s)")
    for problem in summary.problems:
        print(f"  {problem['id']}: {problem['error']}", file=sys.stderr)
    return 0 if summary.total > len(summary.problems) else 1


def _features(args: argparse.Namespace) -> int:
    from e2e.feature_cache import extract_features

    return _print_cache_summary(extract_features(args.data_dir, args.text_model, args.img_interval_ms,
                                                 args.text_max_length, not args.no_progress, _device(args.device)))


def _train(args: argparse.Namespace) -> int:
    from e2e.config import load_config
    from e2e.tables import results_table
    from e2e.train import train

    config = load_config(args.config, args.overrides)
    results = train(config, args.out, resume=args.resume)
    if results.get("test"):
        print(results_table([dict(results, run=str(args.out))]))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from e2e.train import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.ckpt, args.split, args.data_dir, device=_device(args.device))
    print(json.dumps(metrics, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from e2e.predict import predict_video

    text = args.text if args.text is not None else args.transcript.read_text(encoding="utf-8")
    print(predict_video(args.ckpt, args.video, text, args.start, args.end, args.device, args.audio).format())
    return 0


def _table(args: argparse.Namespace) -> int:
    from e2e.tables import results_table

    print(results_table(_finished_runs(args.run_dirs, args.split), args.split))
    return 0


def _finished_runs(paths: list[Path], split: str = "test") -> list[dict]:
    """The finished runs' results among ``paths``; every other path is named on stderr with the reason."""
    from e2e.tables import load_results

    results, notes = load_results(paths, split)
    for note in notes:
        print(f"e2e: skipped {note}", file=sys.stderr)
    return results


def _flops(args: argparse.Namespace) -> int:
    from data_reorg.io import write_text_atomic
    from e2e.config import load_config
    from e2e.flops import format_flops_table, measure_flops
    from e2e.train import load_checkpoint

    config = load_config(args.config, args.overrides)
    state = load_checkpoint(args.ckpt)["model"] if args.ckpt else None
    report = measure_flops(config, split=args.split, max_utterances=args.max_utterances,
                           batch_size=args.batch, state_dict=state)
    print(format_flops_table(report))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


def _visualize(args: argparse.Namespace) -> int:
    from e2e.visualize import visualize

    result = visualize(args.ckpt, args.ids, args.out, args.data_dir)
    print("\n".join(str(image) for image in result["images"]))
    print(f"{args.out / 'density.json'}: mean fraction of sites kept per block {result['density']['mean']}")
    return 0


def _seeds(text: str) -> list[int]:
    return [int(seed) for seed in text.split(",") if seed.strip()]


def _sweep_top_p(args: argparse.Namespace) -> int:
    from e2e.sweep import parse_values, sweep_top_p

    csv = sweep_top_p(args.config, args.overrides, parse_values(args.values), _seeds(args.seeds), args.out,
                      args.jobs, args.flops_utterances)
    print(f"{csv}\n{args.out / 'top_p.png'}")
    return 0


def _sweep_modalities(args: argparse.Namespace) -> int:
    from e2e.sweep import sweep_modalities

    models = [name.strip() for name in args.models.split(",") if name.strip()]
    csv = sweep_modalities(args.config, models, _seeds(args.seeds), args.out, args.overrides, args.jobs)
    print((args.out / "modalities.md").read_text(encoding="utf-8"))
    print(csv)
    return 0


def _report(args: argparse.Namespace) -> int:
    from e2e.report import write_report

    print(write_report(_finished_runs(args.run_dirs), args.out))
    return 0


def _models(args: argparse.Namespace) -> int:
    from e2e.models import available_models

    print("\n".join(available_models()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
