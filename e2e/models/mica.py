"""MICA: MulT-style cross-modal attention with distribution alignment and merging gates.

The model is :class:`~e2e.models.mult.MulT` with every cross-modal stack replaced by
:class:`AlignedCrossModalTransformer`, which adds, per layer:

* a **merging gate**: ``g = sigmoid(W [x; u])`` decides per element how much of the cross-modal update
  ``u`` enters the target stream (``x + g * u``) instead of always adding it;
* **MMD marginal alignment** of queries and keys: the layer-normed valid target tokens (queries) and
  source tokens (keys) of the batch are pulled together in distribution by a multi-kernel Gaussian
  MMD (:func:`e2e.models.losses.mmd`), at most :data:`MMD_TOKENS` tokens of each side per layer;
* **propagated element-level alignment**: from the second layer on, each valid target element's
  cross-modal update is pulled towards the same element's update in the previous layer (mean squared
  difference; the previous update is detached, so alignment propagates forward through depth rather
  than collapsing both layers). Our reading of the paper's element-level loss: it is 0 when
  consecutive layers agree.

The auxiliary loss is ``aux_weight * (MMD + ELEMENT_WEIGHT * element alignment)``, summed over the
layers and averaged over the cross-modal directions, in training only.
"""
from __future__ import annotations

import torch
from torch import nn

from e2e.config import ModelConfig
from e2e.models.losses import mmd
from e2e.models.mult import CrossModalTransformer, MulT
from e2e.models.registry import register_model

MMD_TOKENS = 256
ELEMENT_WEIGHT = 1.0


class AlignedCrossModalTransformer(CrossModalTransformer):
    def __init__(self, d_model: int, config: ModelConfig):
        super().__init__(d_model, config)
        self.gates = nn.ModuleList(nn.Linear(2 * d_model, d_model) for _ in self.blocks)

    def forward(self, target, target_padding, source, source_padding) -> tuple[torch.Tensor, list[torch.Tensor]]:
        losses, previous = [], None
        for block, gate in zip(self.blocks, self.gates):
            update = block.attend(target, source, source_padding)
            if self.training:
                losses.append(self._alignment(block, target, target_padding, source, source_padding, update, previous))
            target = block.feed_forward(target + merging_gate(gate, target, update) * update)
            previous = update
        return self.norm(target), losses

    @staticmethod
    def _alignment(block, target, target_padding, source, source_padding, update, previous) -> torch.Tensor:
        queries = block.norm_target(target)[~target_padding][:MMD_TOKENS]
        keys = block.norm_source(source)[~source_padding][:MMD_TOKENS]
        loss = mmd(queries, keys)
        if previous is not None:
            loss = loss + ELEMENT_WEIGHT * element_alignment(update, previous.detach(), target_padding)
        return loss


def merging_gate(gate: nn.Linear, target: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """Per-element weights in (0, 1) for the cross-modal update."""
    return torch.sigmoid(gate(torch.cat([target, update], dim=-1)))


def element_alignment(update: torch.Tensor, previous: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between two layers' updates over the valid elements."""
    return (update - previous)[~padding].pow(2).mean()


class MICA(MulT):
    crossmodal_class = AlignedCrossModalTransformer

    def __init__(self, config: ModelConfig, num_classes: int):
        super().__init__(config, num_classes)
        self.aux_weight = config.aux_weight

    def auxiliary_loss(self, losses: list[torch.Tensor]) -> torch.Tensor | None:
        if not self.training or not losses:
            return None
        return self.aux_weight * torch.stack(losses).sum() / len(self.crossmodal)


@register_model("mica", inputs="features")
def build_mica(config: ModelConfig, class_names: list[str]) -> MICA:
    return MICA(config, len(class_names))
