"""FE2E and MESM on packed batches: shapes, every modality subset, gradients, registry."""

import pytest
import torch

from e2e.config import parse_modalities
from e2e.data.batch import Batch
from e2e.models import available_models, build_model
from e2e.models.fe2e import FE2E
from e2e.models.layers.encoders import TemporalTransformer, TextEncoder, pad_packed
from e2e.models.mesm import MESM, MESMConfig

NUM_CLASSES = 6
FACE_LENGTHS = [2, 3, 1]
AUDIO_LENGTHS = [1, 4, 2]
SUBSETS = ["t", "a", "v", "ta", "tv", "av", "tav"]


def tiny_text_encoder() -> TextEncoder:
    from transformers import BertConfig, BertModel  # after e2e's compat shim (imported above)

    torch.manual_seed(0)
    return TextEncoder(
        BertModel(
            BertConfig(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=1000
            )
        )
    )


def small_config(**overrides) -> MESMConfig:
    """Small end-to-end options; MESM's are FE2E's plus its sparse settings, so both models take them."""
    values = dict(d_model=16, temporal_layers=1, temporal_heads=2, temporal_ffn=32, top_p=0.5)
    values.update(overrides)
    return MESMConfig(**values)


def make_batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    text_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    return Batch(
        ids=["u0", "u1", "u2"],
        labels=torch.eye(NUM_CLASSES)[:3],
        text_input_ids=torch.randint(1, 1000, (3, 7), generator=generator) * text_mask,
        text_attention_mask=text_mask,
        faces=torch.randn(sum(FACE_LENGTHS), 3, 48, 48, generator=generator),
        face_lengths=torch.tensor(FACE_LENGTHS),
        audio=torch.randn(sum(AUDIO_LENGTHS), 1, 128, 32, generator=generator),
        audio_lengths=torch.tensor(AUDIO_LENGTHS),
    )


def first_conv(model, modality):
    cnn = model.cnns[modality]
    return (cnn.stem[0] if isinstance(model, MESM) else cnn.stem)[0][0]


def test_registry_lists_both_models():
    assert {"fe2e", "mesm"} <= set(available_models())


def test_build_model_from_config_with_the_text_loader():
    model = build_model(
        MESMConfig(
            text_model="tiny-bert", modalities="tv", d_model=16, temporal_layers=1, temporal_heads=2, temporal_ffn=32
        ),
        list("abcdef")[:NUM_CLASSES],
    )
    assert isinstance(model, MESM) and model.text.hidden_size == 32


def test_parse_modalities():
    assert parse_modalities("vat") == ("t", "a", "v")
    for bad in ("", "x", "tt"):
        with pytest.raises(ValueError):
            parse_modalities(bad)


@pytest.mark.parametrize("modalities", SUBSETS)
def test_fe2e_forward_backward_every_subset(modalities):
    text = tiny_text_encoder() if "t" in modalities else None
    model = FE2E(small_config(modalities=modalities), NUM_CLASSES, text_encoder=text)
    output = model(make_batch())
    assert output.logits.shape == (3, NUM_CLASSES)
    assert list(output.extras["modality_logits"]) == list(modalities_in_order(modalities))
    assert all(v.shape == (3, NUM_CLASSES) for v in output.extras["modality_logits"].values())
    output.logits.sum().backward()
    for modality in model.cnns:
        assert first_conv(model, modality).weight.grad.abs().sum() > 0
    if text is not None:
        assert text.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.fusion.weights.weight.grad.abs().sum() > 0


def modalities_in_order(modalities):
    return [m for m in "tav" if m in modalities]


@pytest.mark.parametrize("modalities", ["ta", "tv", "tav"])
@pytest.mark.parametrize("mode", ["trainable", "faithful"])
def test_mesm_forward_backward(modalities, mode):
    model = MESM(
        small_config(name="mesm", modalities=modalities, attention_mode=mode),
        NUM_CLASSES,
        text_encoder=tiny_text_encoder(),
    )
    output = model(make_batch())
    assert output.logits.shape == (3, NUM_CLASSES)
    output.logits.sum().backward()
    expected = {"v": [(6, 24, 24), (6, 12, 12), (6, 6, 6)], "a": [(7, 64, 16), (7, 32, 8), (7, 16, 4)]}
    for modality in model.cnns:
        assert [tuple(m.shape) for m in output.extras["sparse_masks"][modality]] == expected[modality]
        assert [tuple(a.shape) for a in output.extras["attention"][modality]] == expected[modality]
        assert first_conv(model, modality).weight.grad.abs().sum() > 0
        for block in model.cnns[modality].blocks:
            grads = [p.grad for p in block.attention.parameters()]
            if mode == "trainable":
                assert all(g is not None and g.abs().sum() > 0 for g in grads)
            else:  # faithful: selection only, as in the official code (the official defect: attention never trained)
                assert all(g is None for g in grads)


def calibrated_eval(model, batch):
    """Eval mode with BN running statistics of ``batch`` (fresh ones shrink deep activations to ~0)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = None  # cumulative average: one pass sets the batch's statistics
    with torch.no_grad():
        model.train()(batch)
    return model.eval()


def test_mesm_frames_attend_to_their_own_utterance_text():
    """Changing utterance 1's text changes only utterance 1's frame-modality logits (eval mode: no
    batch statistics couple the utterances)."""
    batch = make_batch()
    model = calibrated_eval(
        MESM(small_config(name="mesm", modalities="tav", top_p=0.3), NUM_CLASSES, text_encoder=tiny_text_encoder()),
        batch,
    )
    changed = make_batch()
    changed.text_input_ids[1, :5] = torch.arange(500, 505)
    with torch.no_grad():
        before, after = model(batch).extras, model(changed).extras
    for modality in ("a", "v"):
        delta = (before["modality_logits"][modality] - after["modality_logits"][modality]).abs().amax(1)
        assert delta[0] < 1e-5 and delta[2] < 1e-5 and delta[1] > 1e-3
    first, second = FACE_LENGTHS[0], FACE_LENGTHS[0] + FACE_LENGTHS[1]
    attention_before, attention_after = before["attention"]["v"][0], after["attention"]["v"][0]
    assert torch.allclose(attention_before[:first], attention_after[:first])
    assert not torch.allclose(attention_before[first:second], attention_after[first:second])


def test_mesm_requires_text_and_the_paper_cnn():
    for modalities in ("a", "v", "av"):
        with pytest.raises(ValueError, match="text"):
            MESM(small_config(modalities=modalities), NUM_CLASSES)
    with pytest.raises(ValueError, match="mesm_vgg"):
        MESM(small_config(cnn="vgg11"), NUM_CLASSES, text_encoder=tiny_text_encoder())


@pytest.mark.parametrize("cnn", ["vgg11", "vgg11_bn"])
def test_fe2e_with_torchvision_vgg(cnn):
    model = FE2E(small_config(modalities="av", cnn=cnn), NUM_CLASSES)
    assert model.projections["v"][0].in_features == 512  # 48×48 after five pools: 1×1
    assert model.projections["a"][0].in_features == 2048  # 128×32 → 4×1
    model(make_batch()).logits.sum().backward()
    assert model.cnns["a"].features[0].weight.grad.abs().sum() > 0


def test_utterances_do_not_see_each_other():
    """In eval mode an utterance's logits do not depend on the rest of the packed batch (padding masked)."""
    batch = make_batch()
    model = calibrated_eval(
        FE2E(small_config(modalities="tav", positional_encoding=True), NUM_CLASSES, text_encoder=tiny_text_encoder()),
        batch,
    )
    face_start, audio_start = FACE_LENGTHS[0], AUDIO_LENGTHS[0]
    alone = Batch(
        ids=["u1"],
        labels=batch.labels[1:2],
        text_input_ids=batch.text_input_ids[1:2],
        text_attention_mask=batch.text_attention_mask[1:2],
        faces=batch.faces[face_start : face_start + FACE_LENGTHS[1]],
        face_lengths=batch.face_lengths[1:2],
        audio=batch.audio[audio_start : audio_start + AUDIO_LENGTHS[1]],
        audio_lengths=batch.audio_lengths[1:2],
    )
    with torch.no_grad():
        assert torch.allclose(model(batch).logits[1], model(alone).logits[0], atol=1e-5)


def test_text_parameter_group():
    model = FE2E(small_config(modalities="tav"), NUM_CLASSES, text_encoder=tiny_text_encoder())
    text_ids = {id(p) for p in model.text_parameters()}
    assert {id(p) for p in model.text.parameters()} | {id(p) for p in model.heads["t"].parameters()} == text_ids
    other_ids = {id(p) for p in model.other_parameters()}
    assert not text_ids & other_ids and text_ids | other_ids == {id(p) for p in model.parameters()}
    assert FE2E(small_config(modalities="av"), NUM_CLASSES).text_parameters() == []


def test_late_fusion_starts_as_an_average():
    model = FE2E(small_config(modalities="av"), NUM_CLASSES)
    output = model(make_batch())
    logits = output.extras["modality_logits"]
    assert torch.allclose(output.logits, (logits["a"] + logits["v"]) / 2, atol=1e-6)


def test_pad_packed():
    packed = torch.arange(6.0)[:, None]
    padded, padding = pad_packed(packed, torch.tensor([2, 3, 1]))
    assert padded[..., 0].tolist() == [[0, 1, 0], [2, 3, 4], [5, 0, 0]]
    assert padding.tolist() == [[False, False, True], [False, False, False], [False, True, True]]
    with pytest.raises(ValueError):
        pad_packed(packed, torch.tensor([2, 2]))


@pytest.mark.parametrize("positional", [False, True])
def test_frames_are_a_bag_without_positional_encoding(positional):
    torch.manual_seed(0)
    temporal = TemporalTransformer(16, 1, 2, 32, 0.0, positional).eval()
    frames, lengths = torch.randn(5, 16), torch.tensor([5])
    same = torch.allclose(temporal(frames, lengths), temporal(frames[[3, 0, 4, 1, 2]], lengths), atol=1e-5)
    assert same is not positional
