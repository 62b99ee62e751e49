"""Task heads on top of pooled backbone features, and the head section's options (`head:` of an experiment)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from tl_research.schema import applies_when, bounds


@dataclass
class HeadConfig:
    # linear (dropout + Linear) or mlp (Linear(hidden) + ReLU + dropout + Linear)
    type: Literal["linear", "mlp"] = "linear"
    hidden: int = field(default=256, metadata=applies_when("type", ("mlp",), bounds(ge=1)))  # the mlp head's width
    # dropout before the last layer
    dropout: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))
    # start the head from the run folder given as backbone.weights (same classes): adapting a trained model to a
    # shifted domain keeps its classifier, as in surgical fine-tuning (Lee et al. 2023)
    from_run: bool = False


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
