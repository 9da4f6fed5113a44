"""The paper and improved presets of MESM train on the demo corpus (at demo size), and results.json
records which preset each run is, every deviation from the paper preset and the kept-site fractions."""

from __future__ import annotations

import json

import pytest

from e2e.cli import main

pytestmark = pytest.mark.slow

# What the demo must change in either preset: an offline text encoder, a CPU-sized network, one epoch.
DEMO_SIZE = {
    "model.text_model": "minilm",
    "model.text_max_length": 32,
    "model.cnn_width": 0.25,
    "model.temporal_layers": 1,
    "model.temporal_ffn": 128,
    "train.epochs": 1,
}
IMPROVED = {
    "data.audio_features": "log_mel",
    "model.positional_encoding": True,
    "model.attention_mode": "trainable",
    "train.bf16": True,
}


@pytest.mark.parametrize("preset", ["mesm", "mesm-improved"])
def test_preset_trains_and_records_its_deviations(tiny, tmp_path, preset):
    overrides = [f"{key}={value}" for key, value in DEMO_SIZE.items()]
    args = ["train", "--config", f"configs/iemocap/{preset}.yaml", "--out", str(tmp_path / "run")]
    for override in [f"data.data_dir={tiny}", "train.progress=false", *overrides]:
        args += ["--set", override]
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    expected = {**DEMO_SIZE, **(IMPROVED if preset.endswith("improved") else {})}
    assert results["preset"] == "custom"  # the demo sizes are deviations too, and listed as such
    assert {key: change["value"] for key, change in results["deviations"].items()} == expected
    assert results["deviations"]["model.cnn_width"]["paper"] == 1.0
    assert results["attention_mode"] == ("trainable" if preset.endswith("improved") else "faithful")
    assert set(results["kept_fraction"]) == {"a", "v"}
    for fractions in results["kept_fraction"].values():
        assert len(fractions) == 3 and all(0 < value <= 1 for value in fractions)
    assert results["kept_fraction"] == results["test"]["kept_fraction"]
