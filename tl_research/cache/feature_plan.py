"""The feature decisions of a run, taken once: whether the data step serves cached outputs of the frozen prefix,
and, for a strategy with a linear-probe phase, whether and how that probe is fitted in closed form (the converged
L-BFGS probe on features of the whole frozen backbone).

A depth is decided once even when both ask for it (a linear probe: the data's frozen prefix is the whole
backbone), so a run reads or computes each set of cached rows once.
"""

from __future__ import annotations

from dataclasses import dataclass

from tl_research.backbones.base import Backbone
from tl_research.cache.features import CacheDecision, decide
from tl_research.config import Experiment
from tl_research.errors import UserError
from tl_research.runtime.distributed import world_size
from tl_research.strategies import ProbePhase


@dataclass
class FeaturePlan:
    data: CacheDecision  # the data step's frozen prefix (k = the strategy's frozen_prefix)
    probe: CacheDecision | None  # the whole backbone's features for the probe phase (None: no such phase)
    solver: str  # the probe phase's solver: lbfgs | sgd | none (no probe phase)


def plan_features(exp: Experiment, backbone: Backbone, k: int, phase: ProbePhase | None,
                  raw_inputs: str | None = None) -> FeaturePlan:
    """Decide the cache for the data (depth k) and for a probe phase (the whole backbone), each depth once;
    `raw_inputs`: why training must see raw inputs (the probe phase may still fit on cached features)."""
    n = len(backbone.layer_groups())
    forced = phase is not None and phase.solver == "lbfgs"
    # a whole-run probe (k = n) reads the probe's features as its data: what it forces, the data step uses
    data = decide(exp, backbone, k, required=forced and k == n)
    if raw_inputs is not None and data.use:
        data = CacheDecision(False, k, raw_inputs)
    if phase is None:
        return FeaturePlan(data, None, "none")
    probe = data if k == n and data.use else decide(exp, backbone, n, required=forced)
    solver = probe_solver(exp, phase, probe.use)
    if solver == "lbfgs" and not probe.use:
        raise UserError(f"freeze.probe: lbfgs fits the head on features computed once, but here {probe.reason}; "
                        f"use freeze.probe=sgd")
    return FeaturePlan(data, probe, solver)


def probe_solver(exp: Experiment, phase: ProbePhase, cached: bool) -> str:
    """`lbfgs` or `sgd` for a probe phase (auto: L-BFGS when the whole backbone's features are cached)."""
    linear = exp.head.type == "linear" and exp.backbone.layers != "weighted"
    if phase.solver == "lbfgs" and not linear:
        raise UserError("freeze.probe: lbfgs fits a linear head on fixed features; with head.type=mlp or "
                        "backbone.layers=weighted (a learned mix) use freeze.probe=sgd")
    if exp.optim.class_weights != "none":
        if phase.solver == "lbfgs":
            raise UserError("freeze.probe: the lbfgs probe fits an unweighted logistic regression; with "
                            "optim.class_weights=balanced use freeze.probe=sgd")
        linear = False
    solver = ("lbfgs" if cached and linear else "sgd") if phase.solver == "auto" else phase.solver
    if solver == "lbfgs" and world_size(exp.trainer) > 1:
        raise UserError("freeze.probe: the L-BFGS probe is one full-batch solve on one process (seconds); with "
                        "trainer.devices x trainer.num_nodes > 1 use one device, or freeze.probe=sgd")
    return solver
