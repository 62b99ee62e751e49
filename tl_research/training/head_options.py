"""The head section's options (`head:` of an experiment); torch-free, so a config is read without importing torch
(the heads themselves: heads.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
