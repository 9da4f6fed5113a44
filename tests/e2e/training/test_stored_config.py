"""Checkpoints saved before each model had its own options still load: their flat model section keeps
keys the model does not have, which are left out with a warning naming them."""

from __future__ import annotations

import logging

import pytest

from e2e.config import ConfigError
from e2e.models import load_config
from e2e.training.checkpoint import stored_config


def test_a_flat_model_section_from_an_older_checkpoint_loads_with_a_warning(caplog):
    config = load_config("configs/demo/fe2e.yaml")
    legacy = config.to_dict()
    legacy["model"].update(top_p=0.7, sparse_blocks=3, attention_mode="trainable", aux_weight=0.1)
    with caplog.at_level(logging.WARNING, logger="e2e.training.checkpoint"):
        loaded = stored_config(legacy, "runs/old/checkpoints/best.pt")
    assert loaded == config
    message = caplog.records[-1].getMessage()
    assert "runs/old/checkpoints/best.pt" in message and "attention_mode, aux_weight, sparse_blocks, top_p" in message


def test_a_stored_value_out_of_range_is_still_an_error():
    values = load_config("configs/demo/mesm.yaml").to_dict()
    values["model"]["top_p"] = 0.0
    with pytest.raises(ConfigError, match=r"best\.pt: model\.top_p must be in \(0, 1\]"):
        stored_config(values, "best.pt")
