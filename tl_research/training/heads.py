"""Task heads on top of pooled backbone features (their options, `head:` of an experiment: head_options.py)."""

from __future__ import annotations

import torch
from torch import nn


class ScalarMix(nn.Module):
    """ELMo's scalar mix (Peters et al. 2018): gamma * sum_j softmax(w)_j h_j over stacked layer states
    (B, layers, H) -> (B, H); starts as the plain mean of the layers."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.einsum("l,blh->bh", self.weights.softmax(0), states)


def build_head(in_features: int, num_classes: int, kind: str = "linear", hidden: int = 256,
               dropout: float = 0.0, mixed_layers: int | None = None) -> nn.Module:
    """`linear`: dropout + Linear. `mlp`: Linear(hidden) + ReLU + dropout + Linear (the seed's Dense(256) head).
    `mixed_layers`: the features are that many stacked layer states, mixed first by a learned ScalarMix."""
    if kind == "linear":
        layers = [nn.Dropout(dropout), nn.Linear(in_features, num_classes)]
    elif kind == "mlp":
        layers = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
    else:
        raise ValueError(f"unknown head type {kind!r}")
    return nn.Sequential(*([ScalarMix(mixed_layers)] if mixed_layers else []), *layers)
