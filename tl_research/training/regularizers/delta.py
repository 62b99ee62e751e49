"""DELTA (Li, Xiong, Wang, Huan, Liu, Xu & Dou 2019): fine-tuning keeps the outer feature maps of the pretrained
network, channel by channel, weighted by how much each channel matters to the target task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tl_research.errors import UserError
from tl_research.schema import bounds
from tl_research.training.regularizers.registry import Step, register_regularizer

# the L2 strength of the attention's linear classifier (fitted on theta_0's features of the attention batches)
ATTENTION_L2 = 1e-3


@register_regularizer("delta")
@dataclass(frozen=True)
class DELTA:
    """DELTA (Li et al. 2019): alpha * the sum over the chosen groups' channels j of W_j ||FM_j(theta) -
    FM_j(theta_0)||^2 (summed over positions, averaged over the batch) + beta * ||head||^2. The paper's equations
    3-4. With attention,
    W = softmax over a group's channels of the target loss increase when channel j of theta_0's map is zeroed
    (equation 5), measured with a linear classifier fitted on theta_0's features, averaged over `attention_batches`
    training batches once before training, standardised and divided by `temperature`; without attention, every
    W_j = 1 (the paper's feature-map ablation)."""

    # the feature-map term's weight
    alpha: float = field(default=0.01, metadata=bounds(ge=0.0))
    # L2 on the new head (the paper's Omega'')
    beta: float = field(default=0.01, metadata=bounds(ge=0.0))
    # the layer groups whose output maps are kept (negative: from the end)
    layers: list[int] = field(default_factory=lambda: [-1])
    # weigh channels by their importance to the target (false: all channels weigh 1)
    attention: bool = True
    # training batches the channel attention is measured on
    attention_batches: int = field(default=4, metadata=bounds(ge=1))
    # the softmax temperature over the standardised loss rises (TLlib's 5)
    temperature: float = field(default=5.0, metadata=bounds(gt=0.0))

    @property
    def prepare_batches(self) -> int:
        return self.attention_batches

    def groups(self, num_groups: int) -> list[int]:
        for g in self.layers:
            if not -num_groups <= g < num_groups:
                raise UserError(f"regularize.delta.layers: {g} is not a layer group of this backbone (it has "
                                f"{num_groups}: 0..{num_groups - 1}, or -1..-{num_groups})")
        return list(self.layers)

    def prepare(self, source: Any, batches: list[tuple[Any, Any]], num_classes: int) -> dict[str, Any]:
        """The channel attention of each chosen group (uniform weights without `attention`)."""
        import torch
        import torch.nn.functional as F

        from tl_research.training.probe import fit_logistic
        from tl_research.training.regularizers.outputs import captured, channels, output_module

        n = len(source.layer_groups())
        groups = sorted({g % n for g in self.layers})
        batches = batches[: self.attention_batches]
        with torch.no_grad(), captured(source, tuple(groups)) as maps:
            source(batches[0][0])
            width = {g: channels(maps[g]).shape[1] for g in groups}
        if not self.attention:
            return {f"w{g}": torch.ones(width[g]) for g in groups}
        with torch.no_grad():
            feats = [source(x).double() for x, _ in batches]
        w, b, _ = fit_logistic(torch.cat(feats).cpu(), torch.cat([y for _, y in batches]).cpu(), num_classes,
                               ATTENTION_L2)
        w, b = w.to(feats[0].device), b.to(feats[0].device)

        def loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(f.double() @ w.T + b, y)

        base = [loss(f, y) for f, (_, y) in zip(feats, batches)]
        out = {}
        for g in groups:
            rise = torch.zeros(width[g], dtype=torch.float64)
            for j in range(width[g]):
                handle = output_module(source, g).register_forward_hook(lambda _m, _i, o, j=j: _zeroed(o, j))
                try:
                    with torch.no_grad():
                        rise[j] = sum(float(loss(source(x), y) - b0) for (x, y), b0 in zip(batches, base))
                finally:
                    handle.remove()
            # standardised before the softmax, as the reference implementation (TLlib) does: loss rises are small,
            # and the softmax of the raw rises (the paper's equation 5 as printed) is all but uniform
            z = (rise - rise.mean()) / rise.std() if rise.std() > 0 else torch.zeros_like(rise)
            out[f"w{g}"] = torch.softmax(z / self.temperature, 0).float()
        return out

    def penalty(self, step: Step) -> Any:
        from tl_research.training.regularizers.outputs import channels

        total = 0.0
        for g, fm in step.maps.items():
            diff = channels(fm) - channels(step.source_maps[g])  # (B, C, positions)
            per_channel = diff.pow(2).sum(2).mean(0)  # (C,)
            total = total + (step.state[f"w{g}"].to(per_channel.device) * per_channel).sum()
        total = self.alpha * total
        if self.beta > 0:
            total = total + self.beta * sum(p.pow(2).sum() for p in step.module.head.parameters())
        return total


def _zeroed(output: Any, j: int) -> Any:
    """`output` (a map or a tuple whose first item is one) with channel j set to zero."""
    if isinstance(output, (tuple, list)):
        return type(output)([_zeroed(output[0], j), *output[1:]])
    out = output.clone()
    if out.dim() == 3:  # token states: channels last
        out[..., j] = 0
    else:
        out[:, j] = 0
    return out
