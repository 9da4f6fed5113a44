"""MESM's sparse blocks under autocast: float32 scores / softmax / top-p, convs in the weights' dtype,
and the sparse-input checks (CPU bf16 autocast stands in for CUDA's)."""

import pytest
import torch

from e2e.models.layers.sparse import CrossModalAttention, SparseBlock, SparseCNN
from e2e.models.layers.sparse_conv import all_sites, autocast_off, check_sparse_inputs, densify, sparse_tensor
from tests.helpers.sparse import BACKENDS, threads_for


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def tied_fraction(scores: torch.Tensor) -> float:
    """Share of each row's values that equal another value of the same row."""
    ordered = scores.reshape(scores.shape[0], -1).sort(dim=1).values
    equal = ordered[:, 1:] == ordered[:, :-1]
    tied = torch.zeros_like(ordered, dtype=torch.bool)
    tied[:, 1:] |= equal
    tied[:, :-1] |= equal
    return tied.float().mean().item()


def block_input(backend: str, dense: torch.Tensor):
    frames, _, height, width = dense.shape
    return sparse_tensor(backend, *all_sites(dense), (height, width), frames)


def test_scores_are_float32_and_equal_the_fp32_scores_under_bf16_autocast():
    torch.manual_seed(0)
    attention = CrossModalAttention(64, 16)
    x, text = torch.randn(4, 24, 24, 64), torch.randn(4, 16)
    expected = attention(x, attention.text_term(text)[:, None, None])
    with bf16_autocast():
        scores = attention(x, attention.text_term(text)[:, None, None])
    assert scores.dtype == torch.float32
    assert torch.equal(scores, expected)


def test_bf16_stem_features_give_untied_float32_scores():
    """What the fix is for: scored in bf16, most block-1 sites of a random-init stem tie (the stable
    sort would then keep the top rows of the frame); in float32 none does."""
    torch.manual_seed(0)
    cnn = SparseCNN(3, text_dim=32, top_p=0.5, backend="torch")
    attention = cnn.blocks[0].attention
    x, text = torch.randn(4, 3, 48, 48), torch.randn(4, 32)
    with torch.no_grad(), bf16_autocast():
        sites = cnn.stem(x).permute(0, 2, 3, 1)
        assert sites.dtype == torch.bfloat16  # autocast is really on
        bf16_scores = attention.score(torch.tanh(attention.visual(sites) + attention.text(text)[:, None, None]))
        scores = attention(sites, attention.text_term(text)[:, None, None])
    assert bf16_scores.dtype == torch.bfloat16 and tied_fraction(bf16_scores) > 0.2
    assert scores.dtype == torch.float32 and tied_fraction(scores) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["faithful", "trainable"])
def test_block_keeps_the_fp32_sites_under_autocast(backend, mode):
    """Same weights, same float32 input: the kept sites, α and the output equal the fp32 run's."""
    torch.manual_seed(1)
    block = SparseBlock(16, 32, text_dim=8, top_p=0.5, attention_mode=mode, key="amp")
    dense, text = torch.randn(6, 16, 12, 12), torch.randn(6, 8)
    with threads_for(backend):
        expected, expected_trace = block(block_input(backend, dense), text)
        with bf16_autocast():
            out, trace = block(block_input(backend, dense), text)
    assert torch.equal(trace.keep, expected_trace.keep)
    assert torch.equal(trace.attention, expected_trace.attention)
    assert trace.attention.dtype == out.features.dtype == torch.float32
    assert torch.equal(out.indices, expected.indices)
    torch.testing.assert_close(out.features, expected.features)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["faithful", "trainable"])
def test_sparse_cnn_trains_under_autocast_with_float32_sparse_features(backend, mode):
    """bf16 stem features reach the sparse convs as float32 (spconv and the torch backend alike),
    forward and backward run, and block 1 keeps nearly the fp32 run's sites."""
    torch.manual_seed(2)
    cnn = SparseCNN(3, text_dim=8, top_p=0.5, attention_mode=mode, backend=backend, width_scale=0.25)
    x, text = torch.randn(4, 3, 48, 48), torch.randn(4, 8, requires_grad=True)
    with threads_for(backend):
        reference = cnn(x, text)
        with bf16_autocast():
            output = cnn(x, text)
        output.features.square().sum().backward()
    assert output.features.dtype == torch.float32
    assert all(trace.attention.dtype == torch.float32 for trace in output.traces)
    agreement = (output.traces[0].keep == reference.traces[0].keep).float().mean().item()
    assert agreement > 0.95, agreement
    grads = [p.grad for p in cnn.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    attention = cnn.blocks[0].attention
    if mode == "trainable":
        assert attention.visual.weight.grad is not None and attention.visual.weight.grad.abs().sum() > 0
        assert text.grad is not None and text.grad.abs().sum() > 0
    else:
        assert attention.visual.weight.grad is None


def test_sparse_inputs_are_checked():
    features = torch.zeros(4, 2)
    good = torch.zeros(4, 3, dtype=torch.int32)
    check_sparse_inputs(features, good)
    with pytest.raises(ValueError, match="torch.int32"):
        check_sparse_inputs(features, good.long())
    with pytest.raises(ValueError, match="not contiguous"):
        check_sparse_inputs(features, torch.zeros(3, 4, dtype=torch.int32).t())
    with pytest.raises(ValueError, match="on meta"):
        check_sparse_inputs(features, torch.zeros(4, 3, dtype=torch.int32, device="meta"))
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        sparse_tensor("torch", features, good[:3].contiguous(), (2, 2), 1)


def test_autocast_off_disables_cpu_autocast_and_accepts_devices_without_autocast():
    with bf16_autocast():
        with autocast_off(torch.device("cpu")):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")
    with autocast_off(torch.device("meta")):
        assert torch.zeros(1, device="meta").device.type == "meta"


def test_densify_keeps_float32_after_autocast_blocks():
    features = torch.randn(3, 2)
    indices = torch.tensor([[0, 0, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.int32)
    with bf16_autocast():
        dense = densify(features, indices, (2, 2), 2)
    assert dense.dtype == torch.float32 and dense.shape == (2, 2, 2, 2)
