"""Freezing strategies: small pure plans over the ordered layer groups.

A strategy maps (number of groups, epoch) to a `FreezePlan`: which groups train, each group's lr multiplier and
the BatchNorm policy. The module applies a plan by toggling `requires_grad`, per-group learning rates and BN
modes; the optimizer's param groups (one per layer group + head) never change, so schedulers, checkpoints and
resume always see the same structure.

BatchNorm policy:
- `frozen`: a BN layer whose own parameters are all frozen runs in eval mode (running stats fixed): BN inside frozen
  groups, and every BN under LoRA or bias-only BitFit. BN layers that train run in train mode.
- `eval_stats`: every BN layer runs in eval mode (stats fixed everywhere); affine params train where allowed.
- `train`: BN layers always run in train mode, so frozen ones still update running stats (plain PyTorch behaviour).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from torch import nn

from tl_research.backbones.base import LayerGroup
from tl_research.config import FreezeConfig
from tl_research.errors import UserError
from tl_research.registry import Registry


@dataclass(frozen=True)
class FreezePlan:
    trainable: tuple[bool, ...]  # per layer group, input to output
    lr_scale: tuple[float, ...]  # per layer group; the effective lr of a frozen group is 0
    bn: str = "frozen"
    head_lr_scale: float = 1.0
    # which parameters of a trainable group train: all, biases, biases + norm layers, or LoRA adapters
    params: Literal["all", "bias", "bias_norm", "lora"] = "all"

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

    def prepare(self, backbone: nn.Module) -> None:
        """Change the backbone before groups and optimizer are built (LoRA adds adapters); usually nothing."""


def _prefix_plan(num_groups: int, frozen: int, bn: str) -> FreezePlan:
    return FreezePlan(tuple(i >= frozen for i in range(num_groups)), (1.0,) * num_groups, bn)


@dataclass(frozen=True)
class _Base:
    bn: str = "frozen"

    def prepare(self, backbone: nn.Module) -> None:
        return None


@dataclass(frozen=True)
class LinearProbe(_Base):
    """All groups frozen; only the head trains."""

    name: str = "linear_probe"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return _prefix_plan(num_groups, num_groups, self.bn)


@dataclass(frozen=True)
class Full(_Base):
    """Everything trains."""

    name: str = "full"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return _prefix_plan(num_groups, 0, self.bn)


@dataclass(frozen=True)
class Depth(_Base):
    """Groups [0, depth) frozen; the rest and the head train."""

    depth: int = 0
    name: str = "depth"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return _prefix_plan(num_groups, self.depth, self.bn)


@dataclass(frozen=True)
class GradualUnfreeze(_Base):
    """ULMFiT: head only, then one more group from the top every `every_n_epochs`; a group `d` levels below
    the top trains at lr / lr_factor^d (discriminative fine-tuning; ULMFiT used 2.6)."""

    every_n_epochs: int = 1
    lr_factor: float = 1.0
    name: str = "gradual_unfreeze"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        open_groups = min(num_groups, epoch // self.every_n_epochs)
        frozen = num_groups - open_groups
        scales = tuple(self.lr_factor ** -(num_groups - 1 - i) for i in range(num_groups))
        return FreezePlan(tuple(i >= frozen for i in range(num_groups)), scales, self.bn)


@dataclass(frozen=True)
class LinearProbeThenFinetune(_Base):
    """LP-FT (Kumar et al. 2022): linear probe for `probe_epochs`, then everything at lr * ft_scale."""

    probe_epochs: int = 1
    ft_scale: float = 0.1
    name: str = "lp_ft"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        if epoch < self.probe_epochs:
            return _prefix_plan(num_groups, num_groups, self.bn)
        return FreezePlan((True,) * num_groups, (self.ft_scale,) * num_groups, self.bn, self.ft_scale)


@dataclass(frozen=True)
class LayerwiseDecay(_Base):
    """Layer-wise lr decay: group i of n trains at lr * decay^(n - i); the head at lr."""

    decay: float = 0.75
    name: str = "llrd"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, tuple(self.decay ** (num_groups - i) for i in range(num_groups)),
                          self.bn)


@dataclass(frozen=True)
class BitFit(_Base):
    """BitFit (Ben Zaken et al. 2022): only biases (and, by default, norm-layer parameters) + the head."""

    norms: bool = True
    name: str = "bitfit"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, (1.0,) * num_groups, self.bn,
                          params="bias_norm" if self.norms else "bias")


@dataclass(frozen=True)
class Surgical(_Base):
    """Surgical fine-tuning (Lee et al. 2023): exactly one group trains, plus the head."""

    group: int = 0
    name: str = "surgical"

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan(tuple(i == self.group for i in range(num_groups)), (1.0,) * num_groups, self.bn)


@dataclass(frozen=True)
class Lora(_Base):
    """LoRA adapters (via peft) on the chosen modules; every base weight stays frozen."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None
    name: str = "lora"

    def prepare(self, backbone: nn.Module) -> None:
        from tl_research.lora import add_lora

        add_lora(backbone, self.rank, self.alpha, self.dropout, self.targets)

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, (1.0,) * num_groups, self.bn, params="lora")


# builders: (freeze config, base lr, number of layer groups) -> Strategy; they validate options against the backbone
STRATEGIES: Registry[Callable[[FreezeConfig, float, int], Strategy]] = Registry("strategy")


@STRATEGIES.register("linear_probe")
def _linear_probe(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    return LinearProbe(cfg.bn)


@STRATEGIES.register("full")
def _full(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    return Full(cfg.bn)


@STRATEGIES.register("depth")
def _depth(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    if (cfg.depth is None) == (cfg.fraction is None):
        raise UserError("freeze.depth: strategy depth needs exactly one of freeze.depth (groups) "
                        "or freeze.fraction (share of groups)")
    if cfg.depth is not None and cfg.depth > num_groups:
        raise UserError(f"freeze.depth: {cfg.depth} is more than the backbone's {num_groups} layer groups "
                        f"(allowed: 0..{num_groups}; see tlr inspect)")
    depth = cfg.depth if cfg.depth is not None else round(cfg.fraction * num_groups)
    return Depth(cfg.bn, depth)


@STRATEGIES.register("gradual_unfreeze")
def _gradual(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    return GradualUnfreeze(cfg.bn, cfg.every_n_epochs, cfg.lr_factor)


@STRATEGIES.register("lp_ft")
def _lp_ft(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    return LinearProbeThenFinetune(cfg.bn, cfg.probe_epochs, (cfg.ft_lr / lr) if cfg.ft_lr else 0.1)


@STRATEGIES.register("llrd")
def _llrd(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    return LayerwiseDecay(cfg.bn, cfg.decay)


@STRATEGIES.register("bitfit")
def _bitfit(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    return BitFit(cfg.bn, cfg.bitfit_norms)


@STRATEGIES.register("surgical")
def _surgical(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    if cfg.group is None:
        raise UserError("freeze.group: strategy surgical needs the index of the group to train (see tlr inspect)")
    if not -num_groups <= cfg.group < num_groups:
        raise UserError(f"freeze.group: {cfg.group} is out of range for the backbone's {num_groups} layer groups "
                        f"(allowed: 0..{num_groups - 1}, or -1..-{num_groups} from the top)")
    return Surgical(cfg.bn, cfg.group % num_groups)


@STRATEGIES.register("lora")
def _lora(cfg: FreezeConfig, lr: float, num_groups: int) -> Strategy:
    lc = cfg.lora
    return Lora(cfg.bn, lc.rank, lc.alpha, lc.dropout, tuple(lc.targets) if lc.targets else None)


def build_strategy(cfg: FreezeConfig, num_groups: int, lr: float = 1e-3) -> Strategy:
    return STRATEGIES.get(cfg.strategy, "freeze.strategy")(cfg, lr, num_groups)


# ---------------------------------------------------------------- applying a plan

def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) or \
        type(module).__name__.endswith(("Norm", "Norm2d", "NormAct2d"))


def _selected(plan: FreezePlan, group: LayerGroup) -> set[str]:
    """Names of the params of a trainable group that the plan trains."""
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


def apply_bn_policy(groups: list[LayerGroup], plan: FreezePlan) -> None:
    """Set every BN layer's mode as the policy asks (after `apply_requires_grad`); only for a module in training.

    Both directions matter: a group unfrozen mid-run must get its BN layers back into train mode."""
    for group in groups:
        for module in group.modules.values():
            if is_batchnorm(module):
                frozen = not any(p.requires_grad for p in module.parameters(recurse=False))
                module.train(plan.bn == "train" or (plan.bn == "frozen" and not frozen))
