"""Both demo corpora and their truth file, built once per (version, seed)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from data_reorg.demo.assets import load_assets
from data_reorg.demo.cues import CLASSES
from data_reorg.demo.iemocap import build_iemocap
from data_reorg.demo.mosei import build_mosei
from data_reorg.io import write_text_atomic

log = logging.getLogger("data_reorg.demo")

DEMO_VERSION = 3


@dataclass(frozen=True)
class DemoCorpora:
    iemocap_src: Path  # OUT/raw/IEMOCAP_full_release
    mosei_src: Path  # OUT/raw/CMU_MOSEI
    truth: Path  # OUT/raw/demo_truth.json


def build_demo_corpora(out: Path, seed: int = 0) -> DemoCorpora:
    """Build both corpora under ``out/raw`` (or return the complete build already there for ``seed``).

    Every file is written under a temporary name and renamed; the ``.complete`` marker comes last, so
    an interrupted build is simply redone (the file set does not depend on the seed: all is overwritten).
    """
    raw = Path(out) / "raw"
    corpora = DemoCorpora(raw / "IEMOCAP_full_release", raw / "CMU_MOSEI", raw / "demo_truth.json")
    marker = raw / ".complete"
    stamp = json.dumps({"version": DEMO_VERSION, "seed": seed})
    if marker.is_file() and marker.read_text(encoding="utf-8") == stamp and corpora.truth.is_file():
        return corpora
    began = time.perf_counter()
    assets = load_assets()
    truth = {
        "version": DEMO_VERSION,
        "seed": seed,
        "classes": list(CLASSES),
        "iemocap": build_iemocap(corpora.iemocap_src, assets, seed),
        "mosei": build_mosei(corpora.mosei_src, assets, seed),
    }
    write_text_atomic(corpora.truth, json.dumps(truth, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    write_text_atomic(marker, stamp)
    log.info("built the demo corpora in %s (seed %d) in %.1f s", raw, seed, time.perf_counter() - began)
    return corpora
