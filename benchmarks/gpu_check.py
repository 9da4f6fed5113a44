"""The GPU acceptance check: the CUDA paths of MESM, MTCNN, DDP and the CLI in one run (< 5 min on one H200).

Parts (each in its own try/except; a failing part records ``{"ok": false, "error": ...}`` and the
others still run; a part that needs CUDA records ``{"skipped": "no CUDA device"}`` without one):

- ``spconv_vs_torch``: :class:`~e2e.models.layers.sparse.SparseCNN` (trainable attention, p = 0.5) run
  with the spconv and the pure-torch sparse backends on the same weights and inputs: max abs / relative
  differences of the output and of every gradient (input, text, parameters), whether every block kept
  the same sites, and a bf16-autocast spconv pass (float32 output, finite gradients, relative L2
  distance to fp32) and a TF32 one (``torch.backends.cudnn.allow_tf32``, which spconv follows; the
  comparison itself runs with TF32 off). On CPU it runs spconv's CPU build single-threaded (its kernels
  race with more threads), small.
- ``mesm_vs_fe2e_time``: forward + backward time of MESM over FE2E (``configs/demo`` models at the
  paper's width, ``cnn_width`` 1) at p = 0.5 and 0.3, on a batch of 8 utterances with 20 face frames and
  25 mel chunks each (random pixels and spectrograms), bf16 autocast as in training; target ratio
  <= 0.75 at p = 0.5 (``meets_target``). On CPU: a quarter width, a tiny batch, fp32.
- ``bf16_keep_agreement``: the share of candidate sites whose top-p keep decision is the same in an fp32
  and a bf16-autocast forward of the same SparseCNNs (faces and mel chunks, per block and overall).
- ``mtcnn_cuda``: :class:`~e2e.data.faces.FaceCropper` (facenet-pytorch MTCNN) faces/s on CUDA, batches
  of 32 frames of 480 x 360 (``benchmarks/mtcnn_batch.py``'s frames, all with a face).
- ``ddp_nccl``: one :func:`~e2e.training.trainer.train_step` of a small MESM (faithful attention, so
  some parameters get no gradient) wrapped by :func:`~e2e.training.distributed.ddp_model` in an nccl
  process group of world size 1 (a file store).
- ``demo_train_predict``: ``data-reorg demo``, ``e2e preprocess --device cuda``, ``e2e train`` of
  fe2e and mesm (1 epoch, ``train.device=cuda``, 8 frames, 16 chunks) and ``e2e predict --device cuda``
  on a test clip, each a subprocess with a time limit.

``--quick``: the CPU-sized parts (what the test runs). Prints one JSON object; exit status 0 whatever
the parts found (read ``ok``).
    python benchmarks/gpu_check.py [--quick] [--device auto|cpu|cuda:N] [--parts a,b] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python benchmarks/...` from a checkout

import torch  # noqa: E402
from torch import nn  # noqa: E402

import e2e  # noqa: E402,F401  (the compat shim, before torchvision / transformers)
from e2e.models.layers import sparse_conv  # noqa: E402
from e2e.models.layers.cnn import INPUT_SHAPES  # noqa: E402
from e2e.models.layers.sparse import SparseCNN  # noqa: E402

CLASSES = ["ang", "exc", "fru", "hap", "neu", "sad"]
TEXTS = ["I can't believe it", "that is wonderful news", "leave me alone", "okay, fine"]
NO_CUDA = {"skipped": "no CUDA device"}


@dataclass(frozen=True)
class Sizes:
    width: float  # cnn_width of the timed models
    text_model: str
    utterances: int
    faces: int  # face frames per utterance
    chunks: int  # mel chunks per utterance
    frames: int  # frames per modality in the SparseCNN parts
    text_dim: int
    warmup: int
    iters: int


FULL = Sizes(1.0, "minilm", 8, 20, 25, 256, 384, 3, 10)
SMALL = Sizes(0.25, "tiny-bert", 2, 3, 3, 6, 16, 1, 2)


@dataclass(frozen=True)
class Context:
    device: torch.device
    sizes: Sizes
    work: Path

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------- helpers


def max_diff(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, the same over max |expected|)."""
    diff = (actual.float() - expected.float()).abs().max().item()
    return diff, diff / max(expected.float().abs().max().item(), 1e-12)


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm().clamp(min=1e-12)).item()


@contextlib.contextmanager
def threads(count: int | None):
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sparse_cnn(modality: str, ctx: Context, top_p: float = 0.5) -> SparseCNN:
    torch.manual_seed(0)
    channels = INPUT_SHAPES[modality][0]
    cnn = SparseCNN(channels, ctx.sizes.text_dim, top_p, attention_mode="trainable", width_scale=ctx.sizes.width)
    return cnn.to(ctx.device).train()


def cnn_inputs(modality: str, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(ctx.sizes.frames, *INPUT_SHAPES[modality], generator=generator)
    text = torch.randn(ctx.sizes.frames, ctx.sizes.text_dim, generator=generator)
    return x.to(ctx.device), text.to(ctx.device)


def demo_config(model: str, ctx: Context, *overrides: str):
    from e2e.models import load_config

    fixed = ["data.data_dir=unused", f"model.cnn_width={ctx.sizes.width}", f"model.text_model={ctx.sizes.text_model}"]
    return load_config(REPO / "configs" / "demo" / f"{model}.yaml", [*fixed, f"train.device={ctx.device}", *overrides])


def synthetic_batch(config, ctx: Context):
    """A collated batch of ``utterances`` with random face crops and mel chunks, on the device."""
    from e2e.data.dataset import collate
    from e2e.data.text import load_tokenizer

    generator = torch.Generator().manual_seed(2)
    items = [
        {
            "id": f"u{index}",
            "text": TEXTS[index % len(TEXTS)],
            "label": torch.eye(len(CLASSES))[index % len(CLASSES)],
            "faces": torch.randn(ctx.sizes.faces, *INPUT_SHAPES["v"], generator=generator),
            "audio": torch.randn(ctx.sizes.chunks, *INPUT_SHAPES["a"], generator=generator),
        }
        for index in range(ctx.sizes.utterances)
    ]
    batch = collate(items, load_tokenizer(config.model.text_model), config.model.text_max_length)
    return batch.to(ctx.device)


def build(config):
    from e2e.models.registry import build_model

    torch.manual_seed(0)
    return build_model(config.model, CLASSES)


# --------------------------------------------------------------------------- (a) spconv vs torch


def _backend_pass(cnn: SparseCNN, backend: str, x: torch.Tensor, text: torch.Tensor, probe=None, bf16=False):
    """Output and gradients of ``cnn`` on ``backend``; ``bf16``: the forward under bf16 autocast (the
    backward outside it, as in training)."""
    cnn.backend = backend
    inputs = [x.detach().requires_grad_(), text.detach().requires_grad_()]
    mixed = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with mixed:
        output = cnn(*inputs)
    probe = torch.randn_like(output.features) if probe is None else probe
    tensors = [*inputs, *cnn.parameters()]
    grads = torch.autograd.grad((output.features * probe).sum(), tensors, allow_unused=True)
    return output, grads, probe


def _compare_backends(modality: str, ctx: Context) -> dict:
    cnn = sparse_cnn(modality, ctx)
    x, text = cnn_inputs(modality, ctx)
    torch.manual_seed(3)
    reference, reference_grads, probe = _backend_pass(cnn, "torch", x, text)
    output, grads, _ = _backend_pass(cnn, "spconv", x, text, probe)
    pairs = [(g, r) for g, r in zip(grads, reference_grads) if g is not None or r is not None]
    if any(g is None or r is None for g, r in pairs):
        raise RuntimeError("one backend gave a gradient the other did not")
    grad_diffs = [max_diff(g, r) for g, r in pairs]
    forward = max_diff(output.features, reference.features)
    mixed, mixed_grads, _ = _backend_pass(cnn, "spconv", x, text, probe, bf16=True)
    torch.backends.cudnn.allow_tf32 = True  # spconv's (and cuDNN's) TF32 GEMMs, PyTorch's default for convs
    tf32, _, _ = _backend_pass(cnn, "spconv", x, text, probe)
    torch.backends.cudnn.allow_tf32 = False
    return {
        "same_kept_sites": all(torch.equal(a.keep, b.keep) for a, b in zip(output.traces, reference.traces)),
        "forward_max_abs": forward[0],
        "forward_max_rel": forward[1],
        "grad_max_abs": max(d[0] for d in grad_diffs),
        "grad_max_rel": max(d[1] for d in grad_diffs),
        "bf16_output_dtype": str(mixed.features.dtype),
        "bf16_finite": bool(torch.isfinite(mixed.features).all())
        and all(g is None or bool(torch.isfinite(g).all()) for g in mixed_grads),
        "bf16_vs_fp32_rel_l2": relative_l2(mixed.features, output.features),  # includes sites kept in one run only
        "tf32_same_kept_sites": all(torch.equal(a.keep, b.keep) for a, b in zip(tf32.traces, output.traces)),
        "tf32_vs_fp32_rel_l2": relative_l2(tf32.features, output.features),
    }


def spconv_vs_torch(ctx: Context) -> dict:
    if sparse_conv.spconv is None:
        raise RuntimeError("spconv is not importable")
    if ctx.cuda and sparse_conv.SPCONV_CPU_ONLY:
        raise RuntimeError("spconv is its CPU build on a CUDA machine: install spconv-cu126")
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # exact fp32 on both backends (spconv follows this flag)
    try:
        with threads(1 if not ctx.cuda else None):  # spconv's CPU kernels are right single-threaded only
            results = {modality: _compare_backends(modality, ctx) for modality in ("v", "a")}
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    tolerance = 1e-4
    ok = all(
        r["same_kept_sites"]
        and r["forward_max_rel"] <= tolerance
        and r["grad_max_rel"] <= tolerance
        and r["bf16_output_dtype"] == "torch.float32"
        and r["bf16_finite"]
        for r in results.values()
    )
    return {"ok": ok, "tolerance_rel": tolerance, "faces": results["v"], "audio": results["a"]}


# --------------------------------------------------------------------------- (b) MESM / FE2E time


def _fwd_bwd(model: nn.Module, batch, config, ctx: Context) -> float:
    """Seconds of one forward + backward (bf16 autocast on CUDA as in training), synchronised."""
    from e2e.training.inference import autocast

    ctx.sync()
    started = time.perf_counter()
    model.zero_grad(set_to_none=True)
    with autocast(config, ctx.device):
        output = model(batch)
    loss = nn.functional.binary_cross_entropy_with_logits(output.logits.float(), batch.labels.float())
    if output.aux_loss is not None:
        loss = loss + output.aux_loss.float()
    loss.backward()
    ctx.sync()
    return time.perf_counter() - started


def _time_models(models: dict, batch, ctx: Context) -> dict[str, float]:
    """Median fwd+bwd ms per model; models alternate step by step so load changes hit all alike."""
    times = {name: [] for name in models}
    for step in range(ctx.sizes.warmup + ctx.sizes.iters):
        for name, (model, config) in models.items():
            seconds = _fwd_bwd(model, batch, config, ctx)
            if step >= ctx.sizes.warmup:
                times[name].append(seconds)
    return {name: statistics.median(values) * 1000 for name, values in times.items()}


def _kept_fractions(model: nn.Module, config, batch, ctx: Context) -> dict:
    from e2e.models.layers.sparse import KeptSites
    from e2e.training.inference import autocast

    kept = KeptSites()
    with torch.no_grad(), autocast(config, ctx.device):
        kept.observe(batch, model(batch))
    return {modality: [round(f, 4) for f in fractions] for modality, fractions in kept.fractions().items()}


def mesm_vs_fe2e_time(ctx: Context) -> dict:
    fe2e_config = demo_config("fe2e", ctx)
    models = {"fe2e": (build(fe2e_config).to(ctx.device).train(), fe2e_config)}
    for top_p in (0.5, 0.3):
        config = demo_config("mesm", ctx, f"model.top_p={top_p}")
        models[f"mesm_p{top_p}"] = (build(config).to(ctx.device).train(), config)
    batch = synthetic_batch(fe2e_config, ctx)
    ms = _time_models(models, batch, ctx)
    ratios = {f"ratio_p{p}": ms[f"mesm_p{p}"] / ms["fe2e"] for p in (0.5, 0.3)}
    kept = {f"kept_fraction_p{p}": _kept_fractions(*models[f"mesm_p{p}"], batch, ctx) for p in (0.5, 0.3)}
    return {
        "ok": all(math.isfinite(value) for value in ratios.values()),
        "meets_target": ratios["ratio_p0.5"] <= 0.75,
        "target": "ratio_p0.5 <= 0.75",
        **{key: round(value, 4) for key, value in ratios.items()},
        "ms": {name: round(value, 2) for name, value in ms.items()},
        **kept,
        "cnn_width": ctx.sizes.width,
        "batch": {"utterances": ctx.sizes.utterances, "faces": ctx.sizes.faces, "chunks": ctx.sizes.chunks},
        "bf16": ctx.cuda and fe2e_config.train.bf16,
        "attention_mode": models["mesm_p0.5"][1].model.attention_mode,
    }


# --------------------------------------------------------------------------- (c) bf16 keep agreement


def _agreement(modality: str, ctx: Context) -> list[tuple[int, int]]:
    """Per block (agreeing, candidate sites): candidates of either run."""
    cnn = sparse_cnn(modality, ctx)
    x, text = cnn_inputs(modality, ctx)
    with torch.no_grad():
        fp32 = cnn(x, text)
        with torch.autocast(ctx.device.type, dtype=torch.bfloat16):
            bf16 = cnn(x, text)
    from e2e.models.layers.sparse import block_inputs

    counts = []
    fp32_inputs, bf16_inputs = (block_inputs([trace.keep for trace in run.traces]) for run in (fp32, bf16))
    for a, b, ca, cb in zip(fp32.traces, bf16.traces, fp32_inputs, bf16_inputs):
        candidates = ca | cb
        counts.append((int(((a.keep == b.keep) & candidates).sum()), int(candidates.sum())))
    return counts


def bf16_keep_agreement(ctx: Context) -> dict:
    result = {"ok": True, "frames": ctx.sizes.frames, "cnn_width": ctx.sizes.width}
    agree = total = 0
    for modality, name in (("v", "faces"), ("a", "audio")):
        counts = _agreement(modality, ctx)
        result[name] = [round(a / t, 4) for a, t in counts]
        agree, total = agree + sum(a for a, _ in counts), total + sum(t for _, t in counts)
    result["overall"] = round(agree / total, 4)
    return result


# --------------------------------------------------------------------------- (d) MTCNN on CUDA


def mtcnn_cuda(ctx: Context) -> dict:
    if not ctx.cuda:
        return NO_CUDA
    sys.path.insert(0, str(REPO / "benchmarks"))
    from mtcnn_batch import make_frames

    from e2e.data.faces import FaceCropper

    frames, with_face = make_frames(64, 0.0, 300, 12)
    cropper = FaceCropper(str(ctx.device), batch_size=32)
    cropper.crops(frames[:32])  # warm-up (cuDNN autotuning, allocations)
    seconds = []
    for _ in range(3):
        ctx.sync()
        started = time.perf_counter()
        _, found = cropper.crops(frames)
        ctx.sync()
        seconds.append(time.perf_counter() - started)
    best = statistics.median(seconds)
    return {
        "ok": int(found.sum()) == with_face,
        "faces_per_s": round(int(found.sum()) / best, 1),
        "frames": len(frames),
        "found": int(found.sum()),
        "frame_size": list(frames[0].shape[:2]),
        "batch_size": 32,
    }


# --------------------------------------------------------------------------- (e) DDP under nccl


def ddp_nccl(ctx: Context) -> dict:
    if not ctx.cuda:
        return NO_CUDA
    import torch.distributed as dist

    from e2e.training import distributed
    from e2e.training.optim import build_optimizer
    from e2e.training.trainer import train_step

    store = dist.FileStore(str(ctx.work / "ddp_store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1, device_id=ctx.device)
    try:
        small = Context(ctx.device, SMALL, ctx.work)
        config = demo_config("mesm", small, "model.attention_mode=faithful")
        model = build(config).to(ctx.device).train()
        wrapped = distributed.ddp_model(model, ctx.device)
        optimizer = build_optimizer(model, config.train)
        before = [p.detach().clone() for p in model.parameters()]
        batch = synthetic_batch(config, small)
        loss = train_step(wrapped, optimizer, nn.BCEWithLogitsLoss(), batch, config, ctx.device)
        updated = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        return {
            "ok": math.isfinite(loss) and updated > 0,
            "backend": dist.get_backend(),
            "world_size": dist.get_world_size(),
            "loss": round(loss, 5),
            "parameters_updated": updated,
            "parameters": len(before),
        }
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- (f) demo train + predict


def _command(args: list[str], timeout: int) -> dict:
    started = time.perf_counter()
    try:
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "seconds": timeout, "error": f"timed out after {timeout} s"}
    step = {"rc": done.returncode, "seconds": round(time.perf_counter() - started, 1)}
    if done.returncode != 0:
        step["stderr_tail"] = done.stderr[-1500:]
    return step


def _e2e(*args: str) -> list[str]:
    return [sys.executable, "-m", "e2e.cli", *map(str, args)]


def _train_and_predict(model: str, corpus: Path, clip: dict, ctx: Context) -> dict:
    """``e2e train`` (1 epoch) of configs/demo/<model>.yaml on CUDA, then ``e2e predict`` of its best.pt."""
    out = ctx.work / "runs" / model
    overrides = [f"data.data_dir={corpus}", "train.epochs=1", f"train.device={ctx.device}", "train.progress=false"]
    overrides += ["data.max_frames=8", "data.max_chunks=16"]
    sets = [arg for override in overrides for arg in ("--set", override)]
    train = _command(_e2e("train", "--config", f"configs/demo/{model}.yaml", "--out", out, *sets), 150)
    train["results_json"] = (out / "results.json").is_file()
    video, ckpt = corpus / clip["video"], out / "checkpoints" / "best.pt"
    predict = _command(_e2e("predict", "--ckpt", ckpt, video, "--text", clip["text"], "--device", ctx.device), 90)
    return {f"train_{model}": train, f"predict_{model}": predict}


def demo_train_predict(ctx: Context) -> dict:
    if not ctx.cuda:
        return NO_CUDA
    from data_reorg.io import read_jsonl

    root = ctx.work / "demo"
    reorg = [sys.executable, "-c", "import sys; from data_reorg.cli import main; sys.exit(main(sys.argv[1:]))"]
    steps = {"demo": _command([*reorg, "demo", str(root), "--no-progress"], 150)}
    corpus = root / "iemocap"
    preprocess = _e2e("preprocess", corpus, "--device", ctx.device, "--jobs", 4, "--no-progress")
    steps["preprocess"] = _command(preprocess, 150)
    clip = next(row for row in read_jsonl(corpus / "manifest.jsonl") if row["split"] == "test")
    for model in ("fe2e", "mesm"):
        steps.update(_train_and_predict(model, corpus, clip, ctx))
    trained = all(steps[f"train_{model}"]["results_json"] for model in ("fe2e", "mesm"))
    return {"ok": trained and all(step.get("rc") == 0 for step in steps.values()), "steps": steps}


# --------------------------------------------------------------------------- driver

PARTS = {
    "spconv_vs_torch": spconv_vs_torch,
    "mesm_vs_fe2e_time": mesm_vs_fe2e_time,
    "bf16_keep_agreement": bf16_keep_agreement,
    "mtcnn_cuda": mtcnn_cuda,
    "ddp_nccl": ddp_nccl,
    "demo_train_predict": demo_train_predict,
}


def run_part(part, ctx: Context) -> dict:
    started = time.perf_counter()
    try:
        result = part(ctx)
    except Exception as error:  # noqa: BLE001  (recorded: one failing part must not hide the others)
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "where": traceback.format_exc()[-1500:]}
    if "skipped" not in result:
        result = {**result, "device": str(ctx.device), "seconds": round(time.perf_counter() - started, 2)}
    return result


def environment(device: torch.device) -> dict:
    spconv_version = None
    if sparse_conv.spconv is not None:
        import spconv

        spconv_version = getattr(spconv, "__version__", "unknown")
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "spconv": spconv_version,
        "spconv_cuda_build": sparse_conv.spconv is not None and not sparse_conv.SPCONV_CPU_ONLY,
        "cpu_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes everywhere (the CPU test)")
    parser.add_argument("--device", default="auto", help="auto (cuda:0 when available), cpu, cuda or cuda:N")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    from e2e.training.distributed import resolve_device

    device = resolve_device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = SMALL if args.quick or device.type != "cuda" else FULL
    ctx = Context(device, sizes, work)
    started = time.perf_counter()
    report = {"environment": environment(device), "quick": args.quick}
    try:
        for name in args.parts.split(","):
            report[name] = run_part(PARTS[name], ctx)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
