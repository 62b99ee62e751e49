"""BSS, batch spectral shrinkage (Chen, Wang, Fu, Long & Wang 2019): negative transfer lives in the directions of
the features' smallest singular values; shrinking them keeps fine-tuning from fitting what does not transfer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tl_research.schema import bounds
from tl_research.training.regularizers.registry import Step, register_regularizer


@register_regularizer("bss")
@dataclass(frozen=True)
class BSS:
    """Batch spectral shrinkage (Chen et al. 2019): eta * the sum of the k smallest squared singular values of the
    batch's feature matrix (the head's input, batch x features). As in the paper's equation 6 (eta 0.001, k 1)."""

    # the term's weight
    eta: float = field(default=0.001, metadata=bounds(ge=0.0))
    # how many of the smallest singular values are shrunk
    k: int = field(default=1, metadata=bounds(ge=1))

    def penalty(self, step: Step) -> Any:
        import torch

        sigma = torch.linalg.svdvals(step.features.float())  # descending; min(batch, features) of them
        return self.eta * sigma[-min(self.k, len(sigma)):].pow(2).sum()
