"""Task heads on top of pooled backbone features."""

from __future__ import annotations

from torch import nn


def build_head(in_features: int, num_classes: int, kind: str = "linear", hidden: int = 256,
               dropout: float = 0.0) -> nn.Module:
    """`linear`: dropout + Linear. `mlp`: Linear(hidden) + ReLU + dropout + Linear (the seed's Dense(256) head)."""
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(hidden, num_classes))
    raise ValueError(f"unknown head type {kind!r}")
