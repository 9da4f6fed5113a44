"""Fidelity tables: the shipped `paper` / `improved` configs are exactly their model's table, the docs
are the table, and results record the preset a config is and its deviations."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.models import load_config, model_spec, shipped_models, with_changes

TABLED = [name for name in shipped_models() if model_spec(name).fidelity is not None]
DATASETS = ("iemocap", "mosei")


def test_the_end_to_end_models_have_tables():
    assert {"fe2e", "mesm"} <= set(TABLED)


@pytest.mark.parametrize("name", TABLED)
def test_docs_hold_the_registered_table(name):
    assert Path(f"docs/fidelity/{name}.md").read_text(encoding="utf-8") == model_spec(name).fidelity.markdown()


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", TABLED)
def test_paper_config_equals_the_table(name, dataset):
    table = model_spec(name).fidelity
    config = load_config(f"configs/{dataset}/{name}.yaml").to_dict()
    for key, value in table.preset("paper", dataset).items():
        section, _, option = key.partition(".")
        assert config[section][option] == value, key
    assert table.record(config) == {"preset": "paper", "deviations": {}}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("name", TABLED)
def test_improved_config_is_the_paper_one_plus_the_documented_deviations(name, dataset):
    table = model_spec(name).fidelity
    record = table.record(load_config(f"configs/{dataset}/{name}-improved.yaml").to_dict())
    paper, improved = table.preset("paper", dataset), table.preset("improved", dataset)
    assert record["preset"] == "improved"
    assert set(record["deviations"]) == {key for key in paper if paper[key] != improved[key]}
    for key, change in record["deviations"].items():
        assert change == {"paper": paper[key], "value": improved[key]}


def test_the_four_known_deviations_are_the_improved_preset_of_mesm():
    table = model_spec("mesm").fidelity
    paper, improved = table.preset("paper", "iemocap"), table.preset("improved", "iemocap")
    assert {key: improved[key] for key in paper if paper[key] != improved[key]} == {
        "data.audio_features": "log_mel",
        "model.positional_encoding": True,
        "model.attention_mode": "trainable",
        "train.bf16": True,
    }
    assert (paper["model.top_p"], paper["data.batch_size"], paper["train.lr"]) == (0.7, 2, 5e-5)


def test_any_other_change_is_a_custom_run_listing_it():
    config = with_changes(load_config("configs/iemocap/mesm-improved.yaml"), {"model.top_p": 0.5}, "test")
    record = model_spec("mesm").fidelity.record(config.to_dict())
    assert record["preset"] == "custom"
    assert record["deviations"]["model.top_p"] == {"paper": 0.7, "value": 0.5}
    assert record["deviations"]["model.attention_mode"] == {"paper": "faithful", "value": "trainable"}


def test_the_options_classes_default_to_the_paper():
    """The model's own options hold its paper's defaults (data/train sections are shared by all models)."""
    for name in TABLED:
        defaults = model_spec(name).options()
        for key, value in model_spec(name).fidelity.preset("paper", "iemocap").items():
            section, _, option = key.partition(".")
            if section == "model" and option not in ("name", "text_model", "text_max_length", "modalities"):
                assert getattr(defaults, option) == value, f"{name}: {key}"


def test_a_value_per_dataset_is_compared_with_the_run_dataset():
    from e2e.models.fidelity import FidelityTable, PerDataset, Setting

    table = FidelityTable(
        "x", "ref", (Setting("batch", PerDataset({"iemocap": 8, "mosei": 16}), "Table 5", "data.batch_size"),)
    )
    assert table.record({"data": {"dataset": "mosei", "batch_size": 16}}) == {"preset": "paper", "deviations": {}}
    record = table.record({"data": {"dataset": "iemocap", "batch_size": 16}})
    assert record["deviations"] == {"data.batch_size": {"paper": 8, "value": 16}}
    assert "iemocap: 8, mosei: 16" in table.markdown()
