"""Standard feature files (``data.source=mmsa:PATH`` / ``mult:PATH``): lengths, labels, standardisation,
the handling of non-finite values and bad rows, structure errors that name what is wrong, config
errors, and one epoch of every feature model through ``e2e train`` on miniature files in the exact
published formats (:mod:`tests.helpers.benchmark_files`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from e2e.cli import main
from e2e.config import ConfigError, UsageError
from e2e.data import benchmark_files
from e2e.data.bundle import build_datasets
from e2e.models import load_config, model_inputs, model_options, model_spec, shipped_models
from e2e.training.metrics import Scoring
from tests.helpers.benchmark_files import SIZES, STEPS, mmsa_content, mult_content, write_pickle
from tests.helpers.features import SMALL_SIZES

FEATURE_MODELS = [name for name in shipped_models() if model_inputs(name) == "features"]


def _bundle(source: str, *overrides: str):
    config = load_config(None, [f"data.source={source}", "model.name=lf_lstm", *overrides])
    return build_datasets(config, "features")


def _mmsa(tmp_path: Path, content: dict | None = None, name: str = "unaligned_50.pkl") -> str:
    return f"mmsa:{write_pickle(tmp_path / name, mmsa_content() if content is None else content)}"


def _mult(tmp_path: Path, content: dict | None = None) -> str:
    return f"mult:{write_pickle(tmp_path / 'iemocap_data.pkl', mult_content() if content is None else content)}"


MOSI = ("data.dataset=mosi", "data.task=sentiment")
IEMOCAP4 = ("data.dataset=iemocap4",)


def test_unaligned_mmsa_lengths_labels_and_ids_come_from_the_file(tmp_path):
    content = mmsa_content()
    bundle = _bundle(_mmsa(tmp_path, content), *MOSI)
    train = content["train"]
    assert bundle.class_names == ["sentiment"] and bundle.train_positives is None
    assert bundle.skipped == {"train": {}, "valid": {}, "test": {}}
    for row in (0, 5):
        item = bundle.train[row]
        assert item["id"] == train["id"][row] and item["text"] == train["raw_text"][row]
        assert len(item["a"]) == train["audio_lengths"][row] and len(item["v"]) == train["vision_lengths"][row]
        assert len(item["t"]) == train["text_bert"][row, 1].sum()
        assert item["label"].tolist() == [pytest.approx(float(train["regression_labels"][row]))]


def test_aligned_mmsa_and_mult_files_read_every_step(tmp_path):
    aligned = mmsa_content(aligned=True)
    item = _bundle(_mmsa(tmp_path, aligned, "aligned_50.pkl"), *MOSI).train[3]
    assert (len(item["a"]), len(item["v"])) == (STEPS["text"], STEPS["text"])  # no *_lengths: all steps
    assert len(item["t"]) == aligned["train"]["text_bert"][3, 1].sum()  # the text still by its mask
    item = _bundle(_mult(tmp_path), *IEMOCAP4).valid[2]
    assert {m: len(item[m]) for m in "tav"} == {"t": STEPS["text"], "a": STEPS["audio"], "v": STEPS["vision"]}


def test_step_limits_apply_as_to_the_cached_features(tmp_path):
    bundle = _bundle(_mult(tmp_path), *IEMOCAP4, "data.max_chunks=3", "data.max_frames=4")
    item = bundle.test[0]
    assert (len(item["t"]), len(item["a"]), len(item["v"])) == (STEPS["text"], 3, 4)


def test_mult_iemocap_labels_are_the_positive_entries_of_the_pairs(tmp_path):
    content = mult_content()
    bundle = _bundle(_mult(tmp_path, content), *IEMOCAP4)
    assert bundle.class_names == ["neutral", "happy", "sad", "angry"]
    np.testing.assert_array_equal(bundle.train.labels.numpy(), content["train"]["labels"][:, :, 1])
    assert bundle.train_positives.tolist() == [4, 4, 4, 4]
    assert bundle.pos_weight().tolist() == [3.0, 3.0, 3.0, 3.0]  # 12 negatives / 4 positives each
    assert bundle.train[1]["id"] == "Ses01_1_0"  # MulT's (N, 3) byte ids, decoded and joined


@pytest.mark.parametrize("block", [1024, 5])  # one block of rows, or several
def test_features_are_standardised_with_train_statistics(tmp_path, monkeypatch, block):
    monkeypatch.setattr(benchmark_files, "STATISTICS_BLOCK", block)
    content = mmsa_content()
    bundle = _bundle(_mmsa(tmp_path, content), *MOSI)
    audio = content["train"]["audio"].astype(np.float64)
    steps = np.concatenate([audio[row, :length] for row, length in enumerate(content["train"]["audio_lengths"])])
    mean, std = steps.mean(0), steps.std(0)
    standardised = np.concatenate([bundle.train[i]["a"].numpy() for i in range(len(bundle.train))])
    np.testing.assert_allclose(standardised.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(standardised.std(0), 1.0, atol=1e-4)
    length = content["valid"]["audio_lengths"][1]
    expected = (content["valid"]["audio"][1, :length] - mean) / std  # valid uses train's statistics
    np.testing.assert_allclose(bundle.valid[1]["a"].numpy(), expected, atol=1e-4)


def test_neg_inf_audio_is_set_to_zero_like_the_official_loaders_and_logged(tmp_path, caplog):
    content = mmsa_content()
    content["train"]["audio"][2, 0, 0] = -np.inf
    content["train"]["audio"][4, 0, 1] = -np.inf
    with caplog.at_level(logging.WARNING):
        bundle = _bundle(_mmsa(tmp_path, content), *MOSI)
    assert len(bundle.train) == SIZES["train"]  # kept: the published utterance set
    statistics = bundle.train.statistics
    expected = (0.0 - statistics.mean["a"][0]) / statistics.std["a"][0]
    assert bundle.train[2]["a"][0, 0].item() == pytest.approx(expected.item(), abs=1e-5)
    assert "set 2 -inf audio values to 0" in caplog.text
    assert bundle.fallbacks == {"train": {"neg_inf_audio_set_to_0": 2}}  # results.json shows it


def _set(split: str, key: str, index: tuple, value):
    def edit(content: dict) -> None:
        array = np.array(content[split][key], dtype=np.float32 if key != "audio_lengths" else np.int64)
        array[index] = value
        content[split][key] = array

    return edit


def _non_prefix_mask(content: dict) -> None:
    content["valid"]["text_bert"][3, 1, :] = 0
    content["valid"]["text_bert"][3, 1, 1] = 1  # one token, not at the start


BAD_ROWS = {
    "nan_vision": (_set("valid", "vision", (3, 0, 2), np.nan), "nonfinite_features"),
    "inf_text": (_set("valid", "text", (3, 0, 0), np.inf), "nonfinite_features"),
    "neg_inf_vision": (_set("valid", "vision", (3, 1, 0), -np.inf), "nonfinite_features"),
    "nan_label": (_set("valid", "regression_labels", (3,), np.nan), "bad_label"),
    "label_out_of_range": (_set("valid", "regression_labels", (3,), 3.5), "bad_label"),
    "zero_length": (_set("valid", "audio_lengths", (3,), 0), "empty_sequence"),
    "length_beyond_padding": (_set("valid", "audio_lengths", (3,), STEPS["audio"] + 1), "bad_length"),
    "negative_length": (_set("valid", "audio_lengths", (3,), -2), "bad_length"),
    "mask_not_a_prefix": (_non_prefix_mask, "bad_length"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_a_bad_row_is_skipped_with_its_reason(tmp_path, case):
    edit, reason = BAD_ROWS[case]
    content = mmsa_content()
    edit(content)
    bundle = _bundle(_mmsa(tmp_path, content), *MOSI)
    assert bundle.skipped["valid"] == {reason: 1} and bundle.skipped["train"] == {}
    assert len(bundle.valid) == SIZES["valid"] - 1
    assert content["valid"]["id"][3] not in [bundle.valid[i]["id"] for i in range(len(bundle.valid))]


def test_a_split_without_usable_utterances_is_an_error_naming_it(tmp_path):
    content = mmsa_content()
    content["test"]["regression_labels"][:] = np.nan
    with pytest.raises(
        UsageError, match=r"no usable utterances in split 'test' \(8 in the file; skipped: bad_label 8\)"
    ):
        _bundle(_mmsa(tmp_path, content), *MOSI)


def test_nan_in_padding_beyond_the_length_is_not_read(tmp_path):
    content = mmsa_content()
    content["valid"]["vision_lengths"][3] = STEPS["vision"] - 2
    content["valid"]["vision"][3, STEPS["vision"] - 1, 0] = np.nan
    bundle = _bundle(_mmsa(tmp_path, content), *MOSI)
    assert bundle.skipped["valid"] == {} and len(bundle.valid[3]["v"]) == STEPS["vision"] - 2


def test_sims_range_and_mult_pairs_are_checked(tmp_path):
    content = mmsa_content(sentiment_range=1.0)
    content["test"]["regression_labels"][2] = 1.5  # CH-SIMS labels lie in [-1, 1]
    bundle = _bundle(_mmsa(tmp_path, content, "unaligned_39.pkl"), "data.dataset=sims", "data.task=sentiment")
    assert bundle.skipped["test"] == {"bad_label": 1}
    content = mult_content()
    content["train"]["labels"][5, 2] = [1.0, 1.0]  # not one-hot
    bundle = _bundle(_mult(tmp_path, content), *IEMOCAP4)
    assert bundle.skipped["train"] == {"bad_label": 1}


def _drop(split: str, key: str):
    return lambda content: content[split].pop(key)


def _replace(split: str, key: str, make):
    def edit(content: dict) -> None:
        content[split][key] = make(content[split][key])

    return edit


STRUCTURE_ERRORS = {
    "missing_split": (lambda content: content.pop("valid"), r"no split 'valid' \(found keys 'train', 'test'\)"),
    "missing_key": (_drop("test", "vision"), r"test: missing key 'vision'"),
    "flat_audio": (_replace("train", "audio", lambda a: a[:, :, 0]), r"train: 'audio' must have 3 dimensions, found"),
    "vision_rows": (_replace("valid", "vision", lambda a: a[:-1]), r"valid: 'vision' must have shape \(8, \*, \*\)"),
    "label_shape": (
        _replace("train", "regression_labels", lambda a: np.stack([a, a], 1)),
        r"'regression_labels' must have shape \(16,\), found \(16, 2\)",
    ),
    "one_length_key": (_drop("train", "vision_lengths"), r"has 'audio_lengths' but not 'vision_lengths'"),
    "text_bert_shape": (
        _replace("train", "text_bert", lambda a: a[:, :2]),
        r"'text_bert' must have shape \(16, 3, 9\), found \(16, 2, 9\)",
    ),
    "split_dims": (
        _replace("valid", "audio", lambda a: np.concatenate([a, a[:, :, :1]], 2)),
        r"valid has feature sizes t=12,a=6,v=7, train has t=12,a=5,v=7",
    ),
    "fractional_lengths": (
        _replace("train", "vision_lengths", lambda lengths: [length - 0.5 for length in lengths]),
        r"'vision_lengths' must hold whole numbers of steps",
    ),
    "text_strings": (_replace("train", "text", lambda a: a.astype(str)), r"'text' must be numeric, found dtype"),
    "ids_count": (_replace("test", "id", lambda a: a[:-2]), r"test: 'id' must have 8 entries"),
}


@pytest.mark.parametrize("case", STRUCTURE_ERRORS)
def test_structure_errors_name_the_split_key_and_shape(tmp_path, case):
    edit, message = STRUCTURE_ERRORS[case]
    content = mmsa_content()
    edit(content)
    with pytest.raises(UsageError, match=message):
        _bundle(_mmsa(tmp_path, content), *MOSI)


def test_unreadable_files_and_mult_label_shapes_are_named(tmp_path):
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(UsageError, match=rf"{garbage}: not a readable mmsa pickle"):
        _bundle(f"mmsa:{garbage}", *MOSI)
    listed = write_pickle(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(UsageError, match="holds a dict with keys train/valid/test, got list"):
        _bundle(f"mmsa:{listed}", *MOSI)
    content = mult_content()
    content["test"]["labels"] = content["test"]["labels"][:, :3]
    with pytest.raises(UsageError, match=r"test: 'labels' must have shape \(8, 1, 1\) .* or \(8, 4, 2\)"):
        _bundle(_mult(tmp_path, content), *IEMOCAP4)


def test_config_errors_name_the_source_and_what_fits(tmp_path):
    mmsa = _mmsa(tmp_path)
    with pytest.raises(ConfigError, match=r"data.source must be 'clips', 'mmsa:PATH' or 'mult:PATH', got 'hdf5:x'"):
        load_config(None, ["data.source=hdf5:x"])
    with pytest.raises(ConfigError, match=r"data.source must be .* got 'mmsa:'"):
        load_config(None, ["data.source='mmsa:'", *MOSI])
    missing = tmp_path / "nowhere.pkl"
    with pytest.raises(UsageError, match=rf"{missing}: cannot read the mmsa feature file"):
        load_config(None, [f"data.source=mmsa:{missing}", "model.name=mult", *MOSI])
    with pytest.raises(ConfigError, match=r"data.source=mmsa:.* holds data.dataset mosi, mosei or sims, not 'iemocap'"):
        load_config(None, [f"data.source={mmsa}", "model.name=mult"])
    with pytest.raises(ConfigError, match=r"data.dataset='mosi' .* data.source=mmsa:PATH"):
        load_config(None, ["data.dataset=mosi", "data.task=sentiment"])
    with pytest.raises(ConfigError, match=r"model 'fe2e' reads raw clips"):
        load_config(None, [f"data.source={mmsa}", "model.name=fe2e", *MOSI])
    mosei = write_pickle(tmp_path / "mosei_senti_data.pkl", mult_content(iemocap=False))
    with pytest.raises(ConfigError, match=r"holds one sentiment score per utterance, which data.dataset='iemocap4'"):
        load_config(None, [f"data.source=mult:{mosei}", "model.name=mult", *IEMOCAP4])
    with pytest.raises(ConfigError, match=r"model.input_dims='t=1,a=2,v=3', but .* has feature sizes t=12,a=5,v=7"):
        load_config(None, [f"data.source={mmsa}", "model.name=mult", "model.input_dims=t=1,a=2,v=3", *MOSI])
    with pytest.raises(ConfigError, match=r"model.input_dims='t=1,a=2,v=3' is only for data.source files"):
        load_config(None, ["model.name=mult", "model.input_dims=t=1,a=2,v=3"])


def test_loading_records_the_file_feature_sizes(tmp_path):
    config = load_config(None, [f"data.source={_mmsa(tmp_path)}", "model.name=mult", *MOSI])
    assert config.model.input_dims == "t=12,a=5,v=7"


def test_mult_metrics_are_the_two_way_argmax_after_the_prior_is_removed():
    names = ("neutral", "happy", "sad", "angry")
    labels = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]])
    logits = np.array(
        [
            [2.0, -1.0, 0.3, -2.0],
            [-1.0, 1.5, 0.1, -0.5],
            [0.2, -1.0, 1.2, 0.4],
            [-1.0, 0.9, -1.0, 2.0],
            [0.5, 0.8, -0.2, -1.0],
            [1.0, -0.3, -0.5, 0.5],
        ]
    )
    pos_weight = (1.0, float(np.exp(1.0)), 1.0, 2.0)
    metrics = Scoring("emotion", "iemocap4", names, pos_weight).metrics(logits, labels, [0.5] * 4)
    # MulT's eval_iemocap on a two-way output per emotion: (0, logit - log w), argmax, ties negative
    two_way = np.stack([np.zeros_like(logits), logits - np.log(pos_weight)], axis=-1)
    predicted = two_way.argmax(-1)
    happy = predicted[:, 1]  # 1.5-1 > 0, 0.8-1 < 0, 0.9-1 < 0: only row 1 positive
    assert happy.tolist() == [0, 1, 0, 0, 0, 0]
    assert metrics["per_class"]["happy"]["mult_acc"] == pytest.approx(5 / 6)
    for c, name in enumerate(names):
        accuracy = float(np.mean(predicted[:, c] == labels[:, c]))
        assert metrics["per_class"][name]["mult_acc"] == pytest.approx(accuracy)
    assert metrics["mult_acc"] == pytest.approx(np.mean([metrics["per_class"][n]["mult_acc"] for n in names]))
    assert 0.0 <= metrics["mult_f1"] <= 1.0 and "acc" in metrics and "multiclass_acc" not in metrics


def test_sims_metrics_follow_mmsa_on_clipped_values():
    predictions = np.array([[-0.8], [-0.05], [0.05], [0.5], [1.4]])  # 1.4 is clipped to 1
    truth = np.array([[-1.0], [0.0], [0.2], [0.8], [0.9]])
    metrics = Scoring("sentiment", "sims", ("sentiment",)).metrics(predictions, truth, None)
    assert metrics["acc2"] == 1.0  # (-1, 0] vs (0, 1]: 0 is negative, as in MMSA
    assert metrics["acc3"] == pytest.approx(0.8)  # 0.05 is neutral, 0.2 positive
    assert metrics["acc5"] == pytest.approx(0.6)  # and 0.5 vs 0.8 fall on either side of 0.7
    assert metrics["mae"] == pytest.approx(0.16) and metrics["f1"] == 1.0


def _tiny_overrides(name: str) -> list[str]:
    fields = {field.name for field in dataclasses.fields(model_options(name))}
    sizes = [f"model.{key}={value}" for key, value in SMALL_SIZES.items() if key in fields]
    return [*sizes, "model.text_model=tiny-bert", "train.epochs=1", "train.progress=false", "data.batch_size=8"]


FILES = {  # config folder, overrides, the file
    "mmsa_mosi": ("mosei", MOSI, lambda tmp_path: _mmsa(tmp_path)),
    "mult_iemocap": ("iemocap", IEMOCAP4, lambda tmp_path: _mult(tmp_path)),
}


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("name", FEATURE_MODELS)
def test_every_feature_model_trains_an_epoch_through_the_cli(tmp_path, capsys, name, file):
    folder, overrides, make = FILES[file]
    run_dir = tmp_path / "run"
    sets = [f"data.source={make(tmp_path)}", *overrides, *_tiny_overrides(name)]
    argv = ["train", "--config", f"configs/{folder}/{name}.yaml", "--out", str(run_dir)]
    status = main([*argv, *(arg for value in sets for arg in ("--set", value))])
    task = "sentiment" if "data.task=sentiment" in overrides else "emotion"
    if task not in model_spec(name).tasks:
        assert status == 2 and f"does not support data.task='{task}'" in capsys.readouterr().err
        return
    assert status == 0
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["test"]["n"] == SIZES["test"] and results["skipped"]["test"] == {}
    assert results["config"]["model"]["input_dims"] == "t=12,a=5,v=7"
    for metric in results["main_metrics"]:
        assert metric in results["test"]
    if task == "emotion":
        assert set(results["test"]["per_class"]) == {"neutral", "happy", "sad", "angry"}
        assert all(0.0 <= results["test"][metric] <= 1.0 for metric in ("mult_acc", "mult_f1"))


def test_a_file_run_resumes_and_its_checkpoint_evaluates_on_the_file(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--config", "configs/iemocap/lf_lstm.yaml", "--out", str(run_dir)]
    sets = [f"data.source={_mult(tmp_path)}", *IEMOCAP4, *_tiny_overrides("lf_lstm")]
    argv += [arg for value in sets for arg in ("--set", value)]
    assert main(argv) == 0
    assert main([*argv, "--set", "train.epochs=2", "--resume"]) == 0  # the recorded input_dims match again
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["epochs_completed"] == 2
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run_dir / "checkpoints" / "best.pt")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["mult_f1"] == pytest.approx(results["test"]["mult_f1"])
    assert metrics["per_class"]["sad"]["mult_acc"] == pytest.approx(results["test"]["per_class"]["sad"]["mult_acc"])


def test_a_sims_file_trains_and_reports_mmsa_sims_metrics(tmp_path):
    run_dir = tmp_path / "run"
    path = write_pickle(tmp_path / "unaligned_39.pkl", mmsa_content(sentiment_range=1.0))
    sets = [f"data.source=mmsa:{path}", "data.dataset=sims", "data.task=sentiment", *_tiny_overrides("lf_trans")]
    argv = ["train", "--config", "configs/mosei/lf_trans.yaml", "--out", str(run_dir)]
    assert main([*argv, *(arg for value in sets for arg in ("--set", value))]) == 0
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert results["main_metrics"] == ["acc2", "f1", "mae", "corr", "acc5"]
    assert {"acc2", "acc3", "acc5", "f1", "mae"} <= set(results["test"])
