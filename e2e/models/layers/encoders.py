"""Building blocks shared by the end-to-end models: text encoder, projection, temporal transformer,
late fusion (as in the MESM paper)."""

from __future__ import annotations

import math

import torch
from torch import nn

from e2e.config import ModelConfig, UsageError


class TextEncoder(nn.Module):
    """Any Hugging Face encoder; the utterance feature is the CLS row of ``last_hidden_state``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.hidden_size = model.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]


def text_encoder_from_config(config: ModelConfig) -> TextEncoder:
    from e2e.data.text import load_text_encoder  # imports transformers only when text is used

    return TextEncoder(load_text_encoder(config.text_model, config.text_random_init))


def projection(in_features: int, d_model: int) -> nn.Sequential:
    """``Linear(flat→1024) → ReLU → Linear(1024→d_model)``, applied to every frame's CNN output."""
    return nn.Sequential(nn.Linear(in_features, 1024), nn.ReLU(inplace=True), nn.Linear(1024, d_model))


def pad_packed(packed: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed ``(sum L_b, d)`` → padded ``(B, max L, d)`` and a padding mask (True = padding)."""
    utterance = torch.repeat_interleave(torch.arange(len(lengths), device=packed.device), lengths)
    if utterance.shape[0] != packed.shape[0]:
        raise UsageError(f"lengths sum to {utterance.shape[0]} but {packed.shape[0]} frames were given")
    starts = lengths.cumsum(0) - lengths
    position = torch.arange(packed.shape[0], device=packed.device) - starts[utterance]
    steps = int(lengths.max())
    padded = packed.new_zeros(len(lengths), steps, packed.shape[1]).index_put((utterance, position), packed)
    padding = torch.arange(steps, device=packed.device)[None, :] >= lengths[:, None]
    return padded, padding


def sinusoidal_encoding(steps: int, d_model: int, device=None) -> torch.Tensor:
    """The Transformer's fixed sin/cos positional encoding, ``(steps, d_model)``."""
    position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, device=device) * (-math.log(10000.0) / d_model))
    encoding = torch.zeros(steps, d_model, device=device)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return encoding


class TemporalTransformer(nn.Module):
    """Post-LN transformer encoder over one utterance's frames/chunks; returns a learned CLS token's output.

    Padding is masked. The official model had no positional encoding (frames are a bag); with
    ``positional=True`` a sinusoidal encoding is added to the frames (not to CLS).
    """

    def __init__(self, d_model: int, layers: int, heads: int, ffn: int, dropout: float, positional: bool):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.positional = positional

    def forward(self, packed: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        padded, padding = pad_packed(packed, lengths)
        if self.positional:
            padded = padded + sinusoidal_encoding(padded.shape[1], padded.shape[2], padded.device)
        tokens = torch.cat([self.cls.expand(len(lengths), -1, -1), padded], dim=1)
        padding = torch.cat([padding.new_zeros(len(lengths), 1), padding], dim=1)
        return self.encoder(tokens, src_key_padding_mask=padding)[:, 0]


class LateFusion(nn.Module):
    """Fused logits = ``Linear(M→1, bias=False)`` over stacked (B, C, M) modality logits.

    The M weights start at 1/M (a plain average) rather than at random, possibly negative, values.
    """

    def __init__(self, num_modalities: int):
        super().__init__()
        self.weights = nn.Linear(num_modalities, 1, bias=False)
        nn.init.constant_(self.weights.weight, 1.0 / num_modalities)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return self.weights(stacked).squeeze(-1)
