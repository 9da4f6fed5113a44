"""EmoEmbs (Dai et al., AACL 2020, "Modality-Transferable Emotion Embeddings for Low-Resource Multimodal
Emotion Recognition"; official code github.com/wenliangdai/Modality-Transferable-MER,
``src/models/eea.py``), on two-stage features.

Each class is represented by the word embedding of its emotion word (frozen). Per modality a
(bi)directional LSTM reads the feature sequence; the utterance vector is its output at the last valid
step, the two directions summed. The text vector lives in the word space itself (the text LSTM is as
wide as the embeddings); the audio and visual LSTMs have their own widths, and a learned linear map
per modality carries the emotion embeddings into that modality's space. A modality's score for a class
is the dot product of its utterance vector with the class's (mapped) embedding; a learned
``Linear(M -> 1, no bias)``, starting at 1/M, fuses the per-modality scores (one modality: its scores).

Embeddings: the official code uses GloVe vectors of the emotion words; here the configured text model
gives them (mean of the word's last hidden states over its own tokens, computed once at build time and
stored as a buffer so checkpoints carry them). A new emotion is scored by appending its word embedding to
``prototypes``: the maps, not the embeddings, carry the learning, which is the paper's zero-shot transfer.

Tasks: emotion only: the outputs are similarities to emotion-word embeddings, which a sentiment score or
a valence/activation/dominance triple does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from e2e.config import ModelConfig, fraction, positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.fidelity import FidelityTable, Setting, bf16_setting
from e2e.models.layers.encoders import LateFusion
from e2e.models.layers.sequence import modality_dims, padded_features
from e2e.models.registry import register_model

EMOTION_WORDS = {
    "ang": "anger",
    "exc": "excitement",
    "fru": "frustration",
    "hap": "happiness",
    "neu": "neutral",
    "sad": "sadness",
}

Scoring = Literal["dot", "cosine"]  # dot: the official score; cosine: cosine times a learned temperature


@dataclass
class EmoEmbsConfig(ModelConfig):
    """EmoEmbs' options (the official IEMOCAP/MOSEI command's values). ``dropout`` acts between LSTM
    layers only. The text LSTM's width is the word-embedding width (the text vector is compared with the
    embeddings directly)."""

    name: str = "emoembs"
    dropout: float = fraction(0.15)
    temporal_layers: int = positive(2)  # LSTM layers of each modality
    bidirectional: bool = True
    audio_hidden: int = positive(200)  # audio LSTM width (the emotion embeddings are mapped to it)
    visual_hidden: int = positive(100)  # visual LSTM width
    scoring: Scoring = "dot"
    initial_temperature: float = positive(10.0)  # scoring=cosine only: starting scale of the cosine scores


_CODE = "official src/models/eea.py"
_README = "official README, IEMOCAP and CMU-MOSEI eea commands"
_MOSEI_RUNS = (
    "the README's MOSEI command (official run.sh's zero-shot MOSEI runs use -bs=512 -lr=1e-4 --clip=10.0 with "
    "--loss=bce instead)"
)
_PAPER = (
    "Dai et al., Modality-Transferable Emotion Embeddings for Low-Resource Multimodal Emotion Recognition, "
    "AACL-IJCNLP 2020; official code github.com/wenliangdai/Modality-Transferable-MER (files below are in "
    "that repository)"
)

FIDELITY = FidelityTable(
    "emoembs",
    _PAPER,
    (
        Setting("modalities", "tav", f"{_README} (-mod=tav)", "model.modalities"),
        Setting(
            "input features",
            "GloVe words, COVAREP and FACET sequences of the CMU SDK (aligned, 50 steps IEMOCAP / 20 MOSEI)",
            "official README (--aligned --data-seq-len), src/dataset.py",
            paper="frozen text-encoder states, 28 librosa descriptors per 100 ms, 274 O-Net values per face crop",
            why="the official feature files do not ship; the toolkit's two-stage features, unaligned and "
            "not truncated (README, two-stage features)",
        ),
        Setting(
            "text encoder of the text features and of the emotion words",
            "GloVe (no encoder)",
            "official README (emotion embeddings download), src/models/eea.py (textEmoEmbs)",
            "model.text_model",
            paper="albert-base-v2",
            why="GloVe is not a package; the frozen text model gives both the text features and the emotion "
            "word embeddings (mean of the word's last hidden states)",
        ),
        Setting(
            "emotion embeddings",
            "frozen (nn.Embedding.from_pretrained, requires_grad=False)",
            _CODE,
            why="same (a buffer)",
        ),
        Setting("LSTM layers", 2, f"{_README} (--num-layers=2)", "model.temporal_layers"),
        Setting("bidirectional", True, f"{_README} (-bi)", "model.bidirectional"),
        Setting(
            "dropout (between LSTM layers)",
            0.15,
            f"{_README} (--dropout=0.15), {_CODE} (LSTM dropout)",
            "model.dropout",
        ),
        Setting(
            "text LSTM width",
            "300 = the GloVe width",
            f"{_README} (--hidden-sizes 300 200 100), {_CODE} (text scores against the unmapped embeddings)",
            paper="the text model's hidden size (768 for ALBERT base)",
            why="the structure requires text width = embedding width; our embeddings come from the text model",
        ),
        Setting("audio LSTM width", 200, f"{_README} (--hidden-sizes 300 200 100)", "model.audio_hidden"),
        Setting("visual LSTM width", 100, f"{_README} (--hidden-sizes 300 200 100)", "model.visual_hidden"),
        Setting(
            "utterance vector",
            "the LSTM output at the last step, the two directions summed",
            _CODE,
            paper="the output at the last valid step (packed sequences), the two directions summed",
            why="the official sequences are aligned to a fixed length; ours have their own lengths, and padding "
            "is never read",
        ),
        Setting(
            "emotion embeddings of audio and visual",
            "Linear(embedding width -> modality width), learned (affineAudio, affineVisual)",
            _CODE,
            why="same",
        ),
        Setting(
            "score",
            "dot",
            f"{_CODE} (attention(): bmm of the embeddings with the utterance vector)",
            "model.scoring",
            improved="cosine",
            why="improved: cosine similarity times a learned temperature (starting at 10), so the scores' scale "
            "is one parameter and not the vectors' norms",
        ),
        Setting(
            "fusion",
            "Linear(M -> 1, no bias) over the M modality scores, starting at softmax(ones) = 1/M; none for one "
            "modality",
            f"{_CODE} (modality_weights)",
            why="same",
        ),
        Setting(
            "loss",
            "cross-entropy (IEMOCAP); binary cross-entropy per emotion (MOSEI, run.sh --loss=bce)",
            f"{_README} (--loss=ce), official run.sh",
            paper="the trainer's loss of the dataset (IEMOCAP: cross-entropy; MOSEI: binary cross-entropy)",
            why="same",
        ),
        Setting("batch size (utterances)", 64, f"{_README} (-bs=64)", "data.batch_size", why=_MOSEI_RUNS),
        Setting("learning rate (Adam)", 1e-3, f"{_README} (-lr=1e-3)", "train.lr", why=_MOSEI_RUNS),
        Setting("weight decay", 0.0, "official src/cli.py (default)", "train.weight_decay"),
        Setting(
            "lr schedule",
            "ReduceLROnPlateau on the valid loss (factor 0.1, patience 5 = --patience)",
            "official main.py (ReduceLROnPlateau, built whatever -sc says), src/trainers/emotion.py "
            "(scheduler.step(valid loss))",
            "train.scheduler",
            paper="none",
            why="the shared trainer has no plateau schedule (adding one is a trainer change)",
        ),
        Setting(
            "model selection and early stopping criterion",
            "average valid accuracy (IEMOCAP) / average weighted accuracy (MOSEI)",
            "official src/trainers/emotion.py (the pivot statistic)",
            paper="mean valid F1",
            why="the shared trainer's criterion for every model",
        ),
        Setting("gradient clipping (max norm)", 1.0, f"{_README} (--clip=1.0)", "train.grad_clip", why=_MOSEI_RUNS),
        Setting("epochs", 100, f"{_README} (-ep=100)", "train.epochs"),
        Setting("early-stop patience", 8, f"{_README} (--early-stop=8)", "train.early_stop_patience"),
        bf16_setting("precision", False, "official code (fp32, no autocast)", "improved: bf16 autocast on CUDA"),
    ),
)


def emotion_word(class_name: str) -> str:
    """The natural word for a class name (IEMOCAP's codes are expanded; others are used as they are)."""
    return EMOTION_WORDS.get(class_name, class_name)


@torch.no_grad()
def word_embeddings(words: list[str], text_model: str) -> torch.Tensor:
    """(len(words), hidden): mean last hidden state over each word's own tokens (special tokens excluded)."""
    from e2e.data.text import load_text_encoder, load_tokenizer

    tokenizer, encoder = load_tokenizer(text_model), load_text_encoder(text_model).eval()
    tokens = tokenizer(words, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    states = encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    keep = (tokens["attention_mask"].bool() & ~tokens["special_tokens_mask"].bool()).unsqueeze(-1).float()
    return (states * keep).sum(1) / keep.sum(1).clamp(min=1)


class LastStepLSTM(nn.Module):
    """An LSTM over the valid steps (packed); the utterance vector is its last layer's output at the last
    valid step, with a bidirectional LSTM the two directions summed (the official read-out: the backward
    half has then read only that step)."""

    def __init__(self, in_features: int, hidden: int, config: EmoEmbsConfig):
        super().__init__()
        self.lstm = nn.LSTM(
            in_features,
            hidden,
            config.temporal_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.temporal_layers > 1 else 0.0,
        )
        self.out_features = hidden

    def forward(self, sequence: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        lengths = (~padding).sum(1)
        packed = nn.utils.rnn.pack_padded_sequence(sequence, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        last = outputs[torch.arange(len(outputs), device=outputs.device), lengths.to(outputs.device) - 1]
        return last.unflatten(-1, (-1, self.out_features)).sum(-2)  # (B, directions, hidden) summed


class EmoEmbs(nn.Module):
    def __init__(self, config: EmoEmbsConfig, class_names: list[str], prototypes: torch.Tensor | None = None):
        super().__init__()
        if prototypes is None:
            prototypes = word_embeddings([emotion_word(name) for name in class_names], config.text_model)
        self.register_buffer("prototypes", prototypes.float())
        width = prototypes.shape[1]
        hidden = {"t": width, "a": config.audio_hidden, "v": config.visual_hidden}
        dims = modality_dims(config)
        self.encoders = nn.ModuleDict({m: LastStepLSTM(dim, hidden[m], config) for m, dim in dims.items()})
        self.to_modality = nn.ModuleDict({m: nn.Linear(width, hidden[m]) for m in dims if m != "t"})
        self.scoring = config.scoring
        if config.scoring == "cosine":
            self.log_temperature = nn.Parameter(torch.tensor(config.initial_temperature).log())
        self.fusion = LateFusion(len(dims)) if len(dims) > 1 else None

    def embeddings(self, modality: str) -> torch.Tensor:
        """(C, modality width): the emotion embeddings in ``modality``'s space (text: as they are)."""
        return self.prototypes if modality == "t" else self.to_modality[modality](self.prototypes)

    def scores(self, utterance: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C): each utterance vector's score for every class."""
        if self.scoring == "dot":
            return utterance @ embeddings.t()
        cosine = nn.functional.normalize(utterance, dim=1) @ nn.functional.normalize(embeddings, dim=1).t()
        return self.log_temperature.exp() * cosine

    def forward(self, batch: Batch) -> ModelOutput:
        scores = {
            m: self.scores(encoder(*padded_features(batch, m)), self.embeddings(m))
            for m, encoder in self.encoders.items()
        }
        stacked = torch.stack(list(scores.values()), dim=-1)
        logits = stacked[..., 0] if self.fusion is None else self.fusion(stacked)
        return ModelOutput(logits, extras={"modality_logits": scores})


@register_model("emoembs", options=EmoEmbsConfig, inputs="features", tasks=("emotion",), fidelity=FIDELITY)
def build_emoembs(config: EmoEmbsConfig, class_names: list[str]) -> EmoEmbs:
    return EmoEmbs(config, class_names)
