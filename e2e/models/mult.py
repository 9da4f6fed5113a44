"""MulT (Tsai et al., ACL 2019, "Multimodal Transformer for Unaligned Multimodal Language Sequences").

The network is :class:`MulTModel`, the skeleton :class:`e2e.models.layers.crossmodal.MulT` (shared
with MICA) with the official encoders; options: :class:`MulTConfig`, per-dataset values and sources in
:data:`FIDELITY` (``docs/fidelity/mult.md``). Official code: yaohungt/Multimodal-Transformer.

* **Temporal convolution**: each modality's feature sequence goes to ``d_model`` through a bias-free
  1-D convolution, kernels ``text_kernel``/``audio_kernel``/``visual_kernel`` (the paper's Table 5;
  the official code uses 1). The raw text features first pass ``embed_dropout`` (official
  ``MULTModel.forward``). The convolution's zero padding at the ends equals the zero padding of
  shorter utterances in a batch, so a valid step never sees batch padding.
* **Encoders** (official ``TransformerEncoder``, :mod:`e2e.models.layers.mult_transformer`): every
  cross-modal transformer and every memory embeds its own inputs: states times sqrt(width), plus
  fairseq's sinusoidal positions (``official_positions``), then ``embed_dropout`` — on the queries
  and, drawn separately, on the keys and on the values of the source. Then pre-LN blocks
  (``MulTBlock``: one LayerNorm for queries, keys and values; attention dropout; residual dropout
  after the attention and after the FFN; ReLU dropout inside the 4-wide FFN) and a final LayerNorm.
* **Attention dropout by source** (official ``get_network``): ``dropout`` (official ``attn_dropout``)
  where the source is text and in the memories, ``attn_dropout_a`` where it is audio,
  ``attn_dropout_v`` where it is visual.
* **Masks**: with ``attn_mask`` (official default on) query step ``i`` sees key steps
  ``j <= i + |L_k - L_q|`` (official ``buffered_future_mask``; causal in the memories), with ``L_q``,
  ``L_k`` the utterance's own lengths. Padded keys are always masked (ours: the official code attends
  to its fixed-length zero padding).
* **Memories**: per target, its incoming streams concatenated (width ``d_model * (M - 1)``), a
  self-attention encoder of ``max(temporal_layers, min_memory_layers)`` blocks.
* **Read-out**: the memory state at the utterance's last valid step, all targets concatenated, the
  residual block Linear-ReLU-``out_dropout``-Linear plus its input, a linear output layer: class
  logits (BCE in the trainer) or, with ``data.task=sentiment`` / ``vad``, the regression predictions
  (L1, as the official regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from e2e.config import UsageError, fraction, positive
from e2e.data.batch import Batch
from e2e.models.fidelity import FidelityTable, PerDataset, Setting, bf16_setting
from e2e.models.layers.crossmodal import CrossModalConfig, MulT
from e2e.models.layers.mult_transformer import Dropouts, MulTEncoder
from e2e.models.layers.sequence import padded_features
from e2e.models.registry import register_model


@dataclass
class MulTConfig(CrossModalConfig):
    """MulT's options; the defaults are the paper's IEMOCAP column (Table 5) and the official code.

    ``d_model``, ``temporal_layers`` (cross-modal blocks D), ``temporal_heads`` and ``temporal_ffn``
    (the FFN width of a ``d_model``-wide block, scaled with the block's width) as in
    :class:`CrossModalConfig`; ``dropout`` is the attention dropout of the official ``attn_dropout``
    (the paper's "crossmodal attention block dropout"), the other roles have their own options.
    """

    name: str = "mult"
    d_model: int = positive(40)
    temporal_layers: int = positive(4)
    temporal_heads: int = positive(10)
    temporal_ffn: int = positive(160)  # 4 d, as every official block
    dropout: float = fraction(0.25)  # attention dropout where the source is text, and in the memories
    attn_dropout_a: float = fraction(0.0)  # attention dropout where the source is audio
    attn_dropout_v: float = fraction(0.0)  # attention dropout where the source is visual
    relu_dropout: float = fraction(0.1)  # inside each FFN, after the ReLU
    res_dropout: float = fraction(0.1)  # on each attention and FFN update before its residual sum
    embed_dropout: float = fraction(0.3)  # raw text features, and each encoder's embedded inputs
    out_dropout: float = fraction(0.1)  # inside the residual block before the output layer
    attn_mask: bool = True  # query i sees key steps j <= i + |L_k - L_q| (causal in the memories)
    min_memory_layers: int = positive(3)  # memories have max(temporal_layers, this) blocks

    def source_attention_dropout(self, source: str | None) -> float:
        """Attention dropout of a cross-modal encoder reading ``source`` (None: a memory)."""
        return {None: self.dropout, "t": self.dropout, "a": self.attn_dropout_a, "v": self.attn_dropout_v}[source]


_TABLE5 = "paper Table 5"
_NOT_IN_PAPER = "the paper gives no value; the official main.py default"

FIDELITY = FidelityTable(
    "mult",
    "Tsai et al., ACL 2019, Multimodal Transformer for Unaligned Multimodal Language Sequences; "
    "official code github.com/yaohungt/Multimodal-Transformer",
    (
        Setting("batch size", PerDataset({"iemocap": 32, "mosei": 16}), _TABLE5, "data.batch_size"),
        Setting("learning rate (Adam)", PerDataset({"iemocap": 2e-3, "mosei": 1e-3}), _TABLE5, "train.lr"),
        Setting(
            "hidden size d",
            40,
            f"{_TABLE5} (official src/models.py hard-codes d_l = d_a = d_v = 30)",
            "model.d_model",
            why="the paper's value, which its results are reported with",
        ),
        Setting(
            "cross-modal blocks D",
            4,
            f"{_TABLE5} (official main.py --nlevels default 5)",
            "model.temporal_layers",
            why="the paper's per-dataset value; the official default is for its README command",
        ),
        Setting(
            "memory blocks",
            "max(D, 3)",
            "official src/models.py (get_network(layers=3))",
            "model.min_memory_layers",
            paper=3,
            why="same rule: the memories have max(temporal_layers, min_memory_layers) blocks",
        ),
        Setting("attention heads", PerDataset({"iemocap": 10, "mosei": 8}), _TABLE5, "model.temporal_heads"),
        Setting(
            "FFN width",
            "4 x block width",
            "official modules/transformer.py (fc1)",
            "model.temporal_ffn",
            paper=160,
            why="4 d for d = 40; the memories' FFN scales with their width, as officially",
        ),
        Setting(
            "text conv kernel",
            PerDataset({"iemocap": 3, "mosei": 1}),
            f"{_TABLE5} (MOSEI: 1 or 3; official src/models.py uses 1 everywhere)",
            "model.text_kernel",
            why="MOSEI: of the paper's two values the one the official code uses",
        ),
        Setting(
            "audio conv kernel",
            PerDataset({"iemocap": 5, "mosei": 3}),
            f"{_TABLE5} (official src/models.py: 1)",
            "model.audio_kernel",
        ),
        Setting("visual conv kernel", 3, f"{_TABLE5} (official src/models.py: 1)", "model.visual_kernel"),
        Setting(
            "textual embedding dropout",
            0.3,
            f"{_TABLE5} (official main.py --embed_dropout default 0.25)",
            "model.embed_dropout",
            why="the paper's per-dataset value; officially also applied at every encoder's input",
        ),
        Setting(
            "crossmodal attention block dropout",
            PerDataset({"iemocap": 0.25, "mosei": 0.1}),
            f"{_TABLE5} (official main.py --attn_dropout)",
            "model.dropout",
        ),
        Setting(
            "attention dropout, audio source",
            0.0,
            "official main.py (--attn_dropout_a)",
            "model.attn_dropout_a",
            why=_NOT_IN_PAPER,
        ),
        Setting(
            "attention dropout, visual source",
            0.0,
            "official main.py (--attn_dropout_v)",
            "model.attn_dropout_v",
            why=_NOT_IN_PAPER,
        ),
        Setting("ReLU dropout", 0.1, "official main.py (--relu_dropout)", "model.relu_dropout", why=_NOT_IN_PAPER),
        Setting("residual dropout", 0.1, "official main.py (--res_dropout)", "model.res_dropout", why=_NOT_IN_PAPER),
        Setting(
            "output dropout",
            0.1,
            f"{_TABLE5} (official main.py --out_dropout default 0.0)",
            "model.out_dropout",
            why="the paper's per-dataset value",
        ),
        Setting(
            "future (causal) attention mask",
            True,
            "official main.py (--attn_mask, store_false: on) and modules/transformer.py (buffered_future_mask)",
            "model.attn_mask",
            why="same rule, on each utterance's own lengths (officially the dataset's fixed padded lengths)",
        ),
        Setting("gradient clipping (norm)", PerDataset({"iemocap": 0.8, "mosei": 1.0}), _TABLE5, "train.grad_clip"),
        Setting("epochs", PerDataset({"iemocap": 30, "mosei": 20}), _TABLE5, "train.epochs"),
        Setting(
            "early stopping",
            0,
            "official src/train.py (every epoch runs; the best valid epoch is kept)",
            "train.early_stop_patience",
            why="0 = never stop early; the best valid epoch is kept, as officially",
        ),
        Setting(
            "lr schedule",
            "ReduceLROnPlateau on valid loss, factor 0.1, patience 20 (--when)",
            "official src/train.py",
            "train.scheduler",
            paper="none",
            why="the shared trainer has no plateau schedule; with 30 / 20 epochs it can act at most once, "
            "after 20 epochs without a better valid loss",
        ),
        Setting("weight decay", 0.0, "official src/train.py (Adam defaults)", "train.weight_decay"),
        bf16_setting(
            "bf16 autocast on CUDA",
            False,
            "official code (fp32)",
            "improved: less activation memory and faster steps on GPUs with bf16, as for FE2E / MESM",
        ),
        Setting(
            "embedding at every encoder",
            "x sqrt(width) + sinusoidal positions + embed dropout, on queries and (separately drawn) keys and values",
            "official modules/transformer.py (TransformerEncoder.forward)",
        ),
        Setting(
            "positions",
            "fairseq sinusoids: sin half then cos half, positions from 1; zero where a state's first channel is 0",
            "official modules/position_embedding.py",
            paper="the same sinusoids for every step, positions from 1",
            why="the official zero rows mark its padding, which our masks handle; a valid step is 0 there "
            "only by chance",
        ),
        Setting(
            "block normalisation",
            "pre-LN; one LayerNorm for queries, keys and values; final LayerNorm",
            "official modules/transformer.py (TransformerEncoderLayer, normalize_before)",
        ),
        Setting(
            "key padding mask",
            "none: the zero padding of the fixed-length data is attended",
            "official modules/transformer.py (only the future mask)",
            paper="padded keys masked",
            why="kept from our code: our batches pad to the batch's longest utterance, so attending to "
            "padding would make a prediction depend on the other utterances of its batch",
        ),
        Setting(
            "read-out",
            "last step of the padded memory output",
            "official src/models.py (h_ls[-1])",
            paper="each utterance's last valid step",
            why="the same step for an utterance that fills its padded length; padding-independent otherwise",
        ),
        Setting(
            "initialisation",
            "Xavier-uniform FFN and attention weights, zero biases",
            "official modules/transformer.py (Linear), modules/multihead_attention.py",
        ),
        Setting(
            "loss and outputs (emotion)",
            "IEMOCAP: 4 emotions x 2 logits, cross-entropy per emotion (MOSEI: sentiment only)",
            "official main.py (output_dim 8, CrossEntropyLoss), src/train.py",
            paper="one logit per class, BCE with pos_weight = neg/pos (shared trainer)",
            why="the shared protocol of all models here (6 IEMOCAP classes, MOSEI multi-label); a 2-way "
            "softmax per emotion equals a sigmoid of the logit difference; regression is L1 as officially",
        ),
        Setting(
            "model selection",
            "lowest valid loss",
            "official src/train.py",
            paper="best mean valid F1 (regression: MAE / CCC)",
            why="the shared trainer's criterion for every model",
        ),
        Setting(
            "input features",
            "GloVe, COVAREP, FACET (CMU SDK)",
            "paper Section 4.1",
            paper="the two-stage features of `e2e features`",
            why="the paper's extractors do not ship as packages; data.source=mult:PATH reads the official pickles",
        ),
    ),
)


class ConfiguredEncoder(MulTEncoder):
    """MulT's official encoder with its sizes and dropouts from :class:`MulTConfig`."""

    def __init__(self, width: int, layers: int, config: MulTConfig, attention_dropout: float):
        dropouts = Dropouts(attention_dropout, config.relu_dropout, config.res_dropout, config.embed_dropout)
        ffn = config.temporal_ffn * width // config.d_model
        super().__init__(width, layers, config.temporal_heads, ffn, dropouts, future=config.attn_mask)


class CrossModalEncoder(ConfiguredEncoder):
    def forward(
        self, target: torch.Tensor, target_padding: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.encode(target, target_padding, source, source_padding), []


class MemoryEncoder(ConfiguredEncoder):
    """A target's self-attention memory: ``forward(states, padding)``."""


class MulTModel(MulT):
    """MulT's network with the official encoders; :meth:`embed` is the text dropout and the convolution
    only, since every encoder embeds its own inputs."""

    def __init__(self, config: MulTConfig, num_classes: int):
        if config.d_model % config.temporal_heads:
            raise UsageError(
                f"mult: model.d_model ({config.d_model}) must be a multiple of model.temporal_heads "
                f"({config.temporal_heads})"
            )
        super().__init__(config, num_classes)

    def build_crossmodal(self, source: str, target: str, config: MulTConfig) -> CrossModalEncoder:
        return CrossModalEncoder(self.d_model, config.temporal_layers, config, config.source_attention_dropout(source))

    def build_memory(self, width: int, config: MulTConfig) -> MemoryEncoder:
        layers = max(config.temporal_layers, config.min_memory_layers)
        return MemoryEncoder(width, layers, config, config.source_attention_dropout(None))

    def embedding_dropout(self, config: MulTConfig) -> float:
        return config.embed_dropout

    def output_dropout(self, config: MulTConfig) -> float:
        return config.out_dropout

    def embed(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolved states ``(B, L, d)`` (text features dropped out first) and the padding mask."""
        sequence, padding = padded_features(batch, modality)
        if modality == "t":
            sequence = self.dropout(sequence)
        return self.projections[modality](sequence.transpose(1, 2)).transpose(1, 2), padding


@register_model("mult", options=MulTConfig, inputs="features", tasks=("emotion", "sentiment", "vad"), fidelity=FIDELITY)
def build_mult(config: MulTConfig, class_names: list[str]) -> MulTModel:
    return MulTModel(config, len(class_names))
