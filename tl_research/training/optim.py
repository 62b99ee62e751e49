"""The optimizer's options (the `optim:` and `freeze.l2sp` sections of an experiment, declared here next to the
code that uses them) and the learning-rate schedules of a run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from tl_research.schema import applies_when, bounds

# the schedules that start with the linear warm-up (one_cycle and slanted_triangular have their own ramp)
WARMED = ("cosine", "constant", "plateau")


@dataclass
class OptimConfig:
    # the optimizer
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = field(default=1e-3, metadata=bounds(gt=0.0))  # the base learning rate
    weight_decay: float = field(default=0.01, metadata=bounds(ge=0.0))  # decoupled (adamw) or L2 (sgd)
    # sgd's momentum
    momentum: float = field(default=0.9, metadata=applies_when("name", ("sgd",), bounds(ge=0.0, lt=1.0)))
    # the head's lr is lr * head_lr_mult
    head_lr_mult: float = field(default=1.0, metadata=bounds(gt=0.0))
    # cosine / constant after warm-up; one_cycle; slanted_triangular (ULMFiT's STLR); plateau: cut all lrs by
    # plateau_factor when val/acc stalls
    schedule: Literal["cosine", "constant", "one_cycle", "slanted_triangular", "plateau"] = "cosine"
    # linear warm-up length in epochs (stepped per batch)
    warmup_epochs: float = field(default=0.0, metadata=applies_when("schedule", WARMED, bounds(ge=0.0)))
    # plateau schedule: epochs without improvement before a cut, and the cut
    plateau_patience: int = field(default=1, metadata=applies_when("schedule", ("plateau",), bounds(ge=0)))
    plateau_factor: float = field(default=0.5, metadata=applies_when("schedule", ("plateau",), bounds(gt=0.0, lt=1.0)))
    label_smoothing: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))  # cross-entropy label smoothing
    # balanced: weight each class's loss by N / (classes x its training count), for imbalanced data
    class_weights: Literal["none", "balanced"] = "none"


@dataclass
class L2SPConfig:
    # alpha * ||theta - theta_0||^2 over trainable backbone weights, beta * ||theta||^2 over the head
    alpha: float = field(default=0.0, metadata=bounds(ge=0.0))
    beta: float = field(default=0.0, metadata=bounds(ge=0.0))


def schedule_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """LR factor at `step` for every schedule that is a function of the step.

    cosine / constant / plateau: linear warm-up, then cosine decay to 0, or flat (plateau cuts come on top).
    one_cycle: cosine ramp from 1/25 to 1 over the first 30 % of steps, then cosine down to 1/250000.
    slanted_triangular: ULMFiT's STLR (Howard & Ruder 2018, eq. 3; cut_frac 0.1, ratio 32): a linear rise from 1/32
    to 1 over the first 10 % of steps, then a linear fall back to 1/32.
    """
    if schedule == "slanted_triangular":
        cut = max(1, math.floor(0.1 * total_steps))
        p = step / cut if step < cut else max(0.0, 1 - (step - cut) / max(1, total_steps - cut))
        return (1 + p * 31) / 32
    if schedule == "one_cycle":
        peak = max(1, int(0.3 * total_steps))
        if step < peak:
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * step / peak))
        progress = min(1.0, (step - peak) / max(1, total_steps - peak))
        return 1 / 250000 + (1 - 1 / 250000) * 0.5 * (1 + math.cos(math.pi * progress))
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule in ("constant", "plateau"):
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
