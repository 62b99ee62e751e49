"""Applying a plan to a backbone's layer groups: `requires_grad`, BatchNorm modes, and eval mode for frozen groups.

BatchNorm policy (`freeze.bn`):
- `frozen`: a BN layer whose own parameters are all frozen runs in eval mode (running stats fixed): BN inside frozen
  groups, and every BN under LoRA or bias-only BitFit. BN layers that train run in train mode.
- `eval_stats`: every BN layer runs in eval mode (stats fixed everywhere); affine params train where allowed.
- `train`: BN layers always run in train mode, so frozen ones still update running stats (plain PyTorch behaviour).
Every other module of a frozen group (dropout, stochastic depth) runs in eval mode whatever the policy: a frozen
group computes a fixed function, so a cached and an uncached run see the same numbers.
"""

from __future__ import annotations

from torch import nn

from tl_research.backbones.base import LayerGroup
from tl_research.strategies.freeze_plan import FreezePlan

# every public BatchNorm class (timm's BatchNormAct2d and the lazy variants subclass these)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, BATCHNORMS)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, (*BATCHNORMS, nn.LayerNorm, nn.GroupNorm)) or \
        type(module).__name__.endswith(("Norm", "Norm2d", "NormAct2d"))


def _selected(plan: FreezePlan, group: LayerGroup) -> set[str]:
    """Names of the params of a trainable group that the plan trains."""
    if callable(plan.params):
        return {n for n in group.params if plan.params(n)}
    if isinstance(plan.params, frozenset):
        return set(group.params) & plan.params
    if plan.params == "all":
        return set(group.params)
    if plan.params == "lora":
        return {n for n in group.params if "lora_" in n}
    chosen = {n for n in group.params if n.endswith("bias")}
    if plan.params == "bias_norm":
        for mname, module in group.modules.items():
            if is_norm(module):
                chosen |= {f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)}
    return chosen


def apply_requires_grad(groups: list[LayerGroup], plan: FreezePlan) -> None:
    for group, trainable in zip(groups, plan.trainable):
        chosen = _selected(plan, group) if trainable else set()
        for name, p in group.params.items():
            p.requires_grad_(name in chosen)


def apply_modes(groups: list[LayerGroup], plan: FreezePlan, bn: str) -> None:
    """Set module modes for a module in training (after `apply_requires_grad`): BN layers as policy `bn` asks,
    every other module of a frozen group in eval mode.

    Both directions matter: a group unfrozen mid-run must get its layers back into train mode."""
    for group, trainable in zip(groups, plan.trainable):
        for module in group.members.values():
            if is_batchnorm(module):
                frozen = not any(p.requires_grad for p in module.parameters(recurse=False))
                module.training = bn == "train" or (bn == "frozen" and not frozen)
            else:
                module.training = trainable
