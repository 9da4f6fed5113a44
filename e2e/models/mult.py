"""MulT (Tsai et al., ACL 2019, "Multimodal Transformer for Unaligned Multimodal Language Sequences").

The network is :class:`e2e.models.layers.crossmodal.MulT` (shared with MICA); options: :class:`MulTConfig`.

What the paper does, and how it maps here:

* **Temporal convolution**: each modality's feature sequence is projected to ``d_model`` by a 1-D
  convolution without bias, kernels ``text_kernel``/``audio_kernel``/``visual_kernel`` (the paper's
  IEMOCAP sizes, L/V/A = 3/3/5; its official code uses 1). The convolution's zero padding at the
  ends equals the zero padding of shorter utterances in a batch, so a valid step never sees batch
  padding.
* **Embedding**: states scaled by sqrt(d) plus sinusoidal positions, then dropout. Positions are added
  once here; the official code adds them again at the input of every transformer.
* **Cross-modal transformers**: for every ordered pair (source -> target) a stack of
  ``temporal_layers`` pre-LN blocks lets the target query the (fixed, layer-normed) source sequence;
  source padding is masked (key padding mask). Three modalities give six directions, two give two;
  one modality has none, so MulT refuses it. Directions are named ``"{source}_to_{target}"``.
* **Self-attention memory**: per target, its incoming streams are concatenated (width
  ``d_model * (M - 1)``) and pass a pre-LN self-attention transformer (``temporal_layers`` deep; the
  official code uses at least 3), padding masked. Each block's FFN width is ``temporal_ffn`` scaled by
  the block's width over ``d_model`` (the paper keeps FFN = 4 d everywhere).
* **Read-out**: the memory state at the utterance's *last valid* step (the paper takes the last
  element of unpadded sequences), the summaries of all targets concatenated, the paper's residual
  projection block (Linear-ReLU-Dropout-Linear plus the input) and a linear output layer giving
  class logits (classification with BCE in the trainer instead of the paper's regression / CE).
* One ``dropout`` serves the paper's separate embedding, attention, residual and output dropouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from e2e.models.layers.crossmodal import CrossModalConfig, MulT
from e2e.models.registry import register_model


@dataclass
class MulTConfig(CrossModalConfig):
    """MulT's options: those of its network (see :class:`CrossModalConfig`), nothing of its own."""

    name: str = "mult"


@register_model("mult", options=MulTConfig, inputs="features")
def build_mult(config: MulTConfig, class_names: list[str]) -> MulT:
    return MulT(config, len(class_names))
