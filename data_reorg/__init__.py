"""Corpus recipes: raw IEMOCAP / CMU-MOSEI releases -> aligned per-utterance clips and one manifest.

from data_reorg import prepare_iemocap, prepare_mosei
summary = prepare_iemocap("/data/IEMOCAP_full_release", "out/iemocap", split="mesm", jobs=8)
"""

from data_reorg.iemocap import prepare_iemocap
from data_reorg.mosei import prepare_mosei

__all__ = ["prepare_iemocap", "prepare_mosei"]
