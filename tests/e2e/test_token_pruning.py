"""Text-queried top-p token pruning inside Hugging Face encoders (e2e/models/layers/token_pruning.py):
kept counts, special tokens, real gathers, p = 1 against the unpruned run, trainable scores."""

from __future__ import annotations

import pytest
import torch

from e2e.config import UsageError
from e2e.models.layers.hf_encoders import EncoderOptions, HFEncoder
from e2e.models.layers.token_pruning import TokenState, gather_tokens, parse_prune_layers, scatter_full

TEXT_DIM = 12


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    from tests.e2e.test_hf_encoders import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("encoders"), ("vit", "clip", "wav2vec2", "wavlm"))


def _encoder(folder: str, kind: str, **options) -> HFEncoder:
    torch.manual_seed(0)
    return HFEncoder(EncoderOptions(folder, f"model.{kind}_encoder", **options), kind, TEXT_DIM).eval()


def _inputs(kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if kind == "visual":
        return torch.rand(4, 3, 48, 48, generator=generator)
    return torch.randn(4, 8000, generator=generator)


CASES = [("vit", "visual"), ("clip", "visual"), ("wav2vec2", "audio")]


@pytest.mark.parametrize(("model", "kind"), CASES)
def test_p_one_keeps_every_token_and_equals_the_unpruned_run(folders, model, kind):
    plain = _encoder(folders[model], kind)
    pruned = _encoder(folders[model], kind, prune_layers="1", top_p=1.0)
    pruned.load_state_dict(plain.state_dict(), strict=False)
    text = torch.randn(4, TEXT_DIM)
    with torch.no_grad():
        expected, no_traces = plain(_inputs(kind))
        got, traces = pruned(_inputs(kind), text)
    assert no_traces == [] and len(traces) == 1
    assert traces[0].keep.all()
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(("model", "kind"), CASES)
@pytest.mark.parametrize("mode", ["faithful", "trainable"])
def test_top_p_keeps_the_nucleus_the_special_tokens_and_at_least_one(folders, model, kind, mode):
    encoder = _encoder(folders[model], kind, prune_layers="1", top_p=0.3, attention_mode=mode)
    with torch.no_grad():
        _, (trace,) = encoder(_inputs(kind), torch.randn(4, TEXT_DIM))
    special = encoder.anatomy.special_tokens
    assert trace.keep[:, :special].all() and not trace.candidates[:, :special].any()
    kept = trace.keep & trace.candidates
    assert (kept.sum(1) >= 1).all() and (kept.sum(1) < trace.candidates.sum(1)).all()
    for row in range(4):
        alpha = trace.attention[row][trace.candidates[row]]
        kept_alpha = trace.attention[row][kept[row]]
        assert torch.isclose(alpha.sum(), torch.tensor(1.0), atol=1e-5)
        # the nucleus: the kept tokens are the best ones, their mass reaches p, and without the weakest it does not
        assert kept_alpha.min() >= alpha[~kept[row][trace.candidates[row]]].max()
        assert kept_alpha.sum() >= 0.3 - 1e-6 and kept_alpha.sum() - kept_alpha.min() < 0.3


def test_a_tiny_p_keeps_one_token_per_chunk_plus_cls(folders):
    encoder = _encoder(folders["vit"], "visual", prune_layers="1", top_p=1e-6)
    with torch.no_grad():
        _, (trace,) = encoder(_inputs("visual"), torch.randn(4, TEXT_DIM))
    assert trace.keep.sum(1).tolist() == [2, 2, 2, 2]  # CLS + the best patch


def test_the_remaining_layers_run_on_the_gathered_tokens_only(folders):
    """The layer after the pruning step sees a shorter sequence (not a mask over the full one)."""
    encoder = _encoder(folders["vit"], "visual", prune_layers="1", top_p=0.5)
    lengths = []
    hook = encoder.anatomy.layers[1].register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    with torch.no_grad():
        _, (trace,) = encoder(_inputs("visual"), torch.randn(4, TEXT_DIM))
    hook.remove()
    assert lengths == [int(trace.keep.sum(1).max())] and lengths[0] < trace.keep.shape[1]


def test_trainable_mode_trains_the_scorer_and_faithful_does_not(folders):
    for mode, learns in (("trainable", True), ("faithful", False)):
        encoder = _encoder(folders["vit"], "visual", prune_layers="1", top_p=0.5, attention_mode=mode).train()
        features, _ = encoder(_inputs("visual"), torch.randn(4, TEXT_DIM))
        features.square().sum().backward()
        grad = encoder.pruners["1"].attention.score.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == learns


def test_gather_keeps_order_and_pads_short_rows():
    hidden = torch.arange(10.0).view(2, 5, 1)
    kept = torch.tensor([[True, False, True, False, True], [False, True, False, False, False]])
    state = gather_tokens(TokenState.full(hidden), kept)
    assert state.hidden[0, :, 0].tolist() == [0.0, 2.0, 4.0] and state.hidden[1, 0, 0] == 6.0
    assert state.valid.tolist() == [[True, True, True], [True, False, False]]
    assert state.positions.tolist() == [[0, 2, 4], [1, -1, -1]]
    assert scatter_full(state.valid, state.positions, 5).tolist() == kept.tolist()
    assert state.attention_mask().shape == (2, 1, 1, 3)


def test_prune_layer_numbers_are_checked():
    assert parse_prune_layers("", 12, "x") == () and parse_prune_layers(4, 12, "x") == (4,)
    assert parse_prune_layers("3,6", 12, "x") == (3, 6)
    for bad in ("0", "12", "6,3", "a", "3,3"):
        with pytest.raises(UsageError, match="x"):
            parse_prune_layers(bad, 12, "x")


def test_pruning_an_architecture_without_a_layer_by_layer_run_is_an_error(folders):
    with pytest.raises(UsageError, match="wavlm"):
        _encoder(folders["wavlm"], "audio", prune_layers="1", top_p=0.5)
