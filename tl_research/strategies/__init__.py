"""Freezing strategies: registered options dataclasses that plan which layer groups train (see plan.py).

May import: the base, backbones. Not config (config reads this registry)."""

from tl_research.strategies import catalogue  # noqa: F401  (registers the strategies)
from tl_research.strategies.freeze_plan import (
    STRATEGIES,
    FreezePlan,
    ProbePhase,
    Strategy,
    after_run,
    frozen_prefix,
    prefix_plan,
    prepare_backbone,
    probe_phase,
    register,
    resolved,
)

__all__ = ["STRATEGIES", "FreezePlan", "ProbePhase", "Strategy", "after_run", "frozen_prefix", "prefix_plan",
           "prepare_backbone", "probe_phase", "register", "resolved"]
