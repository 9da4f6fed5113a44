"""FE2E: the fully end-to-end model of the MESM paper (Dai et al., NAACL 2021), without sparsity.

The network is :class:`~e2e.models.layers.end_to_end.EndToEndModel` with dense per-frame CNNs.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.models.fidelity import FidelityTable
from e2e.models.layers.end_to_end import MESM_PAPER, EndToEndConfig, EndToEndModel, end_to_end_settings
from e2e.models.registry import register_model

FIDELITY = FidelityTable("fe2e", MESM_PAPER, end_to_end_settings(batch_size=8))


@dataclass
class FE2EConfig(EndToEndConfig):
    name: str = "fe2e"


class FE2E(EndToEndModel):
    """FE2E: dense CNNs, temporal transformers, text CLS head, learned late fusion."""


@register_model("fe2e", options=FE2EConfig, fidelity=FIDELITY, tasks=("emotion", "sentiment", "vad"))
def build_fe2e(config: FE2EConfig, class_names: list[str]) -> FE2E:
    return FE2E(config, len(class_names))
