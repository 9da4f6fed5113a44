"""TFR-Net (Yuan et al., ACM MM 2021, "Transformer-based Feature Reconstruction Network for Robust
Multimodal Sentiment Analysis"), on two-stage features. The ``paper`` preset follows the official code
(thuiar/TFR-Net ``models/missingTask/TFR_NET``, the same network in thuiar/MMSA); the fidelity table
(``docs/fidelity/tfr_net.md``) lists every setting and where it comes from.

* **Missing inputs** (official protocol): in every modality each valid step is dropped (set to zero)
  with probability ``missing_rate``, in train, valid and test alike; text keeps its first and last
  token (CLS, SEP). The draws are fixed by ``(missing_seed, modality, utterance id)``, so an utterance
  loses the same steps in every epoch and every run. ``train_missing_rate`` (ours) adds masks redrawn
  at every training step, none in eval; the steps either one drops are reconstructed.
* **Alignment**: per modality a bias-free temporal convolution to ``d_model``, an intra-modal
  transformer (``intra_layers``) and, for every other modality, a cross-modal transformer
  (``temporal_layers``) in which it queries that modality; the streams are concatenated
  (``M * d_model`` wide). Every transformer is the official one, MulT's encoder
  (:mod:`e2e.models.layers.mult_transformer`): queries and source scaled by sqrt(width) plus
  fairseq's sinusoidal positions (from 1, sines then cosines), embedding dropout drawn separately for
  queries, keys and values, pre-LN blocks with Xavier-initialised attention and FFN, a causal mask
  (``causal_attention``, the official ``attn_mask``), a final LayerNorm; batch padding is masked.
* **Reconstruction**: a transformer over time (``temporal_axis_layers``, no positions) on the
  concatenated streams, then one linear layer per modality predicts the complete (standardised)
  features. Loss per modality on the dropped steps: SmoothL1 averaged over their elements plus
  ``similarity_weight`` x CMD (3 moments) divided by that element count (the official ``combine``
  loss); the modality losses weighted by ``*_reconstruction_weight`` are the auxiliary loss.
* **Fusion (C-GATE)**: per modality a BiGRU over the concatenated streams, a sigmoid gate from a
  kernel-3 convolution of the GRU states, ``tanh(fc([streams, tanh(gru) * gate]))``, max-pooled over
  the valid steps, dropout; the modality vectors are concatenated and classified by
  BatchNorm -> Linear -> LeakyReLU -> Dropout -> Linear (``len(class_names)`` outputs, the
  regression predictions under ``data.task`` sentiment / vad).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import fraction, non_negative, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.fidelity import FidelityTable, PerDataset, Setting, bf16_setting
from e2e.models.layers.crossmodal import temporal_convolution
from e2e.models.layers.losses import cmd, masked_smooth_l1
from e2e.models.layers.mult_transformer import Dropouts, MulTEncoder
from e2e.models.layers.sequence import SequenceModelConfig, modality_dims, padded_features
from e2e.models.registry import register_model

MODALITY_NAMES = {"t": "text", "a": "audio", "v": "visual"}


@dataclass
class TFRNetConfig(SequenceModelConfig):
    """TFR-Net's options (official values). The shared ones mean:

    * ``d_model``: width of each convolved modality and of every intra- / cross-modal stream;
    * ``temporal_layers``: depth of each cross-modal transformer (the official ``nlevels``);
    * ``temporal_heads``: attention heads of every transformer;
    * ``temporal_ffn``: FFN width of a ``d_model``-wide block, scaled with the block's width (4 x width);
    * ``dropout``: the residual dropout of every transformer block (the official ``res_dropout``).
    """

    name: str = "tfr_net"
    d_model: int = positive(30)
    temporal_layers: int = positive(3)
    temporal_heads: int = positive(6)
    temporal_ffn: int = positive(120)
    dropout: float = fraction(0.2)
    intra_layers: int = positive(3)  # depth of each intra-modal transformer (official: max(nlevels, 3))
    temporal_axis_layers: int = positive(3)  # depth of the transformer before reconstruction
    text_kernel: int = positive(1)  # kernels of the bias-free temporal convolutions (odd)
    audio_kernel: int = positive(5)
    visual_kernel: int = positive(3)
    causal_attention: bool = True  # the official attn_mask: query i sees keys j <= i + |n_k - n_q|
    text_dropout: float = fraction(0.2)  # dropout on the text features
    embed_dropout: float = fraction(0.2)  # dropout after each transformer's input scaling and positions
    attn_dropout: float = fraction(0.2)  # attention dropout on text keys, and in intra / temporal-axis blocks
    attn_dropout_a: float = fraction(0.1)  # attention dropout when audio is the source
    attn_dropout_v: float = fraction(0.0)  # attention dropout when visual is the source
    relu_dropout: float = fraction(0.2)  # dropout inside every transformer FFN
    fusion_text_hidden: int = positive(36)  # C-GATE hidden width per modality
    fusion_audio_hidden: int = positive(20)
    fusion_visual_hidden: int = positive(48)
    fusion_gru_layers: int = positive(3)
    fusion_dropout: float = fraction(0.2)  # dropout on each modality's pooled C-GATE vector
    classifier_hidden: int = positive(128)
    classifier_dropout: float = fraction(0.0)
    missing_rate: float = fraction(0.2)  # fixed seeded masks, in train, valid and test
    missing_seed: int = non_negative(1111)
    train_missing_rate: float = fraction(0.0)  # ours: masks redrawn every training step, none in eval
    text_reconstruction_weight: float = non_negative(5.0)  # official weight_gen_loss (MOSI values)
    audio_reconstruction_weight: float = non_negative(2.0)
    visual_reconstruction_weight: float = non_negative(20.0)
    similarity_weight: float = non_negative(5.0)  # CMD term of the reconstruction loss (weight_sim_loss)

    def conv_kernel(self, modality: str) -> int:
        return {"t": self.text_kernel, "a": self.audio_kernel, "v": self.visual_kernel}[modality]

    def source_attention_dropout(self, modality: str) -> float:
        return {"t": self.attn_dropout, "a": self.attn_dropout_a, "v": self.attn_dropout_v}[modality]

    def fusion_hidden(self, modality: str) -> int:
        return {"t": self.fusion_text_hidden, "a": self.fusion_audio_hidden, "v": self.fusion_visual_hidden}[modality]

    def reconstruction_weight(self, modality: str) -> float:
        return getattr(self, f"{MODALITY_NAMES[modality]}_reconstruction_weight")


TFR_OFFICIAL = "official models/missingTask/TFR_NET"
MMSA_CONFIG = "MMSA src/MMSA/config/config_regression.json (tfr_net)"
TFR_CONFIG = "official config/config_regression.py (__TFR_Net, mosi)"
MMSA_TRANSFORMER = "MMSA src/MMSA/models/subNets/transformers_encoder/transformer.py"
NO_IEMOCAP = "the paper and its code have no IEMOCAP setting: IEMOCAP takes the official repository's MOSI values"

FIDELITY = FidelityTable(
    "tfr_net",
    "Yuan et al., ACM MM 2021, TFR-Net; official code thuiar/TFR-Net (network also in thuiar/MMSA)",
    (
        Setting("stream width d", 30, f"{TFR_CONFIG}, {MMSA_CONFIG}: dst_feature_dim_nheads", "model.d_model"),
        Setting("attention heads", 6, f"{TFR_CONFIG}: dst_feature_dim_nheads", "model.temporal_heads"),
        Setting("cross-modal layers", 3, f"{TFR_CONFIG}: nlevels", "model.temporal_layers"),
        Setting("intra-modal layers", 3, f"{TFR_OFFICIAL}/alignment.py: max(nlevels, 3)", "model.intra_layers"),
        Setting(
            "temporal-axis layers",
            3,
            f"{TFR_OFFICIAL}/alignment.py (trans_*_final, max(nlevels, 3))",
            "model.temporal_axis_layers",
        ),
        Setting("FFN width of a d-wide block", 120, f"{MMSA_TRANSFORMER}: 4 x width", "model.temporal_ffn"),
        Setting("text conv kernel", 1, TFR_CONFIG, "model.text_kernel"),
        Setting("audio conv kernel", 5, TFR_CONFIG, "model.audio_kernel"),
        Setting("visual conv kernel", 3, TFR_CONFIG, "model.visual_kernel"),
        Setting(
            "causal attention mask",
            True,
            f"{TFR_CONFIG}: attn_mask; {MMSA_TRANSFORMER} (buffered_future_mask)",
            "model.causal_attention",
            why="the same future mask (query i sees keys j <= i + |n_k - n_q|), with n the utterance's own "
            "lengths where the official code uses the fixed padded lengths",
        ),
        Setting("residual dropout", 0.2, f"{TFR_CONFIG}: res_dropout", "model.dropout"),
        Setting("text dropout", 0.2, TFR_CONFIG, "model.text_dropout"),
        Setting("embedding dropout", 0.2, TFR_CONFIG, "model.embed_dropout"),
        Setting("attention dropout (text source, intra, temporal axis)", 0.2, TFR_CONFIG, "model.attn_dropout"),
        Setting("attention dropout (audio source)", 0.1, TFR_CONFIG, "model.attn_dropout_a"),
        Setting("attention dropout (visual source)", 0.0, TFR_CONFIG, "model.attn_dropout_v"),
        Setting("FFN dropout", 0.2, f"{TFR_CONFIG}: relu_dropout", "model.relu_dropout"),
        Setting("C-GATE hidden (text)", 36, TFR_CONFIG, "model.fusion_text_hidden"),
        Setting("C-GATE hidden (audio)", 20, TFR_CONFIG, "model.fusion_audio_hidden"),
        Setting("C-GATE hidden (visual)", 48, TFR_CONFIG, "model.fusion_visual_hidden"),
        Setting("C-GATE BiGRU layers", 3, TFR_CONFIG, "model.fusion_gru_layers"),
        Setting("C-GATE dropout", 0.2, f"{TFR_CONFIG}: fusion_drop", "model.fusion_dropout"),
        Setting("classifier hidden", 128, TFR_CONFIG, "model.classifier_hidden"),
        Setting("classifier dropout", 0.0, TFR_CONFIG, "model.classifier_dropout"),
        Setting(
            "missing rate (fixed masks, train/valid/test)",
            0.2,
            "MMSA config_regression.json datasetCommonParams (missing_rate); official run.py --missing",
            "model.missing_rate",
            improved=0.0,
            why="the original run.py takes one rate per run for all modalities and splits (--missing, default 0: "
            "no masks, nothing to reconstruct); the paper preset takes MMSA's default. improved: no fixed masks; "
            "the model is trained with redrawn masks and tested on the clean "
            "inputs (robustness is measured by `e2e sweep missing`)",
        ),
        Setting(
            "missing seed",
            1111,
            "MMSA config_regression.json datasetCommonParams (missing_seed)",
            "model.missing_seed",
            why="the official code seeds numpy once per split and modality (original config: 111 / 1111 / 11111, "
            "MMSA: 1111 each), so masks depend on the data order; ours hash (seed, modality, utterance id): the "
            "same masks in every epoch whatever the order",
        ),
        Setting(
            "masks redrawn every training step",
            0.0,
            "not in the official code",
            "model.train_missing_rate",
            improved=0.2,
            why="improved: new masks every step (more variety than one fixed draw), none in eval",
        ),
        Setting(
            "reconstruction weight (text)",
            PerDataset({"iemocap": 5.0, "mosei": 5e-6}),
            f"{TFR_CONFIG} (mosi: 5); {MMSA_CONFIG} (mosei: 5e-6)",
            "model.text_reconstruction_weight",
            why=NO_IEMOCAP,
        ),
        Setting(
            "reconstruction weight (audio)",
            PerDataset({"iemocap": 2.0, "mosei": 2e-6}),
            f"{TFR_CONFIG} (mosi: 2); {MMSA_CONFIG} (mosei: 2e-6)",
            "model.audio_reconstruction_weight",
            why=NO_IEMOCAP,
        ),
        Setting(
            "reconstruction weight (visual)",
            PerDataset({"iemocap": 20.0, "mosei": 2e-5}),
            f"{TFR_CONFIG} (mosi: 20); {MMSA_CONFIG} (mosei: 2e-5)",
            "model.visual_reconstruction_weight",
            why=NO_IEMOCAP,
        ),
        Setting(
            "CMD weight in the reconstruction loss",
            5.0,
            f"{MMSA_CONFIG}: weight_sim_loss (commented out in the original config)",
            "model.similarity_weight",
        ),
        Setting("batch size", 24, f"{TFR_CONFIG}; {MMSA_CONFIG} (mosi, mosei)", "data.batch_size"),
        Setting("learning rate (non-text parameters)", 0.002, f"{TFR_CONFIG}; {MMSA_CONFIG} (mosei)", "train.lr"),
        Setting("weight decay (non-text parameters)", 0.001, TFR_CONFIG, "train.weight_decay"),
        Setting(
            "gradient clipping",
            0.8,
            f"{TFR_CONFIG}; official trains/missingTask/TFR_NET.py clips each gradient value",
            "train.grad_clip",
            why="our trainer clips the gradient norm at this value (clip_grad_norm_), the official code each "
            "element (clip_grad_value_)",
        ),
        Setting(
            "early-stopping patience",
            6,
            f"{TFR_CONFIG}: early_stop",
            "train.early_stop_patience",
            why="ours stops on the task's valid metric (mean F1 / MAE / CCC), the official code on valid loss",
        ),
        Setting(
            "epochs",
            "unbounded (until early stopping)",
            "official trains/missingTask/TFR_NET.py",
            "train.epochs",
            paper=40,
            why="our trainer needs a bound: the folder's shared 40",
        ),
        Setting(
            "learning-rate schedule",
            "ReduceLROnPlateau(factor 0.1, patience 5) on valid loss",
            "official trains/missingTask/TFR_NET.py",
            "train.scheduler",
            paper="none",
            why="our trainer has no plateau schedule; officially both count valid-loss epochs, so the first "
            "reduction comes at the earliest in the epoch in which early stopping ends the run",
        ),
        bf16_setting(
            "bf16 autocast on CUDA",
            False,
            "official code (fp32)",
            "improved: bf16 autocast on CUDA for speed; CPU runs are fp32 either way",
        ),
        Setting(
            "text encoder",
            "BERT fine-tuned (lr 1e-5, weight decay 1e-4) on UNK-replaced tokens",
            TFR_CONFIG,
            paper="frozen text features; dropped tokens zeroed after the encoder",
            why="every feature model here reads cached two-stage features (README), so a dropped token is a "
            "zeroed feature step rather than an UNK token re-encoded by BERT",
        ),
        Setting(
            "reconstruction loss from",
            "the second epoch (epoch 1: task loss only)",
            "official trains/missingTask/TFR_NET.py",
            paper="the first epoch",
            why="our trainer does not tell the model its epoch",
        ),
        Setting(
            "gradient accumulation",
            "update_epochs 4: gradients zeroed every 4 batches but a step after every batch",
            "official trains/missingTask/TFR_NET.py",
            paper="zeroed and stepped every batch",
            why="the official loop steps on partial sums of up to four batches' gradients, an artefact of its "
            "accumulation code, not a described method",
        ),
        Setting(
            "temporal-axis transformer",
            "tokens = the batch's utterances, embedding = the fixed-length time axis, 25 heads",
            f"{TFR_OFFICIAL}/alignment.py (h.permute(1, 2, 0) into a (seq, batch, embed) encoder)",
            paper="tokens = the utterance's time steps, width M x d, `temporal_heads` heads",
            why="the official layout attends across the utterances of a batch (eval depends on batch "
            "composition) and needs one fixed padded length; ours is a transformer over each utterance's "
            "time axis of the same depth, without positions as officially",
        ),
        Setting(
            "padding",
            "fixed-length padding, attended to and max-pooled like valid steps",
            f"{TFR_OFFICIAL}/alignment.py, fusion.py",
            paper="padding masked in attention, GRUs packed, max-pool over valid steps",
            why="batch padding is an artefact of batching; results must not depend on it",
        ),
        Setting(
            "positions",
            "fairseq sinusoids: sin half then cos half, positions from 1; zero where a state's first channel is 0",
            f"{MMSA_TRANSFORMER}, position_embedding.py (SinusoidalPositionalEmbedding, padding_idx 0)",
            paper="the same sinusoids for every step, positions from 1",
            why="fairseq's padding detection by value: officially it zeroes the positions of the audio / visual "
            "zero padding (a bias-free convolution of zeros), which our masks handle; a valid step's first "
            "channel is 0 only by chance, except our zeroed dropped text steps (kernel 1), which the official "
            "code feeds to BERT as UNK tokens, so they keep their positions there as here",
        ),
        Setting(
            "embedding dropout on the source",
            "drawn separately for the keys and the values",
            f"{MMSA_TRANSFORMER} (TransformerEncoder.forward: x_k, x_v)",
        ),
        Setting(
            "initialisation",
            "Xavier-uniform attention (in / out projections) and FFN (fc1, fc2) weights, zero biases",
            f"{MMSA_TRANSFORMER} (Linear), multihead_attention.py (reset_parameters)",
        ),
        Setting(
            "task loss",
            "L1 (regression) / cross-entropy",
            "official trains/missingTask/TFR_NET.py",
            paper="the shared trainer's loss (BCE with pos_weight; L1 for sentiment / vad)",
            why="one trainer and metric protocol for all models",
        ),
    ),
)


def stable_seed(seed: int, modality: str, utterance: str) -> int:
    """A 63-bit seed from ``(seed, modality, utterance id)`` that is the same in every process."""
    return zlib.crc32(f"{seed}:{modality}:{utterance}".encode()) | (seed % 2**31) << 32


def fixed_step_mask(
    ids: list[str], padding: torch.Tensor, modality: str, rate: float, seed: int, keep_ends: bool
) -> torch.Tensor:
    """(B, L) bool, True = dropped: each valid step independently with probability ``rate``, drawn from
    a generator seeded by ``(seed, modality, id)``; ``keep_ends`` keeps the first and last valid step."""
    lengths = (~padding).sum(1).tolist()
    mask = torch.zeros(padding.shape, dtype=torch.bool)
    for row, (utterance, length) in enumerate(zip(ids, lengths)):
        generator = torch.Generator().manual_seed(stable_seed(seed, modality, utterance))
        mask[row, :length] = torch.rand(length, generator=generator) < rate
        if keep_ends:
            mask[row, [0, length - 1]] = False
    return mask.to(padding.device)


def random_step_mask(padding: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L) bool: ``round(rate * L_b)`` random valid steps per utterance (at most L_b - 1); never padding."""
    valid = ~padding
    lengths = valid.sum(1)
    counts = torch.minimum((rate * lengths.float()).round().long(), lengths - 1)
    scores = torch.rand(padding.shape, generator=generator, device=padding.device).masked_fill(padding, 2.0)
    ranks = scores.argsort(1).argsort(1)  # rank of each step among its utterance's steps, valid ones first
    return (ranks < counts[:, None]) & valid


def official_encoder(
    width: int, layers: int, config: TFRNetConfig, attention_dropout: float, positions: bool
) -> MulTEncoder:
    """The official transformer encoder (MulT's, :mod:`e2e.models.layers.mult_transformer`) with TFR-Net's
    sizes and dropouts: ``dropout`` is the residual dropout (the official ``res_dropout``), the future
    mask follows ``causal_attention``; without a source it is a self-attention encoder."""
    dropouts = Dropouts(attention_dropout, config.relu_dropout, config.dropout, config.embed_dropout)
    ffn = config.temporal_ffn * width // config.d_model
    return MulTEncoder(
        width, layers, config.temporal_heads, ffn, dropouts, future=config.causal_attention, positions=positions
    )


class CGate(nn.Module):
    """C-GATE: BiGRU (packed), sigmoid gate from a kernel-3 conv, ``tanh(fc([x, tanh(gru) * gate]))``,
    max over the valid steps, dropout."""

    def __init__(self, in_features: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.gru = nn.GRU(in_features, hidden, layers, batch_first=True, bidirectional=True)
        self.gate = nn.Conv1d(2 * hidden, 1, kernel_size=3, padding=1)
        self.fc = nn.Linear(in_features + 2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        lengths = (~padding).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(states, lengths, batch_first=True, enforce_sorted=False)
        recurrent, _ = nn.utils.rnn.pad_packed_sequence(
            self.gru(packed)[0], batch_first=True, total_length=states.shape[1]
        )
        gate = torch.sigmoid(self.gate(recurrent.transpose(1, 2))).transpose(1, 2)
        steps = torch.tanh(self.fc(torch.cat([states, torch.tanh(recurrent) * gate], dim=-1)))
        return self.dropout(steps.masked_fill(padding.unsqueeze(-1), float("-inf")).max(1).values)


def reconstruction_loss(
    prediction: torch.Tensor, target: torch.Tensor, dropped: torch.Tensor, padding: torch.Tensor, cmd_weight: float
) -> torch.Tensor:
    """The official ``combine`` loss on the ``dropped`` (B, L) steps: SmoothL1 averaged over their elements
    plus ``cmd_weight`` x CMD (3 moments) of the masked predictions and targets over the valid steps,
    divided by the same element count. 0 when nothing is dropped."""
    if not dropped.any():
        return prediction.sum() * 0.0
    keep = dropped.unsqueeze(-1).to(prediction.dtype)
    valid = ~padding
    similarity = cmd((prediction * keep)[valid], (target * keep)[valid], moments=3)
    return masked_smooth_l1(prediction, target, dropped) + cmd_weight * similarity / (dropped.sum() * target.shape[-1])


class TFRNet(nn.Module):
    def __init__(self, config: TFRNetConfig, num_classes: int):
        super().__init__()
        self.config = config
        dims = modality_dims(config)
        d, width = config.d_model, config.d_model * len(dims)
        self.text_dropout = nn.Dropout(config.text_dropout)
        self.projections = nn.ModuleDict(
            {m: temporal_convolution(dim, d, config.conv_kernel(m)) for m, dim in dims.items()}
        )
        self.intra = nn.ModuleDict(
            {m: official_encoder(d, config.intra_layers, config, config.attn_dropout, positions=True) for m in dims}
        )
        self.crossmodal = nn.ModuleDict(
            {
                f"{source}_to_{target}": official_encoder(
                    d, config.temporal_layers, config, config.source_attention_dropout(source), positions=True
                )
                for target in dims
                for source in dims
                if source != target
            }
        )
        self.temporal_axis = nn.ModuleDict(
            {
                m: official_encoder(width, config.temporal_axis_layers, config, config.attn_dropout, positions=False)
                for m in dims
            }
        )
        self.reconstruct = nn.ModuleDict({m: nn.Linear(width, dim) for m, dim in dims.items()})
        self.fusion = nn.ModuleDict(
            {m: CGate(width, config.fusion_hidden(m), config.fusion_gru_layers, config.fusion_dropout) for m in dims}
        )
        fused = sum(config.fusion_hidden(m) for m in dims)
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(fused),
            nn.Linear(fused, config.classifier_hidden),
            nn.LeakyReLU(),
            nn.Dropout(config.classifier_dropout),
            nn.Linear(config.classifier_hidden, num_classes),
        )

    def dropped_steps(self, batch: Batch, modality: str, padding: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: the steps of ``modality`` dropped now (fixed masks, plus redrawn ones in training)."""
        config = self.config
        dropped = torch.zeros_like(padding)
        if config.missing_rate > 0:
            dropped = fixed_step_mask(
                batch.ids, padding, modality, config.missing_rate, config.missing_seed, keep_ends=modality == "t"
            )
        if self.training and config.train_missing_rate > 0:
            dropped = dropped | random_step_mask(padding, config.train_missing_rate)
        return dropped

    def forward(self, batch: Batch) -> ModelOutput:
        inputs = {m: padded_features(batch, m) for m in self.projections}
        dropped = {m: self.dropped_steps(batch, m, padding) for m, (_, padding) in inputs.items()}
        streams = self._align(inputs, dropped)
        vectors = [self.fusion[m](streams[m], inputs[m][1]) for m in streams]
        logits = self.classifier(torch.cat(vectors, dim=1))
        aux = None
        if self.training:
            aux = sum(self._reconstruction(m, streams[m], inputs[m], dropped[m]) for m in streams)
        return ModelOutput(logits, aux_loss=aux, extras={"masks": dropped})

    def _align(self, inputs: dict, dropped: dict) -> dict[str, torch.Tensor]:
        """Each modality's intra-modal stream and its cross-modal streams, concatenated: ``{m: (B, L_m, M * d)}``."""
        embedded = {}
        for m, (sequence, _) in inputs.items():
            sequence = sequence.masked_fill(dropped[m].unsqueeze(-1), 0.0)
            if m == "t":
                sequence = self.text_dropout(sequence)
            embedded[m] = self.projections[m](sequence.transpose(1, 2)).transpose(1, 2)
        streams = {}
        for target, states in embedded.items():
            padding = inputs[target][1]
            parts = [self.intra[target](states, padding)]
            for source in (m for m in embedded if m != target):
                encoder = self.crossmodal[f"{source}_to_{target}"]
                parts.append(encoder(states, padding, embedded[source], inputs[source][1]))
            streams[target] = torch.cat(parts, dim=-1)
        return streams

    def _reconstruction(self, modality: str, streams: torch.Tensor, inputs: tuple, dropped: torch.Tensor):
        target, padding = inputs
        prediction = self.reconstruct[modality](self.temporal_axis[modality](streams, padding))
        loss = reconstruction_loss(prediction, target, dropped, padding, self.config.similarity_weight)
        return self.config.reconstruction_weight(modality) * loss


@register_model(
    "tfr_net", options=TFRNetConfig, inputs="features", tasks=("emotion", "sentiment", "vad"), fidelity=FIDELITY
)
def build_tfr_net(config: TFRNetConfig, class_names: list[str]) -> TFRNet:
    return TFRNet(config, len(class_names))
