import dataclasses
import re
from pathlib import Path

import pytest

from e2e.config import ConfigError, ExperimentConfig
from e2e.models import available_models, config_from_dict, load_config, model_options, switch_model, with_changes

CONFIGS = sorted(path for path in Path("configs").glob("*/*.yaml") if path.stem != "dataset")


def test_every_shipped_config_loads():
    from e2e.models import available_models

    assert len(CONFIGS) >= 36  # twelve models x (iemocap, mosei, demo)
    for path in CONFIGS:
        config = load_config(path)
        assert config.model.name == path.stem.removesuffix("-improved") and config.model.name in available_models()
        assert config.data.dataset in ("iemocap", "mosei")
    for shared in Path("configs").glob("*/dataset.yaml"):  # the folders' shared layer loads on its own too
        assert load_config(shared).data.dataset == ("mosei" if shared.parent.name == "mosei" else "iemocap")


def test_paper_hyperparameters():
    config = load_config("configs/iemocap/mesm.yaml")
    assert (config.train.lr, config.train.text_lr_factor, config.data.batch_size) == (5e-5, 0.1, 2)
    assert (config.model.top_p, config.model.sparse_blocks, config.model.d_model) == (0.7, 3, 64)
    assert load_config("configs/mosei/fe2e.yaml").data.batch_size == 8


def test_overrides_are_typed():
    config = load_config(
        "configs/iemocap/mesm.yaml",
        ["train.epochs=3", "model.top_p=1", "model.modalities=ta", "model.cnn_weights=DEFAULT"],
    )
    assert config.train.epochs == 3 and config.model.top_p == 1.0 and isinstance(config.model.top_p, float)
    assert config.model.modalities == "ta" and config.model.cnn_weights == "DEFAULT"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "train.'epoch'"),
        ("trian.epochs=3", "'trian'"),
        ("train.epochs=three", "train.epochs must be int"),
        ("model.positional_encoding=1", "true or false"),
        ("model.top_p=0.5", "model.'top_p'"),  # the default model (fe2e) has no top_p: it is MESM's option
        ("model.name=mesn", "unknown model 'mesn'"),
        ("epochs=3", "section.key=value"),
    ],
)
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
    assert config_from_dict(config.to_dict()) == config
    assert isinstance(config, ExperimentConfig)


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-3`` as the string "1e-3"; files and --set values must read a float."""
    path = tmp_path / "lr.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-5\nmodel:\n  name: misa\n  aux_weight: 2e0\n")
    config = load_config(path)
    assert (config.train.lr, config.train.weight_decay, config.model.aux_weight) == (1e-3, 5e-5, 2.0)
    assert load_config(None, ["train.lr=1e-3"]).train.lr == 1e-3
    assert load_config(None, ["train.grad_clip=+1e1"]).train.grad_clip == 10.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "train.epochs must be > 0, got 0"),
        ("train.lr=-1e-3", "train.lr must be >= 0, got -0.001"),
        ("train.lr=.nan", "train.lr must be >= 0, got nan"),
        ("train.grad_clip=.inf", "train.grad_clip must be >= 0, got inf"),
        ("train.early_stop_patience=-1", "train.early_stop_patience must be >= 0"),
        ("train.seed=-1", "train.seed must be in [0, 4294967295]"),
        ("data.batch_size=0", "data.batch_size must be > 0"),
        ("data.img_interval_ms=-500", "data.img_interval_ms must be > 0"),
        ("model.dropout=1.5", r"model.dropout must be in [0, 1], got 1.5"),
        ("model.top_p=0", r"model.top_p must be in (0, 1], got 0.0"),
        ("model.top_p=1.01", r"model.top_p must be in (0, 1]"),
        ("model.train_missing_rate=-0.1", r"model.train_missing_rate must be in [0, 1]"),
        ("model.attention_mode=learned", "model.attention_mode must be one of faithful, trainable, got 'learned'"),
        ("model.modalities=at", "model.modalities must be one of t, a, v, ta, tv, av, tav, got 'at'"),
        ("model.cnn=resnet", "model.cnn must be one of mesm_vgg, vgg11, vgg11_bn, got 'resnet'"),
        ("data.audio_features=mfcc", "data.audio_features must be one of log_mel, power, got 'mfcc'"),
        ("data.dataset=meld", "data.dataset must be one of iemocap, mosei, mosi, sims, iemocap4, got 'meld'"),
        ("train.scheduler=linear", "train.scheduler must be one of none, cosine, got 'linear'"),
        ("train.epochs=true", "train.epochs must be int, got True"),
        ("train.lr=true", "train.lr must be float, got True"),
        ("model.cnn_weights=3", "model.cnn_weights must be str or None, got 3"),
        ("to_dict.x=1", "unknown config section 'to_dict'"),
        ("data.data_dir=[1", "not valid YAML"),
    ],
)
def test_out_of_range_or_mistyped_values_name_the_key(override, message):
    model = {"top_p": "mesm", "attention_mode": "mesm", "train_missing_rate": "tfr_net"}.get(
        override.partition("=")[0].partition(".")[2], "fe2e"
    )
    with pytest.raises(ConfigError, match=re.escape(f"--set {override}: ") + ".*" + re.escape(message)):
        load_config(None, [f"model.name={model}", override])


def test_out_of_range_value_in_a_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: -5e-5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.lr must be >= 0, got -5e-05"):
        load_config(path)


def test_broken_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML at line \d"):
        load_config(path)
    path.write_text("- train\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: must be a mapping of sections"):
        load_config(path)


@pytest.mark.parametrize("model", available_models())
def test_every_field_of_every_model_accepts_its_default(model):
    from e2e.config import check_value

    config = load_config(None, [f"model.name={model}"])
    assert type(config.model) is model_options(model)
    for section_field in dataclasses.fields(config):
        section = getattr(config, section_field.name)
        for key_field in dataclasses.fields(section):
            default = getattr(section, key_field.name)
            assert check_value(section, section_field.name, key_field.name, default, "defaults") == default


def test_a_none_default_is_still_type_checked():
    with pytest.raises(ConfigError, match=r"model\.cnn_weights must be str or None, got \[1\]"):
        load_config(None, ["model.cnn_weights=[1]"])


def test_layers_apply_in_order_and_name_their_source(tmp_path):
    """defaults <- base file <- file <- --set, key by key; a bad value names the layer it came from."""
    (tmp_path / "shared.yaml").write_text("data:\n  batch_size: 4\n  img_interval_ms: 250\ntrain:\n  lr: 1e-3\n")
    (tmp_path / "run.yaml").write_text("base: shared.yaml\nmodel:\n  name: mesm\ndata:\n  batch_size: 2\n")
    config = load_config(tmp_path / "run.yaml", ["train.lr=2e-3"])
    assert (config.data.batch_size, config.data.img_interval_ms, config.train.lr) == (2, 250, 2e-3)
    assert config.model.name == "mesm" and config.model.top_p == model_options("mesm").top_p
    (tmp_path / "shared.yaml").write_text("model:\n  top_p: 0.3\n")
    assert load_config(tmp_path / "run.yaml").model.top_p == 0.3  # checked against the final model (mesm)
    (tmp_path / "shared.yaml").write_text("data:\n  batch_size: -1\n")
    with pytest.raises(ConfigError, match=r"shared\.yaml: data\.batch_size must be > 0"):
        load_config(tmp_path / "run.yaml", ["data.batch_size=-2"])  # the file layer is checked too
    (tmp_path / "shared.yaml").write_text("base: run.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "run.yaml")


def test_the_model_can_change_in_a_later_layer():
    """``--set model.name=...`` over a file of another model: the keys are checked against the final model."""
    assert load_config("configs/demo/fe2e.yaml", ["model.name=mesm"]).model.top_p == model_options("mesm").top_p
    with pytest.raises(ConfigError, match=r"configs/demo/mesm\.yaml: unknown config key model\.'attention_mode'"):
        load_config("configs/demo/mesm.yaml", ["model.name=fe2e"])


def test_switch_model_and_with_changes_build_typed_checked_configs():
    mesm = load_config("configs/demo/mesm.yaml")
    fe2e = switch_model(mesm, "fe2e", "test")
    assert type(fe2e.model) is model_options("fe2e") and not hasattr(fe2e.model, "top_p")
    assert (fe2e.model.cnn_width, fe2e.train.lr, fe2e.data.data_dir) == (
        mesm.model.cnn_width,
        mesm.train.lr,
        mesm.data.data_dir,
    )
    point = with_changes(mesm, {"model.top_p": 0.3, "train.seed": 2}, "sweep point")
    assert (point.model.top_p, point.train.seed, mesm.model.top_p) == (0.3, 2, 0.5)
    with pytest.raises(ConfigError, match=r"sweep point: model\.top_p must be in \(0, 1\], got 0"):
        with_changes(mesm, {"model.top_p": 0}, "sweep point")
