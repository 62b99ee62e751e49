"""The freezing strategies. Each is one dataclass: its fields are its `freeze.*` options (with bounds), and
adding a strategy means adding one such class here (or in any imported file) under `@register(name)`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tl_research.errors import UserError
from tl_research.schema import bounds
from tl_research.strategies.freeze_plan import FreezePlan, ProbePhase, ProbeSolver, prefix_plan, register
from tl_research.strategies.lora import add_lora, merge_lora

if TYPE_CHECKING:  # torch loads with the first run: reading a config (which checks its strategy) must not
    import torch


@register("linear_probe")
@dataclass(frozen=True)
class LinearProbe:
    """All groups frozen; only the head trains."""

    probe: ProbeSolver = "auto"  # how the head is fitted: lbfgs (converged), sgd (epochs), auto (lbfgs when cached)
    # L2 strengths (weight decay on the mean loss) the L-BFGS probe chooses from on validation (None: a log grid)
    probe_l2: list[float] | None = None

    def resolve(self, num_groups: int, lr: float) -> LinearProbe:
        return self

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return prefix_plan(num_groups, num_groups)

    def frozen_prefix(self, num_groups: int) -> int:
        return num_groups

    def probe_phase(self) -> ProbePhase:
        return ProbePhase(self.probe, tuple(self.probe_l2) if self.probe_l2 else None)


@register("full")
@dataclass(frozen=True)
class Full:
    """Everything trains."""

    def resolve(self, num_groups: int, lr: float) -> Full:
        return self

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return prefix_plan(num_groups, 0)


@register("depth")
@dataclass(frozen=True)
class Depth:
    """Groups [0, depth) frozen; the rest and the head train. `fraction` picks depth as a share of the groups."""

    depth: int | None = field(default=None, metadata=bounds(ge=0))  # frozen groups from the input
    fraction: float | None = field(default=None, metadata=bounds(ge=0.0, le=1.0))  # or that share of the groups

    def resolve(self, num_groups: int, lr: float) -> Depth:
        if (self.depth is None) == (self.fraction is None):
            raise UserError("freeze.depth: strategy depth needs exactly one of freeze.depth (groups) "
                            "or freeze.fraction (share of groups)")
        if self.depth is not None and self.depth > num_groups:
            raise UserError(f"freeze.depth: {self.depth} is more than the backbone's {num_groups} layer groups "
                            f"(allowed: 0..{num_groups}; see tlr inspect)")
        return self if self.depth is not None else Depth(depth=round(self.fraction * num_groups))

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return prefix_plan(num_groups, self.depth or 0)

    def frozen_prefix(self, num_groups: int) -> int:
        return self.depth or 0


@register("gradual_unfreeze")
@dataclass(frozen=True)
class GradualUnfreeze:
    """ULMFiT: head only, then one more group from the top every `every_n_epochs`; a group `d` levels below
    the top trains at lr / lr_factor^d (discriminative fine-tuning; ULMFiT used 2.6)."""

    every_n_epochs: int = field(default=1, metadata=bounds(ge=1))  # one more group unfrozen every n epochs
    lr_factor: float = field(default=1.0, metadata=bounds(ge=1.0))  # lr divided by this per group below the top

    def resolve(self, num_groups: int, lr: float) -> GradualUnfreeze:
        return self

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        frozen = num_groups - min(num_groups, epoch // self.every_n_epochs)
        scales = tuple(self.lr_factor ** -(num_groups - 1 - i) for i in range(num_groups))
        return FreezePlan(tuple(i >= frozen for i in range(num_groups)), scales)


@register("lp_ft")
@dataclass(frozen=True)
class LinearProbeThenFinetune:
    """LP-FT (Kumar et al. 2022): a linear probe, then everything at `ft_lr` (None: lr / 10). With the L-BFGS probe
    (`probe`, as for linear_probe) the head starts converged and fine-tuning starts at epoch 0; with SGD the probe
    takes the first `probe_epochs` epochs. `ft_depth` keeps the first groups frozen while fine-tuning (the classic
    "train the new head, then unfreeze the top block at a lower lr" recipe)."""

    probe_epochs: int = field(default=1, metadata=bounds(ge=1))  # epochs of the SGD probe before fine-tuning
    ft_lr: float | None = field(default=None, metadata=bounds(gt=0.0))  # the fine-tuning lr (None: optim.lr / 10)
    ft_depth: int = field(default=0, metadata=bounds(ge=0))  # groups kept frozen while fine-tuning
    probe: ProbeSolver = "auto"
    probe_l2: list[float] | None = None
    # filled by resolve: ft_lr / lr, and 0 probe epochs once the head was fitted by L-BFGS before training
    ft_scale: float = field(default=0.1, metadata={"derived": True})

    def resolve(self, num_groups: int, lr: float) -> LinearProbeThenFinetune:
        if self.ft_depth > num_groups:
            raise UserError(f"freeze.ft_depth: {self.ft_depth} is more than the backbone's {num_groups} layer groups "
                            f"(allowed: 0..{num_groups}; see tlr inspect)")
        return replace(self, ft_scale=(self.ft_lr / lr) if self.ft_lr else 0.1)

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        if epoch < self.probe_epochs:
            return prefix_plan(num_groups, num_groups)
        k = self.ft_depth
        return FreezePlan((False,) * k + (True,) * (num_groups - k), (self.ft_scale,) * num_groups, self.ft_scale)

    def frozen_prefix(self, num_groups: int) -> int:
        return self.ft_depth

    def probe_phase(self) -> ProbePhase:
        # after the L-BFGS probe, fine-tuning starts at epoch 0
        return ProbePhase(self.probe, tuple(self.probe_l2) if self.probe_l2 else None, replace(self, probe_epochs=0))


@register("llrd")
@dataclass(frozen=True)
class LayerwiseDecay:
    """Layer-wise lr decay: group i of n trains at lr * decay^(n - i); the head at lr."""

    decay: float = field(default=0.75, metadata=bounds(gt=0.0, le=1.0))  # group i of n trains at lr * decay^(n - i)

    def resolve(self, num_groups: int, lr: float) -> LayerwiseDecay:
        return self

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, tuple(self.decay ** (num_groups - i) for i in range(num_groups)))


@register("bitfit")
@dataclass(frozen=True)
class BitFit:
    """BitFit (Ben Zaken et al. 2022): only biases (and, by default, norm-layer parameters) + the head."""

    bitfit_norms: bool = True  # norm-layer parameters train too

    def resolve(self, num_groups: int, lr: float) -> BitFit:
        return self

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, (1.0,) * num_groups,
                          params="bias_norm" if self.bitfit_norms else "bias")


@register("auto_rgn")
@dataclass(frozen=True)
class AutoRGN:
    """Auto-RGN (Lee et al. 2023, "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts", Sec. 5):
    everything trains, and at every step each layer group's lr is scaled by its relative gradient norm
    ||grad|| / ||weights||, divided by the largest over the groups (so the group that most wants to move moves at
    the full lr and the others proportionally less); the head keeps the full lr. The mean scale of each group over
    the run is reported as `rgn/<group>`: which depth the data asked to tune."""

    def resolve(self, num_groups: int, lr: float) -> AutoRGN:
        return self

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, (1.0,) * num_groups)

    def lr_multipliers(self, groups: list[Any]) -> list[float]:
        """Per layer group: RGN / max RGN, from the gradients of the current step (groups without any: 0)."""
        import torch

        rgn = []
        for g in groups:
            params = [p for p in g.params.values() if p.requires_grad and p.grad is not None]
            if not params:
                rgn.append(0.0)
                continue
            with torch.no_grad():  # a read of the step's state, not part of any graph
                grad = torch.nn.utils.get_total_norm([p.grad for p in params])
                weight = torch.nn.utils.get_total_norm([p.detach() for p in params])
            rgn.append(float(grad / weight.clamp_min(1e-12)))
        top = max(rgn, default=0.0)
        return [r / top if top > 0 else 0.0 for r in rgn]


@register("surgical")
@dataclass(frozen=True)
class Surgical:
    """Surgical fine-tuning (Lee et al. 2023): only `span` consecutive groups from `group` train, plus the head
    (negative `group`: counted from the top). A span covers a model "block" made of several groups."""

    group: int | None = None  # the first group that trains (negative: from the top)
    span: int = field(default=1, metadata=bounds(ge=1))  # how many consecutive groups train

    def resolve(self, num_groups: int, lr: float) -> Surgical:
        if self.group is None:
            raise UserError("freeze.group: strategy surgical needs the index of the group to train (see tlr inspect)")
        if not -num_groups <= self.group < num_groups:
            raise UserError(f"freeze.group: {self.group} is out of range for the backbone's {num_groups} layer "
                            f"groups (allowed: 0..{num_groups - 1}, or -1..-{num_groups} from the top)")
        first = self.group % num_groups
        if first + self.span > num_groups:
            raise UserError(f"freeze.span: {self.span} groups from group {first} run past the backbone's "
                            f"{num_groups} layer groups")
        return Surgical(first, self.span)

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        first = self.group or 0
        return FreezePlan(tuple(first <= i < first + self.span for i in range(num_groups)), (1.0,) * num_groups)

    def frozen_prefix(self, num_groups: int) -> int:
        return self.group or 0


@dataclass(frozen=True)
class LoraOptions:
    rank: int = field(default=8, metadata=bounds(ge=1))  # the adapters' rank r
    alpha: float = field(default=16.0, metadata=bounds(gt=0.0))  # scaling: updates are multiplied by alpha / r
    dropout: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))  # dropout on the adapters' input
    # module names or name suffixes; None: attention query/value for HF encoders, Linear + 1x1 convs for timm
    targets: list[str] | None = None
    # write export/backbone.pth with the adapters merged into the base weights at the end of the run
    merge: bool = False


@register("lora")
@dataclass(frozen=True)
class Lora:
    """LoRA adapters (via peft) on the chosen modules; every base weight stays frozen."""

    lora: LoraOptions = field(default_factory=LoraOptions)

    def resolve(self, num_groups: int, lr: float) -> Lora:
        return self

    def prepare(self, backbone: object) -> None:
        o = self.lora
        add_lora(backbone, o.rank, o.alpha, o.dropout, tuple(o.targets) if o.targets else None)

    def plan(self, num_groups: int, epoch: int) -> FreezePlan:
        return FreezePlan((True,) * num_groups, (1.0,) * num_groups, params="lora")

    def after_run(self, backbone: Any, head: torch.nn.Module, folder: Path) -> None:
        """`lora.merge`: fold the adapters into the (tested) model and save plain state dicts in `folder/export`:
        `backbone.pth` loads back with `backbone.weights: <path>`, `head.pth` into the head."""
        if not self.lora.merge:
            return
        import torch

        out = folder / "export"
        out.mkdir(parents=True, exist_ok=True)
        merge_lora(backbone.model)
        torch.save(backbone.model.state_dict(), out / "backbone.pth")
        torch.save(head.state_dict(), out / "head.pth")
