from pathlib import Path

import pytest

from e2e.config import ConfigError, ExperimentConfig, load_config

CONFIGS = sorted(Path("configs").glob("*/*.yaml"))


def test_every_shipped_config_loads():
    from e2e.models import available_models

    assert len(CONFIGS) >= 36  # twelve models x (iemocap, mosei, demo)
    for path in CONFIGS:
        config = load_config(path)
        assert config.model.name == path.stem and config.model.name in available_models()
        assert config.data.dataset in ("iemocap", "mosei")


def test_paper_hyperparameters():
    config = load_config("configs/iemocap/mesm.yaml")
    assert (config.train.lr, config.train.text_lr_factor, config.data.batch_size) == (5e-5, 0.1, 2)
    assert (config.model.top_p, config.model.sparse_blocks, config.model.d_model) == (0.7, 3, 64)
    assert load_config("configs/mosei/fe2e.yaml").data.batch_size == 8


def test_overrides_are_typed():
    config = load_config("configs/iemocap/fe2e.yaml", ["train.epochs=3", "model.top_p=1", "model.modalities=ta",
                                                        "model.cnn_weights=DEFAULT"])
    assert config.train.epochs == 3 and config.model.top_p == 1.0 and isinstance(config.model.top_p, float)
    assert config.model.modalities == "ta" and config.model.cnn_weights == "DEFAULT"


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "train.'epoch'"),
    ("trian.epochs=3", "'trian'"),
    ("train.epochs=three", "train.epochs must be int"),
    ("model.positional_encoding=1", "true or false"),
    ("epochs=3", "section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        load_config(None, [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: fe2e\n  top_k: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.'top_k'"):
        load_config(path)


def test_round_trip_through_dict():
    config = load_config("configs/mosei/mesm.yaml")
    from e2e.config import config_from_dict
    assert config_from_dict(config.to_dict()) == config
    assert isinstance(config, ExperimentConfig)
