"""Corpus recipes: raw IEMOCAP / CMU-MOSEI releases -> aligned per-utterance clips and one manifest.

from data_reorg import prepare_iemocap, prepare_mosei
summary = prepare_iemocap("/data/IEMOCAP_full_release", "out/iemocap", split="mesm", jobs=8)

The recipes are imported on first use (PEP 562), so importing a light module of the package (``io``,
``workers``) does not load the media stack: a spawned worker process starts in well under a second.
"""

import importlib

_RECIPES = {"prepare_iemocap": "data_reorg.iemocap", "prepare_mosei": "data_reorg.mosei"}

__all__ = list(_RECIPES)


def __getattr__(name: str):
    if name in _RECIPES:
        return getattr(importlib.import_module(_RECIPES[name]), name)
    raise AttributeError(f"module 'data_reorg' has no attribute {name!r}")
