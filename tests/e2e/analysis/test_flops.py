"""Feature-extraction FLOPs (e2e/analysis/flops.py): sparse counts against dense counts and measured work."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from e2e.analysis.flops import attention_flops, measure_flops, pair_count, sparse_block_flops
from e2e.models import load_config
from e2e.models.layers.sparse import SparseBlock, block_inputs
from e2e.models.layers.sparse_conv import all_sites, sparse_tensor
from e2e.reporting.tables import format_flops_table

C_IN, C_OUT, TEXT_DIM, FRAMES, HEIGHT, WIDTH = 8, 16, 12, 3, 8, 6


def _flop_counts(fn) -> dict[str, int]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        result = fn()
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}, result


@pytest.fixture
def block_inputs_fixed():
    torch.manual_seed(0)
    block = SparseBlock(C_IN, C_OUT, TEXT_DIM, top_p=1.0).eval()
    dense = torch.randn(FRAMES, C_IN, HEIGHT, WIDTH)
    return block, dense, torch.randn(FRAMES, TEXT_DIM)


def _run_block(block: SparseBlock, dense: torch.Tensor, text: torch.Tensor, top_p: float):
    block.top_p = top_p
    x = sparse_tensor("torch", *all_sites(dense), (HEIGHT, WIDTH), FRAMES)
    counts, (_, trace) = _flop_counts(lambda: block(x, text))
    return counts, trace.keep


def test_all_sites_kept_relates_exactly_to_the_dense_count(block_inputs_fixed):
    """With every site kept, the sparse count is the dense FlopCounterMode count of the same conv
    restricted to in-bounds taps: (3H-2)(3W-2) pairs per frame instead of the dense 9·H·W."""
    block, dense, text = block_inputs_fixed
    _, keep = _run_block(block, dense, text, 1.0)
    assert keep.all()
    conv1, conv2 = sparse_block_flops(block, keep)
    weight = block.conv1.weight.permute(0, 3, 1, 2)
    dense_counts, _ = _flop_counts(lambda: F.conv2d(dense, weight, padding=1))
    in_bounds = (3 * HEIGHT - 2) * (3 * WIDTH - 2)
    assert pair_count(keep) == FRAMES * in_bounds
    assert conv1 * 9 * HEIGHT * WIDTH == dense_counts["Global"] * in_bounds
    assert conv2 == conv1 * C_OUT // C_IN


def test_sparse_count_is_the_work_performed_and_falls_with_p(block_inputs_fixed):
    """The torch backend's GEMMs (counted by FlopCounterMode) equal the mask-derived counts at every p,
    and fewer kept sites (smaller p) mean fewer FLOPs."""
    block, dense, text = block_inputs_fixed
    totals = []
    for top_p in (0.3, 0.5, 0.7, 1.0):
        counts, keep = _run_block(block, dense, text, top_p)
        # the block calls attention.text itself, outside attention's forward: its own entry
        attention = counts["SparseBlock.attention"] + counts["SparseBlock.attention.text"]
        assert counts["SparseBlock"] - attention == sum(sparse_block_flops(block, keep))
        assert attention == attention_flops(block, torch.ones_like(keep))
        totals.append(sum(sparse_block_flops(block, keep)))
    assert totals == sorted(totals) and len(set(totals)) == len(totals)


def test_later_blocks_score_the_pooled_kept_sites():
    keep = torch.zeros(1, 4, 4, dtype=torch.bool)
    keep[0, 0, 1] = keep[0, 3, 3] = True
    later = torch.zeros(1, 2, 2, dtype=torch.bool)
    inputs = block_inputs([keep, later])
    assert inputs[0].all()
    assert inputs[1].tolist() == [[[True, False], [False, True]]]


def _demo_report(data_dir, config: str, *overrides: str) -> dict:
    config = load_config(config, [f"data.data_dir={data_dir}", "model.cnn_width=1.0", *overrides])
    return measure_flops(config, max_utterances=4, batch_size=4)


@pytest.mark.parametrize("top_p", [0.5, 0.3])
def test_mesm_halves_the_paper_width_flops_on_the_demo(demo_iemocap_cache, top_p):
    report = _demo_report(demo_iemocap_cache, "configs/demo/mesm.yaml", f"model.top_p={top_p}")
    print(f"p={top_p}: ratio {report['ratio']:.3f}, with attention {report['ratio_with_attention']:.3f}")
    assert report["ratio_with_attention"] <= 0.50
    assert report["utterances"] == 4 and report["top_p"] == top_p
    per_utterance = report["per_utterance_gflops"]
    assert per_utterance["total"] == pytest.approx(per_utterance["a"] + per_utterance["v"])
    layers = sum(row["gflops_per_utterance"] for row in report["layers"])
    assert layers == pytest.approx(per_utterance["total"])
    sparse = [row for row in report["layers"] if row["kind"] == "sparse"]
    assert len(sparse) == 12 and all(0 < row["active_fraction"] < 1 for row in sparse)
    assert json.loads(json.dumps(report)) == report
    assert "| v | blocks.0.conv1 | sparse |" in format_flops_table(report)


@pytest.mark.parametrize("mode", ["faithful", "trainable"])
def test_kept_fraction_per_block_in_both_attention_modes(demo_iemocap_cache, mode):
    """Top-p keeps the fewest sites whose mass reaches p: k sites hold at least k/n of it, so block 1 keeps
    under p + 1/n of its n sites, whatever the mode (the modes differ once the attention has trained)."""
    report = _demo_report(
        demo_iemocap_cache, "configs/demo/mesm.yaml", "model.top_p=0.3", f"model.attention_mode={mode}"
    )
    assert report["attention_mode"] == mode
    sites = {"v": 24 * 24, "a": 64 * 16}  # block 1's grid at the paper's input sizes
    for modality, fractions in report["kept_fraction"].items():
        assert len(fractions) == 3 and all(0 < value <= 1 for value in fractions)
        assert fractions[0] < 0.3 + 1 / sites[modality]
    assert f"({mode} attention)" in format_flops_table(report)
    assert "Kept share of each sparse block's candidate sites" in format_flops_table(report)


def test_fe2e_ratio_is_one(demo_iemocap_cache):
    report = _demo_report(demo_iemocap_cache, "configs/demo/fe2e.yaml")
    assert report["ratio"] == 1.0 and report["attention_gflops"] == 0.0 and report["top_p"] is None
    assert all(row["kind"] == "dense" for row in report["layers"])
