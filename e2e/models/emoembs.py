"""EmoEmbs (Dai et al., 2020, "Modality-Transferable Emotion Embeddings for Low-Resource Multimodal
Emotion Recognition") on two-stage features.

The classes are represented by the word embeddings of their emotion words, taken from the configured
text model (mean of the word's last hidden states, computed once at build time and stored as a
buffer so checkpoints carry them). Each modality's utterance vector (transformer encoder, mean-pooled)
is projected into that word space and scored against every prototype by cosine similarity times a
learned temperature; the per-modality scores are fused by learned weights (:class:`LateFusion`).

Choices: the prototypes stay fixed (the paper's zero-shot transfer to unseen emotions needs the
projections, not the prototypes, to carry the learning; a new emotion is scored by appending its word
embedding to ``prototypes``); cosine rather than dot product keeps the scale in the temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from e2e.config import positive
from e2e.data.batch import Batch, ModelOutput
from e2e.models.layers.encoders import LateFusion
from e2e.models.layers.sequence import PooledTransformer, SequenceModelConfig, encode_utterances, utterance_encoders
from e2e.models.registry import register_model

EMOTION_WORDS = {
    "ang": "anger",
    "exc": "excitement",
    "fru": "frustration",
    "hap": "happiness",
    "neu": "neutral",
    "sad": "sadness",
}


@dataclass
class EmoEmbsConfig(SequenceModelConfig):
    """EmoEmbs' options. The shared ones (``d_model``, ``temporal_*``) size each modality's mean-pooled
    transformer encoder, whose output is then projected into the text model's word space."""

    name: str = "emoembs"
    initial_temperature: float = positive(10.0)  # starting scale of the (learned) cosine-similarity scores


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


class EmoEmbs(nn.Module):
    def __init__(self, config: EmoEmbsConfig, class_names: list[str], prototypes: torch.Tensor | None = None):
        super().__init__()
        if prototypes is None:
            prototypes = word_embeddings([emotion_word(name) for name in class_names], config.text_model)
        self.register_buffer("prototypes", prototypes.float())
        self.encoders = utterance_encoders(config, PooledTransformer)
        self.to_word_space = nn.ModuleDict({m: nn.Linear(config.d_model, prototypes.shape[1]) for m in self.encoders})
        self.log_temperature = nn.Parameter(torch.tensor(config.initial_temperature).log())
        self.fusion = LateFusion(len(self.encoders))

    def scores(self, embedded: torch.Tensor) -> torch.Tensor:
        """(B, C) scaled cosine similarity of word-space vectors ``(B, hidden)`` to every prototype."""
        cosine = nn.functional.normalize(embedded, dim=1) @ nn.functional.normalize(self.prototypes, dim=1).t()
        return self.log_temperature.exp() * cosine

    def forward(self, batch: Batch) -> ModelOutput:
        scores = {
            m: self.scores(self.to_word_space[m](utterance))
            for m, utterance in encode_utterances(self.encoders, batch).items()
        }
        logits = self.fusion(torch.stack(list(scores.values()), dim=-1))
        return ModelOutput(logits, extras={"modality_logits": scores})


@register_model("emoembs", options=EmoEmbsConfig, inputs="features")
def build_emoembs(config: EmoEmbsConfig, class_names: list[str]) -> EmoEmbs:
    return EmoEmbs(config, class_names)
