"""MESM's sparse path: top-p selection, site bookkeeping, both backends against dense references."""

import pytest
import torch
import torch.nn.functional as F

from e2e.models.layers import sparse_conv  # the e2e package's compat shim runs before spconv loads
from e2e.models.layers.cnn import MesmVGG
from e2e.models.layers.sparse import SparseBlock, SparseCNN, masked_dense_block, top_p_mask
from e2e.models.layers.sparse_conv import SubmanifoldRules, _SubmConv3x3, all_sites, densify, sparse_tensor
from tests.helpers.sparse import BACKENDS, threads_for


def keep(probs, p, active=None):
    probs = torch.tensor(probs, dtype=torch.float32)
    active = torch.ones_like(probs, dtype=torch.bool) if active is None else torch.tensor(active)
    return top_p_mask(probs, p, active).tolist()


# --------------------------------------------------------------------------- top-p


def test_top_p_keeps_the_crossing_site():
    assert keep([[0.1, 0.6, 0.3]], 0.65) == [[False, True, True]]  # 0.6 < 0.65, 0.3 crosses, 0.1 not needed
    assert keep([[0.5, 0.3, 0.2]], 0.7) == [[True, True, False]]
    assert keep([[0.5, 0.3, 0.2]], 0.5) == [[True, False, False]]  # 0.5 reaches p exactly: nothing crosses


def test_top_p_ties_follow_site_order():
    assert keep([[0.25, 0.25, 0.25, 0.25]], 0.5) == [[True, True, False, False]]
    assert keep([[0.2, 0.3, 0.2, 0.3]], 0.5) == [[False, True, False, True]]
    assert keep([[0.2, 0.3, 0.2, 0.3]], 0.7) == [[True, True, False, True]]


def test_top_p_one_keeps_every_active_site_despite_rounding():
    probs = [[1.0 - 1e-8, 1e-9, 1e-9, 0.0]]  # float32 cumsum reaches 1.0 after the first site
    assert keep(probs, 0.999) == [[True, False, False, False]]
    assert keep(probs, 1.0, [[True, True, True, False]]) == [[True, True, True, False]]
    assert keep(probs, 1.5, [[True, True, True, False]]) == [[True, True, True, False]]


def test_top_p_keeps_at_least_the_best_site_and_never_inactive_ones():
    probs = torch.rand(20, 30).softmax(1)
    kept = top_p_mask(probs, 1e-6, torch.ones_like(probs, dtype=torch.bool))
    assert torch.equal(kept.sum(1), torch.ones(20, dtype=torch.long))
    assert torch.equal(kept.float().argmax(1), probs.argmax(1))
    active = torch.rand(20, 30) < 0.5
    active[:, 0] = True
    masked = probs.masked_fill(~active, 0.0)
    assert not (top_p_mask(masked / masked.sum(1, keepdim=True), 0.999, active) & ~active).any()
    with pytest.raises(ValueError):
        top_p_mask(probs, 0.0, active)


def naive_top_p(probs: torch.Tensor, p: float, active: torch.Tensor) -> torch.Tensor:
    """One row at a time, in Python: sort (stable, descending), walk the cumulative mass."""
    result = torch.zeros_like(active)
    for row in range(probs.shape[0]):
        sites = [s for s in range(probs.shape[1]) if active[row, s]]
        mass = 0.0
        for site in sorted(sites, key=lambda s: -probs[row, s].item()):
            if mass < p:
                result[row, site] = True
            mass += probs[row, site].item()
    return result


@pytest.mark.parametrize("p", [0.1, 0.5, 0.7, 0.9])
def test_vectorised_top_p_equals_a_per_row_loop(p):
    generator = torch.Generator().manual_seed(int(p * 10))
    scores = torch.randint(0, 4, (40, 24), generator=generator).float()  # integer scores: many exact ties
    active = torch.rand(40, 24, generator=generator) < 0.6
    active[:, 5] = True
    probs = scores.masked_fill(~active, float("-inf")).softmax(1)
    assert torch.equal(top_p_mask(probs, p, active), naive_top_p(probs, p, active))


def test_top_p_rows_are_independent():
    probs = torch.rand(6, 16).softmax(1)
    active = torch.ones_like(probs, dtype=torch.bool)
    together = top_p_mask(probs, 0.6, active)
    for row in range(6):
        assert torch.equal(together[row], top_p_mask(probs[row : row + 1], 0.6, active[row : row + 1])[0])


# --------------------------------------------------------------------------- sites


def coordinate_map(lengths, height, width):
    """Packed frames of utterances with ``lengths``; channels = (utterance, frame, y, x) of each site."""
    utterance = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    frames = len(utterance)
    frame, y, x = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([utterance[frame], frame, y, x], dim=1).float()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")  # inside spconv's dense()
def test_every_feature_lands_on_its_own_site(backend):
    dense = coordinate_map([2, 4, 1], 6, 4)  # 3 utterances, 7 frames
    frames = dense.shape[0]
    block = SparseBlock(4, 4, text_dim=3, top_p=0.5, attention_mode="faithful")
    text = torch.randn(3, 3).repeat_interleave(torch.tensor([2, 4, 1]), dim=0)
    with threads_for(backend):
        full = sparse_tensor(backend, *all_sites(dense), (6, 4), frames)
        kept, trace = block.select(full, text)
    assert kept.indices.dtype == torch.int32 and kept.indices.is_contiguous()
    assert 0 < trace.keep.sum() < trace.keep.numel()
    expected = dense * trace.keep[:, None]
    assert torch.equal(densify(kept.features, kept.indices, (6, 4), frames), expected)
    if backend == "spconv":  # spconv's own densify reads the indices as (frame, y, x)
        assert torch.equal(kept.dense(), expected)


@pytest.mark.skipif(sparse_conv.spconv is None, reason="spconv not installed")
@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")
def test_spconv_reads_our_indices_as_frame_y_x():
    """A centre-tap identity SubMConv returns every feature at its own site, in input order."""
    dense = coordinate_map([3, 2], 5, 4)
    mask = torch.rand(5, 5, 4) < 0.5
    features = dense.permute(0, 2, 3, 1)[mask]
    conv = sparse_conv.spconv.SubMConv2d(4, 4, 3, padding=1, bias=False, indice_key="identity")
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 1, 1, :] = torch.eye(4)
    with threads_for("spconv"):
        out = conv(sparse_tensor("spconv", features, mask.nonzero().int().contiguous(), (5, 4), 5))
    assert torch.equal(out.features, features)
    assert torch.equal(out.dense(), dense * mask[:, None])


def test_spconv_refuses_several_cpu_threads():
    if sparse_conv.spconv is None:
        pytest.skip("spconv not installed")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="thread"):
            sparse_tensor("spconv", torch.zeros(1, 1), torch.zeros(1, 3, dtype=torch.int32), (1, 1), 1)
    finally:
        torch.set_num_threads(threads)


def test_auto_backend_is_pure_torch_on_cpu():
    assert sparse_conv.resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError):
        sparse_conv.resolve_backend("minkowski", torch.device("cpu"))


def test_pure_torch_submanifold_conv_gradcheck():
    mask = torch.rand(2, 5, 4) < 0.6
    indices = mask.nonzero().int().contiguous()
    rules = SubmanifoldRules(indices, (5, 4), 2)
    features = torch.randn(len(indices), 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: _SubmConv3x3.apply(f, w, rules), (features, weight))


# --------------------------------------------------------------------------- block vs masked-dense reference


def assert_close(actual, expected, tolerance=1e-4):
    scale = expected.abs().max().clamp(min=1.0)
    assert (actual - expected).abs().max() <= tolerance * scale, (actual - expected).abs().max()


def run_block_and_reference(block, backend, x, active, text):
    frames, _, height, width = x.shape
    with threads_for(backend):
        indices = active.nonzero().int().contiguous()
        inputs = sparse_tensor(backend, x.permute(0, 2, 3, 1)[active], indices, (height, width), frames)
        out, trace = block(inputs, text)
    reference, reference_active, reference_trace = masked_dense_block(block, x, active, text)
    assert torch.equal(trace.keep, reference_trace.keep)
    site_active = torch.zeros_like(reference_active)
    site_active[tuple(out.indices.long().t())] = True
    assert torch.equal(site_active, reference_active)
    return densify(out.features, out.indices, out.spatial_shape, frames), reference


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["trainable", "faithful"])
@pytest.mark.parametrize("p", [0.5, 1.0])
@pytest.mark.parametrize("all_active", [True, False], ids=["block1", "later-block"])
def test_sparse_block_matches_masked_dense_reference(backend, mode, p, all_active):
    torch.manual_seed(0)
    block = SparseBlock(8, 16, text_dim=5, top_p=p, attention_mode=mode, key="test")
    x = torch.randn(5, 8, 8, 6, requires_grad=True)
    active = torch.ones(5, 8, 6, dtype=torch.bool) if all_active else torch.rand(5, 8, 6) < 0.6
    active[:, 3, 2] = True
    text = torch.randn(5, 5, requires_grad=True)
    out, reference = run_block_and_reference(block, backend, x, active, text)
    assert_close(out, reference)
    probe = torch.randn_like(reference)
    with threads_for(backend):
        inputs = [x, text, *block.parameters()]
        grads = torch.autograd.grad((out * probe).sum(), inputs, allow_unused=True)
    reference_grads = torch.autograd.grad((reference * probe).sum(), inputs, allow_unused=True)
    for grad, reference_grad in zip(grads, reference_grads):
        assert (grad is None) == (reference_grad is None)
        if grad is not None:
            assert_close(grad, reference_grad)
    attention_grads = grads[1:6]  # text, W_x, b_x, W_t, w
    if mode == "trainable":
        assert all(g is not None and g.abs().sum() > 0 for g in attention_grads)
    if mode == "faithful":
        assert all(g is None for g in attention_grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_block_matches_reference_in_eval_mode(backend):
    torch.manual_seed(1)
    block = SparseBlock(4, 8, text_dim=3, top_p=0.6, key="eval")
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    block.eval()
    x, active, text = torch.randn(3, 4, 6, 6), torch.rand(3, 6, 6) < 0.7, torch.randn(3, 3)
    active[:, 0, 0] = True
    out, reference = run_block_and_reference(block, backend, x, active, text)
    assert_close(out, reference)


# --------------------------------------------------------------------------- whole CNN vs dense CNN


def copy_dense_weights(sparse_cnn: SparseCNN, dense_cnn: MesmVGG) -> None:
    """Give the sparse CNN the dense CNN's weights (submanifold layout: out, kh, kw, in)."""
    sparse_cnn.stem[0].load_state_dict(dense_cnn.stem.state_dict())
    for block, dense_block in zip(sparse_cnn.blocks, dense_cnn.blocks):
        pairs = ((block.conv1, block.bn1, dense_block[0]), (block.conv2, block.bn2, dense_block[1]))
        for conv, bn, (dense_conv, dense_bn, _) in pairs:
            conv.weight.data.copy_(dense_conv.weight.data.permute(0, 2, 3, 1))
            bn.load_state_dict(dense_bn.state_dict())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("training", [True, False])
def test_faithful_full_density_sparse_cnn_equals_dense_cnn(backend, training):
    """At p = 1 every site stays active, so submanifold convs (zero padding at the map border),
    BN over all sites and a max-pool over all four sites are exactly the dense layers. (At p < 1 BN
    statistics cover the kept sites only, and an inactive pooled cell is 0, which after ReLU equals
    the dense max; spconv's CPU max-pool clamps at 0, equally harmless after ReLU.)"""
    torch.manual_seed(2)
    dense_cnn = MesmVGG(3)
    sparse_cnn = SparseCNN(3, text_dim=4, top_p=1.0, attention_mode="faithful", backend=backend)
    for bn in (m for m in dense_cnn.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_var.uniform_(0.5, 2.0)
    copy_dense_weights(sparse_cnn, dense_cnn)
    dense_cnn.train(training), sparse_cnn.train(training)
    x = torch.randn(3, 3, 48, 48)
    with threads_for(backend):
        output = sparse_cnn(x, torch.randn(3, 4))
    assert all(trace.keep.all() for trace in output.traces)
    assert_close(output.features, dense_cnn(x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_cnn_traces_and_output_shapes(backend):
    cnn = SparseCNN(1, text_dim=4, top_p=0.5, backend=backend)
    with threads_for(backend):
        output = cnn(torch.randn(2, 1, 128, 32), torch.randn(2, 4))
    assert output.features.shape == (2, 512, 8, 2)
    assert [tuple(t.keep.shape) for t in output.traces] == [(2, 64, 16), (2, 32, 8), (2, 16, 4)]
    for trace in output.traces:
        assert torch.allclose(trace.attention.sum((1, 2)), torch.ones(2))
    for previous, trace in zip(output.traces, output.traces[1:]):
        pooled = F.max_pool2d(previous.keep[:, None].float(), 2)[:, 0] > 0
        assert not (trace.keep & ~pooled).any()  # later blocks only keep still-active sites
        assert (trace.attention[~pooled] == 0).all()  # softmax over the still-active sites only
