"""What a freezing strategy is: a registered options dataclass that turns (number of groups, epoch) into a plan.

A strategy is parsed from its own `freeze.*` keys (its dataclass fields are its options, with their bounds), checked
against the backbone once in `resolve(num_groups, lr)`, and then only answers `plan(num_groups, epoch)`: which
groups train, each group's lr multiplier, which parameters of a trainable group train. The module applies a plan by
toggling `requires_grad` and per-group learning rates; the optimizer's param groups (one per layer group + head)
never change, so schedulers, checkpoints and resume always see the same structure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from tl_research.registry import Registry


@dataclass(frozen=True)
class FreezePlan:
    trainable: tuple[bool, ...]  # per layer group, input to output
    lr_scale: tuple[float, ...]  # per layer group; the effective lr of a frozen group is 0
    head_lr_scale: float = 1.0
    # which parameters of a trainable group train: all, biases, biases + norm layers, LoRA adapters, or the
    # strategy's own rule: a predicate over a parameter's name (as the backbone names it: `blocks.3.1.conv_pw.weight`)
    # or a set of such names
    params: Literal["all", "bias", "bias_norm", "lora"] | Callable[[str], bool] | frozenset[str] = "all"

    @property
    def depth(self) -> int:
        """Number of frozen groups before the first trainable one (n when none trains)."""
        return next((i for i, t in enumerate(self.trainable) if t), len(self.trainable))

    def group_lr_scales(self) -> list[float]:
        """Multiplier of the base lr for each layer group and then the head (0 for frozen groups)."""
        return [s if t else 0.0 for s, t in zip(self.lr_scale, self.trainable)] + [self.head_lr_scale]


# freeze.probe: how a linear probe's head is fitted. auto: L-BFGS on cached features when the run uses the
# feature cache, SGD epochs otherwise; lbfgs: converged L2 logistic regression (computing features once when the
# cache is off); sgd: the head trains with the run's optimizer.
ProbeSolver = Literal["auto", "lbfgs", "sgd"]


@dataclass(frozen=True)
class ProbePhase:
    """A linear-probe phase a strategy declares: the head fitted on the frozen features of the whole backbone, by
    the converged L-BFGS probe (before Lightning trains anything) or by SGD epochs within the strategy's plan."""

    solver: ProbeSolver
    l2: tuple[float, ...] | None  # the L2 grid the L-BFGS probe chooses from on validation (None: its default)
    # what trains once the L-BFGS probe has fitted the head (None: nothing, the probe is the whole run)
    then: Any = None


class Strategy(Protocol):
    """A freezing strategy. Optional hooks: `resolve(num_groups, lr)` checks it against a backbone (the strategy
    as it is when absent); `prepare(backbone)` changes the backbone before groups and optimizer
    exist (LoRA adds adapters); `frozen_prefix(num_groups)` is how many leading groups stay frozen, untouched, for
    the whole run (what a feature cache may precompute; 0 when absent); `lr_multipliers(groups)` scales each
    layer group's lr at every step from that step's gradients (Auto-RGN); `probe_phase()` declares a linear-probe
    phase (a `ProbePhase`) that the run may fit in closed form first; `after_run(backbone, head, folder)` writes
    what the strategy leaves beside a finished run (LoRA: the merged weights)."""

    name: ClassVar[str]

    def plan(self, num_groups: int, epoch: int) -> FreezePlan: ...


S = TypeVar("S")
STRATEGIES: Registry[type] = Registry("strategy")


def register(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator: a strategy dataclass under `freeze.strategy: name`."""

    def add(cls: type[S]) -> type[S]:
        cls.name = name  # type: ignore[attr-defined]
        return STRATEGIES.register(name)(cls)

    return add


def prefix_plan(num_groups: int, frozen: int, lr_scale: float = 1.0) -> FreezePlan:
    """Groups [0, frozen) frozen, the rest training at `lr_scale`."""
    return FreezePlan(tuple(i >= frozen for i in range(num_groups)), (lr_scale,) * num_groups)


def resolved(strategy: Any, num_groups: int, lr: float) -> Any:
    """The strategy checked against a backbone with `num_groups` groups and base lr `lr`, with what it derives from
    them filled in (itself for a strategy without a `resolve` hook)."""
    hook = getattr(strategy, "resolve", None)
    return hook(num_groups, lr) if hook is not None else strategy


def frozen_prefix(strategy: Any, num_groups: int) -> int:
    """Leading groups frozen for the whole run (0 for strategies that may touch every group)."""
    hook = getattr(strategy, "frozen_prefix", None)
    return hook(num_groups) if hook is not None else 0


def prepare_backbone(strategy: Any, backbone: Any) -> None:
    hook = getattr(strategy, "prepare", None)
    if hook is not None:
        hook(backbone)


def probe_phase(strategy: Any) -> ProbePhase | None:
    """The strategy's linear-probe phase, if it has one."""
    hook = getattr(strategy, "probe_phase", None)
    return hook() if hook is not None else None


def after_run(strategy: Any, backbone: Any, head: Any, folder: Any) -> None:
    hook = getattr(strategy, "after_run", None)
    if hook is not None:
        hook(backbone, head, folder)
