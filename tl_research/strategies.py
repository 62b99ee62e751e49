"""Freezing strategies: small pure plans over the ordered layer groups.

A strategy maps (number of groups, epoch) to a `FreezePlan`: which groups train, each group's lr multiplier and
the BatchNorm policy. The module applies a plan by toggling `requires_grad`, per-group learning rates and BN
modes; the optimizer's param groups (one per layer group + head) never change, so schedulers, checkpoints and
resume always see the same structure.

BatchNorm policy:
- `frozen`: BN layers in frozen groups run in eval mode (running stats fixed); their affine params stay frozen.
- `eval_stats`: every BN layer runs in eval mode (stats fixed everywhere); affine params train where the group trains.
- `train`: BN layers always run in train mode, so frozen groups still update running stats (plain PyTorch behaviour).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torch import nn

from tl_research.backbones.base import LayerGroup
from tl_research.config import FreezeConfig
from tl_research.errors import UserError
from tl_research.registry import Registry

BN_POLICIES = ("frozen", "eval_stats", "train")


@dataclass(frozen=True)
class FreezePlan:
    trainable: tuple[bool, ...]  # per layer group, input to output
    lr_scale: tuple[float, ...]  # per layer group; the effective lr of a frozen group is 0
    bn: str = "frozen"
    head_lr_scale: float = 1.0

    @property
    def depth(self) -> int:
        """Number of frozen groups before the first trainable one (n when none trains)."""
        return next((i for i, t in enumerate(self.trainable) if t), len(self.trainable))

    def group_lr_scales(self) -> list[float]:
        """Multiplier of the base lr for each layer group and then the head (0 for frozen groups)."""
        return [s if t else 0.0 for s, t in zip(self.lr_scale, self.trainable)] + [self.head_lr_scale]


class Strategy(Protocol):
    name: str

    def plan(self, num_groups: int, epoch: int) -> FreezePlan: ...


def _prefix_plan(num_groups: int, frozen: int, bn: str) -> FreezePlan:
    return FreezePlan(tuple(i >= frozen for i in range(num_groups)), (1.0,) * num_groups, bn)


@dataclass(frozen=True)
class LinearProbe:
    """All groups frozen; only the head trains."""

    bn: str = "frozen"
    name: str = "linear_probe"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return _prefix_plan(num_groups, num_groups, self.bn)


@dataclass(frozen=True)
class Full:
    """Everything trains."""

    bn: str = "frozen"
    name: str = "full"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return _prefix_plan(num_groups, 0, self.bn)


@dataclass(frozen=True)
class Depth:
    """Groups [0, depth) frozen; the rest and the head train."""

    depth: int
    bn: str = "frozen"
    name: str = "depth"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return _prefix_plan(num_groups, self.depth, self.bn)


# builders: (freeze config, number of layer groups) -> Strategy; they validate options against the backbone
STRATEGIES: Registry[Callable[[FreezeConfig, int], Strategy]] = Registry("strategy")


@STRATEGIES.register("linear_probe")
def _linear_probe(cfg: FreezeConfig, num_groups: int) -> Strategy:
    return LinearProbe(cfg.bn)


@STRATEGIES.register("full")
def _full(cfg: FreezeConfig, num_groups: int) -> Strategy:
    return Full(cfg.bn)


@STRATEGIES.register("depth")
def _depth(cfg: FreezeConfig, num_groups: int) -> Strategy:
    if (cfg.depth is None) == (cfg.fraction is None):
        raise UserError("freeze.depth: strategy depth needs exactly one of freeze.depth (groups) "
                        "or freeze.fraction (share of groups)")
    if cfg.depth is not None and cfg.depth > num_groups:
        raise UserError(f"freeze.depth: {cfg.depth} is more than the backbone's {num_groups} layer groups "
                        f"(allowed: 0..{num_groups}; see tlr inspect)")
    depth = cfg.depth if cfg.depth is not None else round(cfg.fraction * num_groups)
    return Depth(depth, cfg.bn)


def build_strategy(cfg: FreezeConfig, num_groups: int) -> Strategy:
    return STRATEGIES.get(cfg.strategy, "freeze.strategy")(cfg, num_groups)


# ---------------------------------------------------------------- applying a plan

def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def apply_requires_grad(groups: list[LayerGroup], plan: FreezePlan) -> None:
    for group, trainable in zip(groups, plan.trainable):
        for p in group.params.values():
            p.requires_grad_(trainable)


def apply_bn_policy(groups: list[LayerGroup], plan: FreezePlan) -> None:
    """Put BN layers in the mode the policy asks for; call after every `module.train()`."""
    if plan.bn == "train":
        return
    for group, trainable in zip(groups, plan.trainable):
        if trainable and plan.bn == "frozen":
            continue
        for module in group.modules.values():
            if is_batchnorm(module):
                module.eval()
