"""FE2E: the fully end-to-end model of the MESM paper (Dai et al., NAACL 2021), without sparsity.

The network is :class:`~e2e.models.layers.end_to_end.EndToEndModel` with dense per-frame CNNs.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.models.layers.end_to_end import EndToEndConfig, EndToEndModel
from e2e.models.registry import register_model


@dataclass
class FE2EConfig(EndToEndConfig):
    name: str = "fe2e"


class FE2E(EndToEndModel):
    """FE2E: dense CNNs, temporal transformers, text CLS head, learned late fusion."""


@register_model("fe2e", options=FE2EConfig)
def build_fe2e(config: FE2EConfig, class_names: list[str]) -> FE2E:
    return FE2E(config, len(class_names))
