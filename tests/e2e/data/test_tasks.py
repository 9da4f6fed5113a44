"""The corpora's other labels as tasks: sentiment (MOSEI) and vad (IEMOCAP) targets read from the
manifest, rows with unusable values dropped with their reason, old manifests refused only when the
task needs their missing field, and the task checked against the dataset and the model at config load."""

from __future__ import annotations

import math

import pytest

import e2e  # noqa: F401  (compat shim first)
from e2e.config import ConfigError, UsageError
from e2e.data.bundle import build_datasets
from e2e.data.dataset import EmotionDataset
from e2e.models import load_config, model_spec, models_for_task
from tests.e2e.data.test_data import make_config, manifest_row, write_cache, write_manifest

VAD = ("valence", "activation", "dominance")


@pytest.fixture(scope="module")
def tokenizer():
    from e2e.data.text import load_tokenizer

    return load_tokenizer("tiny-bert")


def mosei_row(name: str, **fields) -> dict:
    return manifest_row(name, [0, 0, 0, 1, 0, 0], dataset="mosei", **fields)


def vad(v, a, d) -> dict:
    return {"valence": v, "activation": a, "dominance": d}


def test_sentiment_targets_and_unusable_values_are_dropped_with_their_reason(tmp_path, tokenizer):
    rows = [
        mosei_row("good", sentiment=-1.5),
        mosei_row("edge", sentiment=3),
        mosei_row("null", sentiment=None),
        mosei_row("absent"),
        mosei_row("nan", sentiment=math.nan),
        mosei_row("high", sentiment=3.5),
        mosei_row("text", sentiment="2"),
        mosei_row("flag", sentiment=True),
    ]
    write_manifest(tmp_path, rows)
    for row in rows:
        write_cache(tmp_path, row["id"])
    dataset = EmotionDataset(tmp_path, "train", make_config(dataset="mosei", task="sentiment"), tokenizer)
    assert dataset.class_names == ("sentiment",)
    assert dataset.labels.tolist() == [[-1.5], [3.0]]  # never clipped or coerced
    assert dataset.skipped == {"no_label": ["null", "absent"], "bad_label": ["nan", "high", "text", "flag"]}
    # the emotion task of the same rows ignores the sentiment field
    assert len(EmotionDataset(tmp_path, "train", make_config(dataset="mosei"), tokenizer)) == len(rows)


def test_vad_targets_null_and_malformed_triples(tmp_path, tokenizer, caplog):
    rows = [
        manifest_row("good", "hap", vad=vad(4.0, 2.5, 3)),
        manifest_row("null", "ang", vad=None),
        manifest_row("low", "sad", vad=vad(0.5, 2.0, 2.0)),
        manifest_row("short", "neu", vad={"valence": 3.0, "activation": 3.0}),
        manifest_row("list", "neu", vad=[3.0, 3.0, 3.0]),
        manifest_row("inf", "fru", vad=vad(3.0, math.inf, 3.0)),
    ]
    write_manifest(tmp_path, rows)
    for row in rows:
        write_cache(tmp_path, row["id"])
    config = make_config(task="vad")
    dataset = EmotionDataset(tmp_path, "train", config, tokenizer)
    assert dataset.class_names == VAD
    assert dataset.labels.tolist() == [[4.0, 2.5, 3.0]]
    assert dataset.skipped == {"no_label": ["null"], "bad_label": ["low", "short", "list", "inf"]}
    assert "vad [3.0, 3.0, 3.0] is not {valence, activation, dominance} numbers in [1, 5]" in caplog.text
    write_manifest(tmp_path, [{**row, "split": split} for row in rows for split in ("train", "valid", "test")])
    config.data.data_dir, config.model.text_model = str(tmp_path), "tiny-bert"
    bundle = build_datasets(config, "raw")
    assert bundle.pos_weight() is None and bundle.train_positives is None  # no classes, no BCE weights


def test_an_old_manifest_is_refused_only_for_the_task_that_needs_its_field(tmp_path, tokenizer):
    write_manifest(tmp_path, [manifest_row("old", "hap")])
    write_cache(tmp_path, "old")
    assert len(EmotionDataset(tmp_path, "train", make_config(), tokenizer)) == 1
    with pytest.raises(UsageError) as error:
        EmotionDataset(tmp_path, "train", make_config(task="vad"), tokenizer)
    message = str(error.value)
    assert str(tmp_path / "manifest.jsonl") in message and "'vad' field" in message
    assert f"rerun `data-reorg iemocap <raw corpus> {tmp_path}`" in message


def test_a_task_the_dataset_does_not_label_is_a_usage_error():
    with pytest.raises(ConfigError) as error:
        load_config("configs/demo/fe2e.yaml", ["data.task=sentiment"])
    message = str(error.value)
    assert "data.task='sentiment' does not exist for data.dataset='iemocap'" in message
    assert "data.task from --set data.task=sentiment; data.dataset from configs/demo/dataset.yaml" in message
    with pytest.raises(ConfigError, match="data.task='vad' does not exist for data.dataset='mosei'"):
        load_config("configs/demo/fe2e.yaml", ["data.dataset=mosei", "data.task=vad"])
    assert load_config("configs/demo/fe2e.yaml", ["data.dataset=mosei", "data.task=sentiment"]).data.task == "sentiment"


def test_a_task_the_model_does_not_support_is_refused_at_load():
    with pytest.raises(ConfigError) as error:
        load_config("configs/demo/carat.yaml", ["data.dataset=mosei", "data.task=sentiment"])
    message = str(error.value)
    assert "model 'carat' does not support data.task='sentiment' (it supports emotion)" in message
    assert "models for sentiment: conki, fdmer, fe2e" in message
    with pytest.raises(ConfigError, match="model 'conki' does not support data.task='vad'"):
        load_config("configs/demo/conki.yaml", ["data.task=vad"])
    with pytest.raises(ConfigError, match="model 'emoembs' does not support data.task='vad'"):
        load_config("configs/demo/emoembs.yaml", ["data.task=vad"])


def test_every_shipped_model_declares_its_tasks():
    """The sentiment papers' models (MulT, MISA, ConKI, TFR-Net) regress sentiment; CARAT and EmoEmbs
    are classifiers by construction (label queries / emotion-word prototypes)."""
    regressors = {"fe2e", "mesm", "lf_lstm", "lf_trans", "mult", "mica", "misa", "fdmer", "tfr_net"}
    for name in regressors:
        assert model_spec(name).tasks == ("emotion", "sentiment", "vad"), name
    assert model_spec("conki").tasks == ("emotion", "sentiment")
    assert model_spec("carat").tasks == model_spec("emoembs").tasks == ("emotion",)
    assert set(models_for_task("vad")) >= regressors and "conki" not in models_for_task("vad")
