"""Feature decay: a penalty on the squared norm of the features the head reads."""

from dataclasses import dataclass, field
from typing import Any

from tl_research.schema import bounds
from tl_research.training.regularizers import Step, register_regularizer


@register_regularizer("feature_decay")
@dataclass(frozen=True)
class FeatureDecay:
    """Feature decay: weight * the batch mean of ||f||^2 over the head's input features."""

    # the term's weight
    weight: float = field(default=1e-3, metadata=bounds(ge=0.0))

    def penalty(self, step: Step) -> Any:
        return self.weight * step.features.pow(2).sum(1).mean()
