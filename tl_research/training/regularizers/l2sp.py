"""L2-SP (Li, Grandvalet & Davoine 2018): the trained backbone pulled towards its pretrained weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from tl_research.schema import bounds
from tl_research.training.regularizers.registry import Step, register_regularizer


@register_regularizer("l2sp")
@dataclass(frozen=True)
class L2SP:
    """L2-SP (Li et al. 2018): alpha * ||theta - theta_0||^2 over the trainable backbone weights + beta *
    ||theta||^2 over the head. The paper's equation 3; `freeze.l2sp.alpha/beta` are the same term."""

    # the pull towards the pretrained weights
    alpha: float = field(default=0.0, metadata=bounds(ge=0.0))
    # plain weight decay on the new head
    beta: float = field(default=0.0, metadata=bounds(ge=0.0))
    uses_theta0: ClassVar[bool] = True

    def penalty(self, step: Step) -> Any:
        import torch

        module = step.module
        total = torch.zeros((), device=step.logits.device)
        if self.alpha > 0:
            pairs = [(p, module.theta0[n]) for n, p in module.backbone.named_parameters()
                     if p.requires_grad and n in module.theta0]
            if pairs:  # (torch.nn.utils.get_total_norm would be one kernel, but it runs without autograd)
                total = total + self.alpha * torch.stack([(p - t).pow(2).sum() for p, t in pairs]).sum()
        if self.beta > 0:
            total = total + self.beta * sum(p.pow(2).sum() for p in module.head.parameters())
        return total
