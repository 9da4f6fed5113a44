"""Feature-extraction FLOPs per utterance: the visual and acoustic CNNs of FE2E and MESM.

Counting rules (1 multiply-add = 2 FLOPs):

* **dense layers** (every ``nn.Conv2d`` of a modality's CNN; for MESM the dense stem) are counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` on the real batch, per module. It counts a padded
  3×3 conv as 9 taps at every output site, border sites included (zero padding is multiplied too).
* **sparse blocks** of MESM are counted from the sites each block kept (``extras["sparse_masks"]``;
  block k's mask is the set of sites both its submanifold convs run on): a conv costs
  ``2·C_in·C_out`` per (output site, input site) pair with both sites kept and the input in the output's
  3×3 window (:func:`pair_count`). This is the work the pure-torch backend actually performs. With every
  site of an H×W frame kept there are ``(3H−2)(3W−2)`` such pairs, not the dense count's ``9HW``:
  the dense count multiplies padding zeros, the sparse one never visits them.
* **attention scoring** (MESM only) is reported separately: ``W_x x`` and ``wᵀ(·)`` at every active
  site the block scores, ``2·C·C + 2·C``, plus the text projection ``W_t t``, ``2·D_text·C`` per frame.
* BatchNorm, ReLU, tanh, softmax, top-p and max-pooling are not counted, in dense and sparse layers
  alike (FlopCounterMode does not count them either).
* **Hugging Face encoders** (``model.audio_encoder`` / ``visual_encoder``): FlopCounterMode per encoder
  layer (``layers.i``), the rest of the backbone (embeddings, final norm) as ``embeddings``; where the
  counter has no formula for the attention kernel (CPU's fused SDPA) the attention matrices are added as
  ``4·D·K²`` per chunk (``QKᵀ`` and ``AV``, K = the tokens the layer ran on). Each layer's
  ``active_fraction`` is the share of the chunk's tokens it ran on (after token pruning, the kept ones);
  the pruners' scoring goes to the attention FLOPs. The reference is the same encoder without pruning.

:func:`measure_flops` also counts the dense FE2E CNN on the same frames (on the meta device: FLOPs
depend on shapes only), so ``ratio`` = MESM / FE2E conv FLOPs of the same utterances.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode

from e2e.config import ExperimentConfig
from e2e.data.dataset import EmotionDataset
from e2e.data.text import load_tokenizer
from e2e.models import build_model, model_spec
from e2e.models.layers.cnn import INPUT_SHAPES, build_cnn
from e2e.models.layers.end_to_end import encoder_steps, frames_of
from e2e.models.layers.hf_encoders import HFEncoder
from e2e.models.layers.sparse import KeptSites, SparseBlock, SparseCNN, block_inputs

GIGA = 1e9


def pair_count(mask: torch.Tensor) -> int:
    """Active (output, input) pairs of a 3×3 submanifold conv on ``mask`` (N, H, W) bool sites."""
    sites = mask[:, None].float()
    neighbours = F.conv2d(sites, torch.ones(1, 1, 3, 3, device=mask.device), padding=1)
    return int((neighbours * sites).sum())


def sparse_block_flops(block: SparseBlock, keep: torch.Tensor) -> tuple[int, int]:
    """(conv1, conv2) FLOPs of ``block`` running on the kept sites ``keep`` (N, H, W)."""
    c_out, _, _, c_in = block.conv1.weight.shape
    pairs = pair_count(keep)
    return 2 * c_in * c_out * pairs, 2 * c_out * c_out * pairs


def attention_flops(block: SparseBlock, active: torch.Tensor) -> int:
    """Scoring FLOPs of ``block`` over its input's ``active`` (N, H, W) sites (see the module doc)."""
    channels, text_dim = block.attention.text.weight.shape
    per_site = 2 * channels * channels + 2 * channels
    return per_site * int(active.sum()) + 2 * text_dim * channels * active.shape[0]


class _Tally:
    """FLOPs summed over batches: per (modality, layer) and per modality for the FE2E reference."""

    def __init__(self):
        self.layers: dict[tuple[str, str], dict] = {}
        self.reference: dict[str, int] = defaultdict(int)
        self.attention = 0
        self.utterances = 0
        self.kept_sites = KeptSites()

    def add(self, modality: str, layer: str, kind: str, flops: int, kept: int, sites: int) -> None:
        entry = self.layers.setdefault((modality, layer), {"kind": kind, "flops": 0, "kept": 0, "sites": 0})
        entry["flops"] += flops
        entry["kept"] += kept
        entry["sites"] += sites

    def per_modality(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for (modality, _), entry in self.layers.items():
            totals[modality] += entry["flops"]
        return totals


def _dense_convs(cnn: nn.Module) -> list[str]:
    """Names of a CNN's dense convolutions (a MESM block's submanifold convs are not ``nn.Conv2d``)."""
    return [name for name, module in cnn.named_modules() if isinstance(module, nn.Conv2d)]


def _count_batch(model: nn.Module, batch, config: ExperimentConfig, tally: _Tally) -> None:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = model(batch)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    for modality, cnn in model.cnns.items():
        frames, _ = encoder_steps(cnn, *frames_of(batch, modality))
        if isinstance(cnn, HFEncoder):
            traces = output.extras.get("token_traces", {}).get(modality, [])
            _count_encoder(cnn, counts, f"{root}.cnns.{modality}", traces, modality, tally)
            tally.reference[modality] += _unpruned_encoder_flops(cnn, frames)
            continue
        for name in _dense_convs(cnn):
            flops = sum(counts.get(f"{root}.cnns.{modality}.{name}", {}).values())
            tally.add(modality, name, "dense", flops, 0, 0)
        if isinstance(cnn, SparseCNN):
            _count_sparse(cnn, output.extras["sparse_masks"][modality], modality, tally)
        tally.reference[modality] += _dense_reference_flops(config, modality, frames)
    tally.kept_sites.observe(batch, output)
    tally.utterances += len(batch)


def _module_flops(counts: dict, name: str) -> int:
    return sum(counts.get(name, {}).values())


def _attention_counted(counts: dict, name: str) -> bool:
    """Whether FlopCounterMode counted the attention matrices of the layer ``name`` (it has formulas for
    bmm and some SDPA kernels, none for CPU's fused one)."""
    return any("bmm" in str(op) or "attention" in str(op) for op in counts.get(name, {}))


def _encoder_layer_flops(encoder: HFEncoder, counts: dict, prefix: str, widths: list[int]) -> list[int]:
    """Per encoder layer: its counted FLOPs, plus ``4·D·K²`` per chunk where the attention matrices were
    not counted; ``widths``: per layer the (padded) tokens per chunk K it ran on."""
    chunks = encoder.last_tokens[0]
    names = {id(module): name for name, module in encoder.named_modules()}
    flops = []
    for layer, width in zip(encoder.anatomy.layers, widths, strict=True):
        name = f"{prefix}.{names[id(layer)]}"
        matrices = 0 if _attention_counted(counts, name) else 4 * encoder.hidden_size * width**2 * chunks
        flops.append(_module_flops(counts, name) + matrices)
    return flops


def _layer_tokens(encoder: HFEncoder, traces: list) -> tuple[list[int], list[int]]:
    """Per encoder layer: the tokens per chunk it ran on (padded: the most any chunk kept) and the tokens
    of all chunks it ran on (kept ones only); every token before the first pruning step."""
    chunks, full = encoder.last_tokens
    by_layer = {trace.after_layer: trace for trace in traces}
    widths, totals, width, total = [], [], full, chunks * full
    for index in range(1, len(encoder.anatomy.layers) + 1):
        widths.append(width)
        totals.append(total)
        if index in by_layer:
            keep = by_layer[index].keep
            width, total = int(keep.sum(1).max()), int(keep.sum())
    return widths, totals


def _backbone_rest_flops(encoder: HFEncoder, counts: dict, prefix: str) -> int:
    """Counted FLOPs of the encoder outside its layers and pruners (embeddings, final norm, the layer sum)."""
    names = {id(module): name for name, module in encoder.named_modules()}
    layers = sum(_module_flops(counts, f"{prefix}.{names[id(layer)]}") for layer in encoder.anatomy.layers)
    return _module_flops(counts, prefix) - layers - _pruner_flops(encoder, counts, prefix)


def _pruner_flops(encoder: HFEncoder, counts: dict, prefix: str) -> int:
    return sum(_module_flops(counts, f"{prefix}.pruners.{name}") for name in encoder.pruners)


def _count_encoder(encoder: HFEncoder, counts: dict, prefix: str, traces: list, modality: str, tally: _Tally) -> None:
    chunks, full = encoder.last_tokens
    widths, totals = _layer_tokens(encoder, traces)
    for index, (flops, total) in enumerate(zip(_encoder_layer_flops(encoder, counts, prefix, widths), totals), 1):
        tally.add(modality, f"layers.{index}", "tokens", flops, total, chunks * full)
    tally.add(modality, "embeddings", "dense", _backbone_rest_flops(encoder, counts, prefix), 0, 0)
    tally.attention += _pruner_flops(encoder, counts, prefix)


def _unpruned_encoder_flops(encoder: HFEncoder, frames: torch.Tensor) -> int:
    """FLOPs of ``encoder`` without its pruning steps on ``frames`` (the attention matrices included)."""
    unpruned = copy.deepcopy(encoder)
    unpruned.pruners = nn.ModuleDict()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unpruned(frames)
    counts, prefix = counter.get_flop_counts(), type(unpruned).__name__
    widths = [unpruned.last_tokens[1]] * len(unpruned.anatomy.layers)
    return sum(_encoder_layer_flops(unpruned, counts, prefix, widths)) + _backbone_rest_flops(unpruned, counts, prefix)


def _count_sparse(cnn: SparseCNN, masks: list[torch.Tensor], modality: str, tally: _Tally) -> None:
    for index, (block, keep, active) in enumerate(zip(cnn.blocks, masks, block_inputs(masks))):
        kept, sites = int(keep.sum()), keep.numel()
        for conv, flops in zip(("conv1", "conv2"), sparse_block_flops(block, keep)):
            tally.add(modality, f"blocks.{index}.{conv}", "sparse", flops, kept, sites)
        tally.attention += attention_flops(block, active)


def _dense_reference_flops(config: ExperimentConfig, modality: str, frames: torch.Tensor) -> int:
    """FLOPs of FE2E's dense CNN on ``frames``, counted on the meta device (shapes only)."""
    model = config.model
    with torch.device("meta"):
        cnn = build_cnn(model.cnn, INPUT_SHAPES[modality][0], None, model.cnn_width).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        cnn(frames.to("meta"))
    return counter.get_total_flops()


def _model_and_data(
    config: ExperimentConfig, data_dir: Path | None, split: str, max_utterances: int, state_dict: dict | None
):
    tokenizer = load_tokenizer(config.model.text_model) if "t" in config.model.modalities else None
    dataset = EmotionDataset(data_dir or config.data.data_dir, split, config, tokenizer)
    model = build_model(config.model, dataset.class_names)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    if max_utterances > 0:
        dataset = Subset(dataset, range(min(max_utterances, len(dataset))))
    return model.eval(), dataset


def measure_flops(
    config: ExperimentConfig,
    data_dir: Path | None = None,
    split: str = "test",
    max_utterances: int = 0,
    batch_size: int = 8,
    state_dict: dict | None = None,
) -> dict:
    """Feature-extraction GFLOPs per utterance of ``config``'s model on real utterances of ``split``.

    The model is randomly initialised unless ``state_dict`` (e.g. a checkpoint's ``"model"``) is given;
    for MESM the kept sites, hence the FLOPs, depend on the weights. ``max_utterances`` = 0: all.
    Returns a JSON-able report (see :func:`e2e.reporting.tables.format_flops_table`).
    """
    config = copy.deepcopy(config)
    model, dataset = _model_and_data(config, data_dir, split, max_utterances, state_dict)
    collate_fn = (dataset.dataset if isinstance(dataset, Subset) else dataset).collator()
    tally = _Tally()
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn):
        _count_batch(model, batch, config, tally)
    return _report(config, tally)


def _gflops(flops: float, utterances: int) -> float:
    return flops / GIGA / utterances


def _report(config: ExperimentConfig, tally: _Tally) -> dict:
    count = tally.utterances
    mine, reference = tally.per_modality(), tally.reference
    per_utterance = {m: _gflops(flops, count) for m, flops in mine.items()}
    per_utterance["total"] = _gflops(sum(mine.values()), count)
    dense = {m: _gflops(flops, count) for m, flops in reference.items()}
    dense["total"] = _gflops(sum(reference.values()), count)
    attention = _gflops(tally.attention, count)
    sparse = model_spec(config.model.name).sparse_traces
    return {
        "model": config.model.name,
        "top_p": config.model.top_p if sparse else None,
        "attention_mode": config.model.attention_mode if sparse else None,
        # per modality and sparse block: the share of the block's candidate sites that top-p kept
        "kept_fraction": tally.kept_sites.fractions() if sparse else None,
        "cnn_width": config.model.cnn_width,
        "utterances": count,
        "per_utterance_gflops": per_utterance,
        "fe2e_per_utterance_gflops": dense,
        "ratio": per_utterance["total"] / dense["total"],
        "attention_gflops": attention,
        "ratio_with_attention": (per_utterance["total"] + attention) / dense["total"],
        "layers": [
            {
                "modality": modality,
                "layer": layer,
                "kind": entry["kind"],
                "gflops_per_utterance": _gflops(entry["flops"], count),
                "active_fraction": entry["kept"] / entry["sites"] if entry["sites"] else 1.0,
            }
            for (modality, layer), entry in tally.layers.items()
        ],
    }
